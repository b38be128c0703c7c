"""The report of a run, as a library: its plots redrawn into <run>/plots/ and <run>/report.html written.

    python -m kit report --config configs/dogs-vs-cats-redux.yaml [--run NAME]   (kit/report/report.py)
    build_report(run_dir)                                                     (the train stage, at its end)

Reads the run folder through kit.report.run_files (metrics, learning rates, validation predictions,
classes, summary, config and versions), redraws every plot (kit/report/plots.py) into the run's plots
folder, replaced as a whole through a temporary name, and writes report.html beside it, linking the
PNGs relatively. A run needs only its metrics to be reported on: any other file it lacks (an older
run, one interrupted before the end) is named in the report instead of failing it.
"""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kit.fsutil import atomic_path, write_text_atomic
from kit.model.metrics import log_loss
from kit.report import plots
from kit.report.run_files import RunFiles, best_epoch, load_run_files
from kit.runs import RunDir

GALLERY_N = 8  # images in the galleries that are not per class
CLASS_GALLERY_N = 4  # images per true class in the per-class galleries
GALLERY_SEED = 0  # the random galleries show the same images every time the report is rebuilt
STAGE_NAMES = {1: "head", 2: "fine-tune"}
KEY_SETTINGS = [
    ("backbone", "model.backbone"), ("weights", "model.weights"), ("head dropout", "model.dropout"),
    ("image size", "data.image_size"), ("batch size", "data.batch_size"), ("augmentation", "augment.enabled"),
    ("head trained on (stage 1)", "train.head"), ("head epochs (stage 1)", "train.head_epochs"),
    ("head lr", "train.head_lr"), ("fine-tune epochs (stage 2)", "train.finetune_epochs"),
    ("fine-tune lr (top group)", "train.lr"), ("group lr ratios", "train.group_lr_ratios"),
    ("cycle epochs", "train.cycle_epochs"), ("cycle mult", "train.cycle_mult"),
    ("warmup epochs", "train.warmup_epochs"), ("weight decay", "train.weight_decay"),
    ("label smoothing", "train.label_smoothing"), ("TTA views", "submit.tta"), ("clip", "submit.clip"),
]


def build_report(run_dir: RunDir | str | Path) -> Path:
    """Redraw <run>/plots/ and write <run>/report.html from whatever the run folder holds; return its path."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    files = load_run_files(run_dir)
    with atomic_path(run_dir.plots) as tmp:
        tmp.mkdir()
        drawn = draw_plots(files, tmp)
    return write_text_atomic(run_dir.report, render_html(files, drawn))


# ---- plots ------------------------------------------------------------------------------------------

@dataclass
class Drawn:
    """One plot of the report: its file under plots/ if it was drawn, else why not."""
    title: str
    filename: str | None
    note: str = ""


def draw_plots(files: RunFiles, folder: Path) -> list[Drawn]:
    drawn = []
    head = plots.head_epochs(files.metrics) if files.metrics is not None else 0
    if files.lr is not None and len(files.lr):
        drawn.append(Drawn("Learning rate", plots.plot_lr(files.lr, folder / "lr.png", head=head).name))
    else:
        drawn.append(Drawn("Learning rate", None, "no lr.csv rows in this run"))
    if files.metrics is not None and len(files.metrics):
        path = plots.plot_losses(files.metrics, folder / "losses.png", best_epoch=best_epoch(files))
        drawn.append(Drawn("Loss and accuracy", path.name))
    else:
        drawn.append(Drawn("Loss and accuracy", None, "metrics.csv has no epochs"))
    table = files.predictions
    if table is None or not len(table):
        drawn.append(Drawn("Confusion matrix and galleries", None, "no validation predictions in this run"))
        return drawn
    drawn.append(Drawn("Confusion matrix", plots.plot_confusion(table, files.classes, folder / "confusion.png").name))
    for kind, (title, per_class) in plots.GALLERIES.items():
        n = CLASS_GALLERY_N if per_class else GALLERY_N
        path = plots.plot_gallery(table, kind, folder / f"gallery_{kind}.png", n=n, seed=GALLERY_SEED)
        drawn.append(Drawn(title, path.name))
    return drawn


# ---- HTML -------------------------------------------------------------------------------------------

def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


def _setting(config: dict, dotted: str):
    """config.yaml's value for `section.key`, or "(not recorded)" (older runs, missing config)."""
    section, _, key = dotted.partition(".")
    values = config.get(section)
    return values.get(key, "(not recorded)") if isinstance(values, dict) else "(not recorded)"


