"""The experiment ledger: one row per submission in `submissions/ledger.csv`, appended, never rewritten.

    make submit           # appends the row (python -m kit submit)
    make upload           # fills its Kaggle message and submission ref (python -m kit upload)

A Kaggler's question after a week is which run gave the best leaderboard score and whether the
validation score predicts it: the ledger joins the two. Each row holds the file, its sha256, the run,
the git commit, a digest of the run's config and the keys where it differs from the competition's
config file (configs/*.yaml with the same competition.slug), the validation log loss raw and as
submitted, the calibration, snapshot and TTA choices, and Kaggle's columns (empty until an upload).

A new row is one `write` of one line on a file opened for appending, so a crash never leaves half a
ledger; the file is created through a temporary name. Filling in Kaggle's columns rewrites the file
through a temporary name and a rename, every other row byte for byte. A ledger that no longer reads
as one (edited by hand, truncated) is reported and left alone: a new one is started beside it
(ledger-2.csv, ...), never over it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path

from kit.config import Config, config_dict, load_config
from kit.fsutil import atomic_path

LEDGER = "ledger.csv"
COLUMNS = ["time", "file", "sha256", "run", "git_commit", "config_digest", "config_changes", "val_log_loss_raw",
           "val_log_loss", "val_log_loss_interval", "calibration", "snapshots", "tta", "members", "refit",
           "report", "message", "kaggle_ref", "kaggle_status", "public_score", "private_score"]
CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
UNCOMPARED = ("paths", "name")  # where files go says nothing about the model
UNCOMPARED_KEYS = ("train.run_name", "train.plan")  # nor do a run's name and its printed plan


def ledger_path(folder: Path) -> Path:
    """The ledger to append to: ledger.csv, or the first of ledger-2.csv, ... when the ones before it are
    unreadable (each reported, none touched)."""
    for n in range(1, 1000):
        path = folder / (LEDGER if n == 1 else f"ledger-{n}.csv")
        problem = parse(path)[1]
        if problem is None:
            return path
        print(f"submit: warning: {path} {problem}; it is left as it is and the ledger continues in "
              f"{folder / f'ledger-{n + 1}.csv'}")
    raise RuntimeError(f"{folder} holds 999 unreadable ledgers")  # pragma: no cover


def parse(path: Path) -> tuple[list[list[str]], str | None]:
    """(the ledger's rows, header first; why it is not a ledger kit can append to, or None). A missing file is
    an empty ledger."""
    if not path.exists():
        return [], None
    try:
        text = path.read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return [], f"cannot be read ({type(error).__name__})"
    if not rows or rows[0] != COLUMNS:
        return [], "does not start with the ledger's header line"
    if not text.endswith("\n"):
        return [], "does not end with a complete line"
    bad = next((i for i, row in enumerate(rows[1:], start=2) if len(row) != len(COLUMNS)), None)
    if bad is not None:
        return [], f"has {len(rows[bad - 1])} fields on line {bad}, not {len(COLUMNS)}"
    return rows, None


def _readable(folder: Path, newest_first: bool = False) -> list[tuple[Path, list[list[str]]]]:
    """(path, rows) of every readable ledger in `folder`, ledger.csv first (or last)."""
    paths = sorted(folder.glob("ledger*.csv"), key=_ledger_number, reverse=newest_first)
    return [(path, rows) for path in paths for rows, problem in [parse(path)] if problem is None and rows]


def read(folder: Path) -> list[dict]:
    """Every row of every readable ledger in `folder` (ledger.csv first), as dicts of strings."""
    return [dict(zip(COLUMNS, row)) for _, rows in _readable(folder) for row in rows[1:]]


def _ledger_number(path: Path) -> int:
    stem = path.stem.partition("-")[2]
    return int(stem) if stem.isdigit() else 1


def _line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def append(folder: Path, row: dict) -> Path:
    """Add `row` (keys of COLUMNS; the rest left empty) to the folder's ledger; return the ledger's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = ledger_path(folder)
    line = _line([_text(row.get(column)) for column in COLUMNS])
    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_text(_line(COLUMNS) + line, encoding="utf-8")
        return path
    with open(path, "a", encoding="utf-8") as ledger:  # one write: a crash leaves the line whole or absent
        ledger.write(line)
    return path


def update(folder: Path, sha256: str, values: dict) -> Path | None:
    """Set `values` (Kaggle's columns) on the newest row whose sha256 is `sha256`; None when no ledger has it."""
    return update_many(folder, {sha256: values}).get(sha256)


def update_many(folder: Path, changes: dict[str, dict]) -> dict[str, Path]:
    """Set each `changes[sha256]` on the newest row with that sha256, each ledger rewritten at most once
    (temporary name + rename); {sha256: the ledger it was found in}."""
    column, found = COLUMNS.index("sha256"), {}
    for path, rows in _readable(folder, newest_first=True):
        changed = False
        for i in range(len(rows) - 1, 0, -1):
            sha256 = rows[i][column]
            if sha256 in changes and sha256 not in found:
                for key, value in changes[sha256].items():
                    rows[i][COLUMNS.index(key)] = _text(value)
                found[sha256], changed = path, True
        if changed:
            with atomic_path(path) as tmp:
                tmp.write_text("".join(_line(r) for r in rows), encoding="utf-8")
    return found


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def config_changes(run_config: dict, slug: str) -> tuple[str, dict]:
    """(digest of the run's config, {dotted key: value} where it differs from the config file it was made from:
    configs/<its name>.yaml, the defaults for a run made without a file, else the first configs/*.yaml of the
    same competition)."""
    kept = {k: v for k, v in run_config.items() if k not in UNCOMPARED}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]
    reference = _competition_config(str(run_config.get("name") or ""), slug)
    base = {k: v for k, v in config_dict(reference).items() if k not in UNCOMPARED}
    flat_base = _flat(base)
    return digest, {key: value for key, value in _flat(kept).items()
                    if key not in UNCOMPARED_KEYS and flat_base.get(key, object()) != value}


