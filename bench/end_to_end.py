"""End to end on the real mini competition: kit's two paths against the one-script reference.

    KIT_REAL_COMPETITION=...zip KIT_KERAS_WEIGHTS=.../keras/models .venv/bin/python bench/run.py --only end_to_end

Each path runs from the competition zip to a written submission, every command a subprocess whose
wall time and peak resident memory (ru_maxrss) are recorded; a path's memory is its largest command's.
All are scored the same way: their validation probabilities (TTA-averaged, unclipped) on the SAME
validation images (kit's split file), clipped to [0.005, 0.995], natural-log log loss.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.common import PYTHON, ROOT, bench_env, run_measured, tail

CONFIG = ROOT / "configs" / "dogs-vs-cats-redux.yaml"
CLIP = 0.005


def kit_overrides(base: Path) -> list[str]:
    """Every kit output under `base` (a temp dir), nothing in the project's own folders."""
    return [f"paths.data_dir={base / 'data'}", f"paths.cache_dir={base / 'cache'}", f"paths.runs_dir={base / 'runs'}",
            f"paths.submissions_dir={base / 'submissions'}", f"paths.submission={base / 'submission.csv'}",
            f"competition.kaggle_input={base / 'no-kaggle-input'}", "train.resume=false"]


def kit_command(stage: str, overrides: list[str], extra: list[str] = ()) -> list[str]:
    return [PYTHON, "-m", "kit", stage, "--config", str(CONFIG), *extra, "--set", " ".join(overrides)]


def run_commands(name: str, commands: list[tuple[str, list[str]]], logs: Path, keras_home: str,
                 timeout: float, extra_env: dict | None = None) -> dict:
    """Run a path's commands in order (`extra_env` added to their environment); stop at the first failure."""
    steps = {}
    for stage, cmd in commands:
        result = run_measured(cmd, logs / f"{name}.log", env={**bench_env(keras_home), **(extra_env or {})},
                              timeout=timeout)
        steps[stage] = result
        if result["returncode"] != 0:
            why = "timed out" if result["timed_out"] else f"exit {result['returncode']}"
            raise RuntimeError(f"{name}: {stage} failed ({why}): {tail(result['log'])}")
    return {"seconds": round(sum(s["seconds"] for s in steps.values()), 1),
            "peak_rss_mb": max(s["maxrss_mb"] for s in steps.values()),
            "steps": {k: {"seconds": v["seconds"], "maxrss_mb": v["maxrss_mb"]} for k, v in steps.items()}}


def kit_path(name: str, competition_zip: Path, work: Path, keras_home: str, overrides: list[str],
             timeout: float, extra_env: dict | None = None) -> dict:
    """`make download` (from the zip), `make train`, `make submit` with `overrides`, outputs under work/name."""
    base = work / name
    sets = kit_overrides(base) + overrides
    commands = [("download", kit_command("download", sets, ["--from", str(competition_zip)])),
                ("train", kit_command("train", sets)), ("submit", kit_command("submit", sets))]
    result = run_commands(name, commands, work / "logs", keras_home, timeout, extra_env)
    runs = [p for p in (base / "runs").iterdir() if (p / "val_predictions.csv").is_file()]
    if len(runs) != 1:
        raise RuntimeError(f"{name}: expected one finished run in {base / 'runs'}, found {len(runs)}")
    result.update(score(submitted_predictions(runs[0])), run=runs[0].name, base=str(base))
    summary = runs[0] / "summary.json"
    if summary.is_file():
        result["summary"] = json.loads(summary.read_text())
    return result


def submitted_predictions(run: Path) -> Path:
    """The validation probabilities the submission averaged (snapshots and members, before calibrating: submit
    keeps them in runs/<run>/submit.json), as a val_predictions-shaped CSV; the run's own when it has none."""
    scores = run / "submit.json"
    if not scores.is_file():
        return run / "val_predictions.csv"
    kept = json.loads(scores.read_text()).get("val_predictions")
    if not kept or not isinstance(kept["prob"][0], float):  # binary only: one P(dog) per image
        return run / "val_predictions.csv"
    out = run / "submitted_val_predictions.csv"
    pd.DataFrame(kept).to_csv(out, index=False)
    return out