def _table(rows: list[tuple], header: tuple | None = None, highlight: int | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(("<tr class=\"best\">" if i == highlight else "<tr>")
                   + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table>{head}{body}</table>"


def settings_rows(config: dict) -> list[tuple]:
    """The key settings, plus each layer group's fine-tuning rate (train.lr x its ratio)."""
    rows = [(label, _setting(config, key)) for label, key in KEY_SETTINGS]
    lr, ratios = _setting(config, "train.lr"), _setting(config, "train.group_lr_ratios")
    if isinstance(lr, (int, float)) and isinstance(ratios, list):
        after = [key for _, key in KEY_SETTINGS].index("train.group_lr_ratios") + 1
        rows.insert(after, ("group lrs, first..last", [lr * r for r in ratios if isinstance(r, (int, float))]))
    return rows


def tta_scores(files: RunFiles) -> dict:
    """Validation log loss and accuracy of val_predictions.csv (TTA views averaged), unclipped and clipped."""
    table, classes = files.predictions, files.classes
    if table is None or not len(table):
        return {}
    probs = table["prob"].to_numpy(float) if len(classes) == 2 else \
        table[[f"prob_{c}" for c in classes]].to_numpy(float)
    labels = table["label"].to_numpy(int)
    clip = _setting(files.config, "submit.clip")
    scores = {"val log loss with TTA (unclipped)": log_loss(labels, probs)}
    if isinstance(clip, (int, float)) and 0 < clip < 0.5:
        scores[f"val log loss with TTA, clipped at {clip:g} (submit.clip, the floor)"] = log_loss(labels, probs, clip)
    summary = files.summary or {}
    if summary.get("val_log_loss_calibrated") is not None:  # kit/model/calibrate.py's choice, out of fold
        method = (summary.get("calibration") or {}).get("method", "?")
        scores[f"val log loss with TTA, calibrated ({method}), out of fold (what submit estimates)"] = \
            summary["val_log_loss_calibrated"]
    correct = int(table["correct"].sum())
    scores["val accuracy with TTA"] = f"{correct / len(table):.2%} ({correct} right, {len(table) - correct} wrong)"
    return scores


def summary_rows(files: RunFiles) -> list[tuple]:
    s, best = files.summary, best_epoch(files)
    epochs = len(files.metrics) if files.metrics is not None else None
    rows = [("run", files.run_dir.name), ("classes", files.classes or "(unknown)"),
            ("best epoch", f"{best} of {epochs}" if best else "(unknown)")]
    best_row = None
    if files.metrics is not None and best is not None:
        match = files.metrics[files.metrics["epoch"] == best - 1]
        best_row = match.iloc[0] if len(match) else None
    val_loss = s.get("val_log_loss", best_row["val_log_loss"] if best_row is not None else None)
    rows.append(("val log loss at the best epoch (no TTA, unclipped)", val_loss))
    if best_row is not None and "val_accuracy" in best_row:
        rows.append(("val accuracy at the best epoch", f"{best_row['val_accuracy']:.2%}"))
    rows += list(tta_scores(files).items())
    for key, label in (("train_images", "training images"), ("val_images", "validation images"),
                       ("seconds", "training seconds")):
        if key in s:
            rows.append((label, s[key]))
    refit = files.run_dir.refit.summary()
    if refit:  # train.refit_all
        rows.append(("refit on every labelled image (what submit predicts the test set with)",
                     f"{refit.get('train_images')} images, {refit.get('seconds')} s, in {files.run_dir.refit.path}: "
                     "no held-out score of its own (the scores above are the split model's)"))
    return rows


def submission_rows(run_dir: RunDir) -> list[tuple]:
    """The newest submit's validation scores (runs/<run>/submit.json): out of fold, each calibration method,
    each snapshot alone and each average, each member; [] before the run is submitted."""
    try:
        meta = json.loads(run_dir.submit_scores.read_text())
    except (OSError, ValueError):
        return []
    low, high = (meta.get("val_log_loss_interval") or [None, None])[:2]
    cal = meta.get("calibration") or {}
    rows = [("submission", meta.get("submission")),
            ("val log loss, out of fold (what the submission is estimated to score)", meta.get("val_log_loss")),
            ("its 95% bootstrap interval", f"{low:.4f}-{high:.4f}" if low is not None else None),
            ("calibration chosen", cal.get("method"))]
    rows += [(f"calibration {method}, out of fold", loss) for method, loss in (cal.get("out_of_fold") or {}).items()]
    weighting = meta.get("member_weighting") or {}
    rows += [(f"members averaged: {name}{' (chosen)' if name == weighting.get('name') else ''}", loss)
             for name, loss in (weighting.get("val_log_loss") or {}).items()]
    for member in meta.get("members") or []:
        snaps, name = member.get("snapshots") or {}, Path(member.get("run", "")).name
        rows += [(f"{name}: snapshot {epoch}, alone", loss) for epoch, loss in (snaps.get("each") or {}).items()]
        rows += [(f"{name}: snapshots {cand} averaged", loss) for cand, loss in (snaps.get("val_log_loss") or {}).items()]
        rows.append((f"{name}: chosen ({snaps.get('name')}), validation log loss", member.get("val_log_loss")))
        if member.get("refit"):
            rows.append((f"{name}: test predicted by its refit", f"{member['refit'].get('train_images')} images, "
                         "no held-out score of its own"))
    return rows


def metrics_rows(metrics: pd.DataFrame) -> tuple[tuple, list[tuple]]:
    columns = [c for c in ("loss", "accuracy", "val_log_loss", "val_accuracy", "lr") if c in metrics.columns]
    header = ("epoch", "stage", *columns)
    rows = []
    for _, m in metrics.iterrows():
        stage = STAGE_NAMES.get(int(m["stage"]), m["stage"]) if "stage" in m and pd.notna(m["stage"]) else ""
        rows.append((int(m["epoch"]) + 1, stage, *(float(m[c]) for c in columns)))
    return header, rows


def per_class_rows(files: RunFiles) -> list[tuple]:
    table = files.predictions
    rows = []
    for label, name in enumerate(files.classes):
        part = table[table["label"] == label]
        right = int(part["correct"].sum())
        rows.append((name, len(part), right, len(part) - right,
                     f"{right / len(part):.2%}" if len(part) else "", int((table["pred"] == label).sum())))
    return rows


def _plot_html(item: Drawn, plots_dir: str) -> str:
    if item.filename is None:
        return f"<h3>{_esc(item.title)}</h3><p class=\"missing\">Not drawn: {_esc(item.note)}.</p>"
    src = _esc(f"{plots_dir}/{item.filename}")
    return (f"<figure><h3>{_esc(item.title)}</h3><a href=\"{src}\"><img src=\"{src}\" alt=\"{_esc(item.title)}\">"
            f"</a></figure>")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}tr.best{background:#e4f5e4;font-weight:bold}img{max-width:100%}
.missing{color:#a33}pre{background:#f7f7f7;padding:1em;overflow:auto}figure{margin:1em 0}"""


def render_html(files: RunFiles, drawn: list[Drawn]) -> str:
    name = _esc(files.run_dir.name)
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Run {name}</title>"
             f"<style>{CSS}</style></head><body><h1>Run {name}</h1>",
             f"<p>Report written {_esc(time.strftime('%Y-%m-%d %H:%M:%S'))}; epochs counted from 1.</p>"]
    if files.notes:
        parts.append("<h2>Missing from this run</h2><ul class=\"missing\">"
                     + "".join(f"<li>{_esc(n)}</li>" for n in files.notes) + "</ul>")
    parts += ["<h2>Summary</h2>", _table(summary_rows(files))]
    submitted = submission_rows(files.run_dir)
    if submitted:
        parts += ["<h2>Newest submission: validation scores (make submit)</h2>", _table(submitted)]
    parts += ["<h2>Key settings</h2>", _table(settings_rows(files.config))]
    plots_dir = files.run_dir.plots.name  # report.html sits beside plots/: links are relative
    parts.append("<h2>Plots</h2>" + "".join(_plot_html(item, plots_dir) for item in drawn))
    if files.metrics is not None:
        header, rows = metrics_rows(files.metrics)
        best = best_epoch(files)
        highlight = next((i for i, r in enumerate(rows) if r[0] == best), None)
        parts += ["<h2>Metrics per epoch</h2>", _table(rows, header, highlight)]
    if files.predictions is not None:
        parts += ["<h2>Validation per class (TTA)</h2>",
                  _table(per_class_rows(files), ("class", "images", "right", "wrong", "accuracy", "predicted as"))]
    parts.append(f"<h2>Full resolved config ({_esc(files.run_dir.config_file.name)})</h2>"
                 + (f"<pre>{_esc(files.config_text)}</pre>" if files.config_text else "<p class=\"missing\">none</p>"))
    if files.versions_text:
        parts.append(f"<h2>Library versions</h2><pre>{_esc(files.versions_text)}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