def _competition_config(name: str, slug: str) -> Config:
    own = CONFIGS / f"{name}.yaml"
    if name == Config().name:  # made from the defaults and --set alone
        return Config()
    for path in ([own] if name and own.is_file() else []) + sorted(CONFIGS.glob("*.yaml")):
        try:
            cfg = load_config(path)
        except Exception:  # noqa: BLE001 — a broken config file elsewhere is not this submission's problem
            continue
        if cfg.competition.slug == slug:
            return cfg
    return Config()


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def submission_row(meta: dict, run_config: dict, report: Path | None = None) -> dict:
    """The ledger row of a submission from its metadata (what submit writes into <file>.json); `report`: the
    run's report.html."""
    digest, changes = config_changes(run_config, meta.get("competition", ""))
    snapshots, calibration = meta.get("snapshots") or {}, meta.get("calibration") or {}
    return {"time": meta.get("created") or datetime.now().isoformat(timespec="seconds"),
            "file": Path(str(meta.get("file", ""))).name, "sha256": meta.get("sha256"), "run": meta.get("run"),
            "git_commit": meta.get("git_commit"), "config_digest": digest, "config_changes": changes,
            "val_log_loss_raw": meta.get("val_log_loss_raw"), "val_log_loss": meta.get("val_log_loss"),
            "val_log_loss_interval": meta.get("val_log_loss_interval"),
            "calibration": {"method": calibration.get("method"), **(calibration.get("params") or {})},
            "snapshots": {"name": snapshots.get("name"), "epochs": snapshots.get("epochs")},
            "tta": meta.get("tta"), "members": len(meta.get("members") or []),
            "refit": bool(meta.get("refit")), "report": str(report.resolve()) if report else None}


def redraw(folder: Path, rows: list[dict] | None = None) -> None:
    """submissions/index.html from every ledger row (`rows` when read already; kit/report/ledger_page.py); a
    failure is a warning."""
    from kit.report.ledger_page import write_page

    try:
        write_page(folder, read(folder) if rows is None else rows)
    except Exception as error:  # noqa: BLE001 — the ledger matters more than its page
        print(f"warning: {folder / 'index.html'} could not be redrawn ({error}); `kit submissions` redraws it")
