"""A training run's folder, read once for the report: what it holds and what it lacks.

    python -m kit report --run NAME      (kit/report/html.py reads the run through this)
    files = load_run_files(RunDir("runs/<run>"))   # files.metrics, files.predictions, ... and files.notes

Every file but metrics.csv may be missing or broken (an older run, one interrupted before the end):
that becomes a line in `notes`, which the report shows, instead of an error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from kit.errors import KitError
from kit.report.tables import prediction_table
from kit.runs import RunDir


@dataclass
class RunFiles:
    """What a run folder holds, read once; `notes` says what is missing or could not be read."""
    run_dir: RunDir
    metrics: pd.DataFrame | None = None
    lr: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None  # a tables.prediction_table, paths resolved
    classes: list[str] | None = None
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    config_text: str | None = None
    versions_text: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_csv(path: Path, required: list[str], notes: list[str], missing_means: str,
              numbers: bool = False) -> pd.DataFrame | None:
    """The CSV at `path` with the `required` columns, else None and a note; `numbers`: every column numeric
    and the first required one (epoch, step) never empty, as the train stage writes them."""
    if not path.is_file():
        notes.append(f"{path.name} is missing: {missing_means}")
        return None
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, OSError) as error:  # pandas' ParserError and EmptyDataError too
        notes.append(f"{path.name} could not be read ({type(error).__name__}): {missing_means}")
        return None
    absent = [c for c in required if c not in frame.columns]
    if absent:
        notes.append(f"{path.name} lacks columns {', '.join(absent)}: {missing_means}")
        return None
    if numbers:
        for column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column][values.isna() & frame[column].notna()]
            if len(bad):
                notes.append(f"{path.name} has values that are not numbers (column {column}, e.g. "
                             f"{str(bad.iloc[0])[:40]!r}): {missing_means}")
                return None
            frame[column] = values
        if frame[required[0]].isna().any():
            notes.append(f"{path.name} has rows without a {required[0]}: {missing_means}")
            return None
    return frame


def _read_json(path: Path, notes: list[str], kind: type, what: str):
    """The JSON value at `path` if it is a `kind` (dict, list), else None and a note."""
    if not path.is_file():
        notes.append(f"{path.name} is missing")
        return None
    try:
        value = json.loads(path.read_text())
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        notes.append(f"{path.name} is not valid JSON")
        return None
    if not isinstance(value, kind):
        notes.append(f"{path.name} is not {what}")
        return None
    return value


def _resolve_paths(frame: pd.DataFrame, run_dir: RunDir) -> pd.Series:
    """Absolute paths as written; a relative one that does not exist from here is tried from the run folder."""
    def resolve(text: str) -> str:
        path = Path(text)
        return str(run_dir.path / path) if not path.is_absolute() and not path.exists() else text
    return frame["path"].astype(str).map(resolve)


def _classes(files: RunFiles, raw_predictions: pd.DataFrame | None) -> list[str] | None:
    classes = _read_json(files.run_dir.classes_file, files.notes, list, "a list of class names")
    if not classes and isinstance(files.summary.get("classes"), list):
        classes = files.summary["classes"]
    if not classes and raw_predictions is not None and "class_name" in raw_predictions.columns:
        try:
            pairs = raw_predictions[["label", "class_name"]].drop_duplicates().sort_values("label")
        except TypeError:  # labels of mixed types: no order to take the names in
            pairs = raw_predictions.iloc[:0]
        classes = list(pairs["class_name"].astype(str))
    if classes and len(classes) < 2:
        files.notes.append(f"the run names fewer than two classes ({classes}): no confusion matrix")
        return None
    return [str(c) for c in classes] if classes else None


def load_run_files(run_dir: RunDir | str | Path) -> RunFiles:
    """Every file of the run folder the report uses, read once; what is missing or broken goes to `notes`."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    files = RunFiles(run_dir)
    notes = files.notes
    files.metrics = _read_csv(run_dir.metrics, ["epoch", "val_log_loss"], notes, "no loss plot or metrics",
                              numbers=True)
    if files.metrics is not None:
        files.metrics = files.metrics.sort_values("epoch", kind="stable").reset_index(drop=True)
    files.lr = _read_csv(run_dir.lr, ["step", "epoch", "lr"], notes, "no learning-rate plot", numbers=True)
    files.summary = _read_json(run_dir.summary_file, notes, dict, "a JSON object") or {}
    config_name = run_dir.config_file.name
    if run_dir.config_file.is_file():
        files.config_text = run_dir.config_file.read_text(errors="replace")
        try:
            loaded = yaml.safe_load(files.config_text)
        except yaml.YAMLError:
            loaded = None
            notes.append(f"{config_name} is not valid YAML: the settings below are unknown")
        files.config = loaded if isinstance(loaded, dict) else {}
    else:
        notes.append(f"{config_name} is missing: the settings below are unknown")
    if run_dir.versions_file.is_file():
        files.versions_text = run_dir.versions_file.read_text(errors="replace")
    raw = _read_csv(run_dir.val_predictions, ["path", "label"], notes, "no confusion matrix, galleries or TTA scores")
    files.classes = _classes(files, raw)
    if raw is not None and files.classes:
        try:
            table = prediction_table(raw, files.classes)
            table["path"] = _resolve_paths(table, run_dir)
            files.predictions = table
        except (KitError, ValueError) as error:
            notes.append(f"{run_dir.val_predictions.name}: {error}")
    elif raw is not None:
        notes.append(f"{run_dir.classes_file.name} is missing and {run_dir.val_predictions.name} names no classes: "
                     "no confusion matrix")
    return files


def best_epoch(files: RunFiles) -> int | None:
    """The best epoch, counted from 1: summary.json's, else the lowest val_log_loss in metrics.csv."""
    recorded = files.summary.get("best_epoch")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    if files.metrics is not None and files.metrics["val_log_loss"].notna().any():
        return int(files.metrics.loc[files.metrics["val_log_loss"].idxmin(), "epoch"]) + 1
    return None
