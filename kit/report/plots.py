"""Plots of a training run, each written as a PNG: learning rate, losses, confusion matrix, image galleries.

    python -m kit report --run NAME      # kit/report/html.py draws them all into runs/<run>/plots/

Every plot function takes plain data (frames read from the run folder; the validation predictions as a
kit.report.tables.prediction_table) and an output path, writes the
PNG through a temporary name (kit.fsutil.atomic_path) and returns the path. Figures are built with
matplotlib's object API (Figure + the Agg canvas), not pyplot: no global figure registry, no display
needed, nothing left open. Galleries are always written; one with no candidates says "none".
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from kit.errors import KitError
from kit.fsutil import atomic_path

DPI = 100
THUMB = 200  # gallery images are shrunk to at most this many pixels a side before drawing
CELL_W, CELL_H, HEADER_H = 1.9, 2.2, 0.4  # gallery cell (caption + image) and title band, inches
GALLERY_COLS = 4  # galleries that are not per class: rows of this many images
MAX_CLASS_ROWS = 10  # per-class galleries show at most this many classes (those with the strongest candidates)

GALLERIES = {
    # kind: (title, one row per true class)
    "random_correct": ("Random correct", False),
    "random_incorrect": ("Random incorrect", False),
    "confident_correct": ("Most confident correct, per true class", True),
    "confident_wrong": ("Most confident wrong, per true class", True),
    "uncertain": ("Most uncertain: lowest probability of the predicted class", False),
}


def _save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return out


def _mark_head_stage(ax, head_epochs: int) -> None:
    """Shade the head-only epochs [0, head_epochs] and draw the line where fine-tuning starts."""
    if head_epochs <= 0:
        return
    ax.axvspan(0, head_epochs, color="0.5", alpha=0.08, lw=0)
    ax.axvline(head_epochs, color="0.3", ls="--", lw=1)
    ax.text(head_epochs, 1.0, " fine-tune starts", transform=ax.get_xaxis_transform(), va="top",
            ha="left", fontsize=8, color="0.3")


def head_epochs(metrics: pd.DataFrame) -> int:
    """How many epochs were stage 1 (head only), from metrics.csv's `stage` column (0 if it has none)."""
    if "stage" not in metrics.columns:
        return 0
    return int((pd.to_numeric(metrics["stage"], errors="coerce") == 1).sum())


def lr_positions(lr: pd.DataFrame) -> np.ndarray:
    """Each step's place on an epoch axis: epoch e's steps spread evenly over [e, e + 1)."""
    epoch = lr["epoch"].to_numpy(dtype=float)
    within = lr.groupby("epoch").cumcount().to_numpy(dtype=float)
    per_epoch = lr.groupby("epoch")["epoch"].transform("size").to_numpy(dtype=float)
    return epoch + within / per_epoch