def split_file(base: Path) -> Path:
    found = sorted((base / "data").glob("*/index/split-seed*-val*.csv"))
    if not found:
        raise RuntimeError(f"no split file under {base / 'data'}: run kit's data stage first")
    return found[0]


def reference_path(competition_zip: Path, split: Path, work: Path, keras_home: str, timeout: float) -> dict:
    out = work / "reference"
    cmd = [PYTHON, str(ROOT / "bench" / "reference.py"), "--zip", str(competition_zip), "--split", str(split),
           "--out", str(out), "--clip", str(CLIP)]
    result = run_commands("reference", [("reference", cmd)], work / "logs", keras_home, timeout)
    result.update(score(out / "val_predictions.csv"), summary=json.loads((out / "summary.json").read_text()))
    return result


def score(val_predictions: Path) -> dict:
    """Clipped log loss and accuracy of a val_predictions.csv (path, label, prob), keyed by train/<file>."""
    from kit.model.metrics import log_loss

    frame = pd.read_csv(val_predictions)
    keys = sorted("train/" + Path(p).name for p in frame["path"])
    return {"val_predictions": str(val_predictions),
            "val_log_loss": log_loss(frame["label"].to_numpy(), frame["prob"].to_numpy(), CLIP),
            "val_accuracy": float(((frame["prob"] > 0.5) == (frame["label"] > 0.5)).mean()),
            "val_images": len(frame), "val_keys": keys}


def per_image_losses(val_predictions: Path) -> pd.Series:
    """Each validation picture's clipped log loss, indexed by train/<file>."""
    import numpy as np

    frame = pd.read_csv(val_predictions)
    p = np.clip(frame["prob"].to_numpy(np.float64), CLIP, 1 - CLIP)
    y = frame["label"].to_numpy(np.float64)
    return pd.Series(-(y * np.log(p) + (1 - y) * np.log(1 - p)), index=["train/" + Path(q).name for q in frame["path"]])


def paired_difference(kit_csv: Path, reference_csv: Path, resamples: int = 5000, seed: int = 0) -> dict:
    """kit's minus the reference's log loss on the same pictures, with a paired bootstrap 95% interval.

    600 validation pictures leave log loss a few thousandths of noise; an interval that holds 0 means
    the two cannot be told apart on this split.
    """
    import numpy as np

    kit, ref = per_image_losses(kit_csv), per_image_losses(reference_csv)
    diff = (kit - ref.reindex(kit.index)).to_numpy()
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "images": len(diff)}


def attempt(fn, *args) -> dict:
    """One path's result, or {"error": ...}: a path that fails must not lose the others' numbers."""
    try:
        return fn(*args)
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        return {"error": f"{type(error).__name__}: {error}"[:1500]}


def run_all(competition_zip: Path, work: Path, keras_home: str, finetune: bool, timeout: float = 2400) -> dict:
    """Kit precompute path, the reference on kit's split, then (optionally) kit's default fine-tune path."""
    results = {"precompute": attempt(kit_path, "kit-precompute", competition_zip, work, keras_home,
                                     ["train.finetune_epochs=0"], timeout)}
    split = split_file(work / "kit-precompute")  # written by the data stage, even if training failed later
    results["reference"] = attempt(reference_path, competition_zip, split, work, keras_home, timeout)
    if finetune:
        results["finetune"] = attempt(kit_path, "kit-finetune", competition_zip, work, keras_home, [], timeout)
    done = {name: r for name, r in results.items() if "error" not in r}
    keys = {name: r.pop("val_keys") for name, r in done.items()}
    if "reference" in done:
        results["paired"] = {name: paired_difference(Path(done[name]["val_predictions"]),
                                                     Path(done["reference"]["val_predictions"]))
                             for name in ("precompute", "finetune") if name in done}
    results["same_validation_images"] = len({tuple(k) for k in keys.values()}) == 1
    results["split_file"] = split.name
    return results