def plot_lr(lr: pd.DataFrame, out_path: str | Path, head: int = 0) -> Path:
    """The learning rate at every step over the whole run (lr.csv: step, epoch, lr): the SGDR sawtooth.

    Thin lines mark epochs; the shaded band is stage 1 (head only), `head` epochs long.
    """
    lr = lr.sort_values("step", kind="stable")
    x = lr_positions(lr)
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(x, lr["lr"].to_numpy(dtype=float), lw=1.4, color="tab:blue")
    n_epochs = int(math.ceil(x.max())) if len(x) else 0
    for epoch in range(1, n_epochs):
        ax.axvline(epoch, color="0.88", lw=0.7, zorder=0)
    _mark_head_stage(ax, head)
    ax.set_xlim(0, max(n_epochs, 1))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (top layer group)")
    ax.set_title(f"Learning rate per step ({len(lr)} steps, {n_epochs} epochs)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _save(fig, out_path)


def plot_losses(metrics: pd.DataFrame, out_path: str | Path, best_epoch: int | None = None) -> Path:
    """Training loss and validation log loss per epoch; accuracies in a second panel when recorded.

    Epochs are counted from 1 (metrics.csv's `epoch` is 0-based): the point at x = k is after k epochs.
    """
    x = metrics["epoch"].to_numpy(dtype=float) + 1
    has_accuracy = "accuracy" in metrics.columns or "val_accuracy" in metrics.columns
    fig = Figure(figsize=(11 if has_accuracy else 6.5, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_accuracy else 1, squeeze=False)[0]
    panels = [(axes[0], [("loss", "training loss"), ("val_log_loss", "validation log loss")], "loss")]
    if has_accuracy:
        panels.append((axes[1], [("accuracy", "training accuracy"), ("val_accuracy", "validation accuracy")],
                       "accuracy"))
    for ax, series, ylabel in panels:
        for column, label in series:
            if column in metrics.columns:
                ax.plot(x, metrics[column].to_numpy(dtype=float), "o-", ms=3.5, lw=1.4, label=label)
        _mark_head_stage(ax, head_epochs(metrics))
        if best_epoch:
            ax.axvline(best_epoch, color="tab:green", ls=":", lw=1.5, label=f"best epoch ({best_epoch})")
        ax.set_xlim(0, max(float(x.max()) if len(x) else 1, 1) + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Loss per epoch")
    if has_accuracy:
        axes[1].set_title("Accuracy per epoch")
    return _save(fig, out_path)


def confusion_counts(table: pd.DataFrame, n_classes: int) -> np.ndarray:
    """counts[true, predicted] from a prediction_table."""
    counts = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(counts, (table["label"].to_numpy(dtype=int), table["pred"].to_numpy(dtype=int)), 1)
    return counts


def plot_confusion(table: pd.DataFrame, classes: list[str], out_path: str | Path) -> Path:
    """Confusion matrix of counts (and % of each true class) from a prediction_table."""
    k = len(classes)
    counts = confusion_counts(table, k)
    side = min(max(4.5, 0.55 * k + 2.5), 30)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="images").locator = MaxNLocator(integer=True)
    if k <= 20:  # beyond that the numbers would not fit in the cells
        row_totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
        for (t, p), count in np.ndenumerate(counts):
            dark = count > counts.max() / 2
            ax.text(p, t, f"{count}\n{count / row_totals[t, 0]:.0%}", ha="center", va="center",
                    fontsize=9 if k <= 8 else 7, color="white" if dark else "black")
    ax.set_xticks(range(k), classes, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    rule = "P > 0.5" if k == 2 else "argmax"
    accuracy = float(table["correct"].mean()) if len(table) else float("nan")
    ax.set_title(f"Confusion matrix: {len(table)} validation images, accuracy {accuracy:.1%}\n"
                 f"(count, % of the true class; predicted = {rule})")
    return _save(fig, out_path)


def gallery_candidates(table: pd.DataFrame, kind: str, seed: int = 0) -> pd.DataFrame:
    """Every row eligible for gallery `kind`, best first, with a `group` column (true class or '')."""
    if kind not in GALLERIES:
        raise KitError(f"unknown gallery {kind!r}: use one of {', '.join(GALLERIES)}")
    correct = table["correct"].to_numpy(dtype=bool)
    if kind == "random_correct":
        rows = table[correct].sample(frac=1, random_state=seed)
    elif kind == "random_incorrect":
        rows = table[~correct].sample(frac=1, random_state=seed)
    elif kind == "confident_correct":
        rows = table[correct].sort_values("confidence", ascending=False, kind="stable")
    elif kind == "confident_wrong":
        rows = table[~correct].sort_values("confidence", ascending=False, kind="stable")
    else:  # uncertain: binary, closest to 0.5; more classes, the lowest top probability
        rows = table.sort_values("confidence", ascending=True, kind="stable")
    rows = rows.copy()
    rows["group"] = rows["class_name"].astype(str) if GALLERIES[kind][1] else ""
    return rows


def select_gallery(table: pd.DataFrame, kind: str, n: int, seed: int = 0) -> pd.DataFrame:
    """The rows gallery `kind` shows: the first `n` candidates (per true class for per-class kinds)."""
    return gallery_candidates(table, kind, seed).groupby("group", sort=False).head(n)


def gallery_shape(n: int, n_groups: int, per_class: bool) -> tuple[int, int]:
    """(rows, columns) of a gallery of `n` images (per group when per class)."""
    if per_class:
        return max(n_groups, 1), max(n, 1)
    cols = max(min(n, GALLERY_COLS), 1)
    return max(math.ceil(n / cols), 1), cols


def gallery_pixels(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery PNG with this many rows and columns."""
    return round(cols * CELL_W * DPI), round((rows * CELL_H + HEADER_H) * DPI)


def read_thumbnail(path: str | Path) -> np.ndarray | None:
    """The image as a small RGB array, or None when it cannot be read (the gallery skips it)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMB, THUMB))  # JPEG: decode at reduced size, much faster for big photos
            image = image.convert("RGB")
            image.thumbnail((THUMB, THUMB))
            return np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def pick_images(candidates: pd.DataFrame, groups: list[str], n: int) -> tuple[dict, int]:
    """{group: [(row, image), ...]} with up to `n` readable images per group, and how many were unreadable."""
    picked: dict[str, list] = {group: [] for group in groups}
    unreadable = 0
    for row in candidates.itertuples(index=False):
        slot = picked.get(row.group)
        if slot is None or len(slot) >= n:
            continue
        image = read_thumbnail(row.path)
        if image is None:
            unreadable += 1
            continue
        slot.append((row, image))
        if all(len(s) >= n for s in picked.values()):
            break
    return picked, unreadable


def _caption(row) -> str:
    verdict = f"true: {row.class_name}" if row.correct else f"true: {row.class_name}  (wrong)"
    return f"{row.pred_name} {row.confidence:.3f}\n{verdict}"


def _gallery_groups(table: pd.DataFrame, candidates: pd.DataFrame) -> list[str]:
    """Rows of a per-class gallery: every class in label order, or, when there are too many,
    the MAX_CLASS_ROWS classes whose best candidate comes first."""
    classes = list(table.sort_values("label", kind="stable")["class_name"].astype(str).unique())
    if len(classes) <= MAX_CLASS_ROWS:
        return classes
    return list(dict.fromkeys(candidates["group"]))[:MAX_CLASS_ROWS]


def _draw_cell(ax, x0: float, y0: float, image: np.ndarray | None, caption: str, color: str) -> None:
    """One gallery cell with its top-left corner at pixel (x0, y0): the image fitted under its caption."""
    cell_w, cell_h, pad, caption_h = CELL_W * DPI, CELL_H * DPI, 6, 34
    if image is None:
        ax.text(x0 + cell_w / 2, y0 + cell_h / 2, caption, ha="center", va="center", fontsize=11, color=color)
        return
    box_w, box_h = cell_w - 2 * pad, cell_h - caption_h - 2 * pad
    h, w = image.shape[:2]
    scale = min(box_w / w, box_h / h)
    left, top = x0 + (cell_w - w * scale) / 2, y0 + caption_h + pad
    ax.imshow(image, extent=(left, left + w * scale, top + h * scale, top), interpolation="antialiased")
    ax.text(x0 + cell_w / 2, top - 3, caption, ha="center", va="bottom", fontsize=8, color=color)


def plot_gallery(table: pd.DataFrame, kind: str, out_path: str | Path, n: int = 8, seed: int = 0) -> Path:
    """Gallery `kind` of a prediction_table: each image titled with the predicted class and its probability.

    `table["path"]` must point at readable files; unreadable ones are skipped and the next candidate shown.
    Per-class kinds show one row of `n` per true class (at most MAX_CLASS_ROWS classes); a class, or a
    gallery, with no candidates shows "none". One axes in pixel coordinates, not a grid of axes per image,
    which draws far slower.
    """
    title, per_class = GALLERIES[kind]
    candidates = gallery_candidates(table, kind, seed)
    groups = _gallery_groups(table, candidates) if per_class else [""]
    picked, unreadable = pick_images(candidates, groups, n)
    rows, cols = gallery_shape(n, len(groups), per_class)
    width, height = gallery_pixels(rows, cols)
    fig = Figure(figsize=(width / DPI, height / DPI))
    ax = fig.add_axes((0, 0, 1, 1))
    for r, group in enumerate(groups):
        slots = [(r if per_class else i // cols, i % cols) for i in range(cols if per_class else rows * cols)]
        chosen = picked[group] or [(None, None)]
        for (row_i, col_i), (row, image) in zip(slots, chosen):
            x0, y0 = col_i * CELL_W * DPI, HEADER_H * DPI + row_i * CELL_H * DPI
            if row is None:
                _draw_cell(ax, x0, y0, None, f"none\n{group}".strip(), "0.4")
            else:
                _draw_cell(ax, x0, y0, image, _caption(row), "black" if row.correct else "tab:red")
    notes = [f"{len(candidates)} candidates"]
    if unreadable:
        notes.append(f"{unreadable} unreadable skipped")
    if per_class and candidates["group"].nunique() > MAX_CLASS_ROWS:
        notes.append(f"first {MAX_CLASS_ROWS} classes shown")
    ax.text(width / 2, 12, f"{title} ({', '.join(notes)})", ha="center", va="top", fontsize=11)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    return _save(fig, out_path)
