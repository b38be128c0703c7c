"""`make predict`: the top-k classes of your own images with a trained run, written as a CSV.

    python -m kit predict photo.jpg more-photos/ [--run NAME] [--top-k 3] [--tta] [--csv predictions.csv]
    make predict IMAGES="photo.jpg more-photos/"

Each image is decoded and resized exactly as training did (kit/data/user_images.py) at the size the
run's model takes, whatever data.image_size says now, so a run trained at 160 px is fed 160 px. A file
that cannot be read is reported with its reason and the rest are still predicted; the stage fails (exit
status 2) only when no image at all could be predicted, because a folder of photos with one broken file
should still give answers for the others. The table goes to --csv, else to
<run>/predictions/predict-<YYYYmmdd-HHMMSS>.csv; `run` returns that CSV's path.

--csv must name a .csv file that is not one of the inputs; an existing file there is replaced only when
it is an earlier `make predict` table (its header starts `path,prediction`) or empty, so it can never
be an image, a submission or another file of yours. A .csv inside an input folder is fine: folders are
read for image files only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kit.config import Config, with_image_size
from kit.data.user_images import image_files, read_images
from kit.errors import KitError
from kit.fsutil import atomic_path, file_in_the_way
from kit.model import device
from kit.model.features import saw_mirrored, with_tta
from kit.model.inference import class_table, predict_views
from kit.runs import RunDir

CHUNK = 256  # images the predict stage decodes and predicts at a time


def predict_entries(cfg: Config, model, entries: list[tuple[str, str]], views: Sequence[str],
                    n_classes: int) -> tuple[np.ndarray, list[str]]:
    """(readable images x classes probabilities, the reason per entry: '' where predicted).

    CHUNK images are decoded and predicted at a time, so memory stays flat for a folder of any size.
    """
    from tqdm import tqdm

    tables, reasons = [], []
    with tqdm(total=len(entries), desc="predicting", unit="img", disable=len(entries) < 100) as bar:
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start:start + CHUNK]
            pixels, chunk_reasons = read_images(chunk, cfg.data.image_size)
            reasons += chunk_reasons
            if len(pixels):
                paths = [path for (path, _), reason in zip(chunk, chunk_reasons) if not reason]
                probabilities = predict_views(cfg, model, pixels, paths, views, progress=False)
                tables.append(class_table(probabilities, n_classes))
            bar.update(len(chunk))
    return (np.concatenate(tables) if tables else np.zeros((0, n_classes))), reasons


def results_frame(entries: list[tuple[str, str]], reasons: list[str], table: np.ndarray,
                  classes: list[str]) -> pd.DataFrame:
    """One row per input: path, prediction, probability, prob_<class>..., error ('' when predicted)."""
    good = np.flatnonzero([not reason for reason in reasons])
    full = np.full((len(entries), len(classes)), np.nan)
    full[good] = table
    prediction = np.full(len(entries), "", dtype=object)
    prediction[good] = [classes[i] for i in table.argmax(axis=1)]
    probability = np.full(len(entries), np.nan)
    probability[good] = table.max(axis=1)
    frame = pd.DataFrame({"path": [path for path, _ in entries], "prediction": prediction,
                          "probability": probability})
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = full[:, i]
    frame["error"] = reasons
    return frame


def describe(frame: pd.DataFrame, classes: list[str], top_k: int) -> str:
    """The printed answer: per input its top-k classes with probabilities, or why it was not predicted."""
    width = min(max(len(path) for path in frame["path"]), 60)
    values = frame[[f"prob_{name}" for name in classes]].to_numpy()
    lines = []
    for path, error, probabilities in zip(frame["path"], frame["error"], values):
        if error:
            lines.append(f"{path:<{width}}  cannot read: {error}")
            continue
        order = np.argsort(-probabilities, kind="stable")[:top_k]
        lines.append(f"{path:<{width}}  " + "  ".join(f"{classes[i]} {probabilities[i]:.4f}" for i in order))
    return "\n".join(lines)


def write_csv(frame: pd.DataFrame, csv: str | Path) -> Path:
    """The predictions as CSV at `csv`, through a temporary name (an earlier file is replaced only on success)."""
    final = Path(csv)
    with atomic_path(final, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    return final


PREDICTIONS_HEADER = "path,prediction"  # how an earlier predictions CSV (results_frame's) begins


def check_csv(csv: str, entries: list[tuple[str, str]]) -> None:
    """Refuse a --csv path that could destroy something: an input, a folder, a file that is not our table."""
    path = Path(csv)
    if path.is_dir():
        raise KitError(f"--csv {csv} is a folder: give a file name, e.g. {path / 'predictions.csv'}")
    if path.suffix.lower() != ".csv":
        raise KitError(f"--csv {csv} does not end in .csv: give a new CSV file name, e.g. {path.with_suffix('.csv')}")
    blocked = file_in_the_way(path)
    if blocked is not None:
        raise KitError(f"--csv {csv} cannot be written: {blocked} is a file, not a folder; give another path")
    if not path.exists():
        return
    if any(Path(item).exists() and path.samefile(item) for item, _ in entries):
        raise KitError(f"--csv {csv} is one of the inputs: write the predictions to another file, "
                       f"e.g. {path.with_name(path.stem + '-predictions.csv')}")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(PREDICTIONS_HEADER))
    except OSError as error:
        raise KitError(f"--csv {csv} cannot be read ({error.strerror}): give another file name") from None
    if head and head != PREDICTIONS_HEADER.encode():
        raise KitError(f"--csv {csv} already exists and is not an earlier `make predict` table (it does not start "
                       f"with '{PREDICTIONS_HEADER}'): give a new file name, or move that file away first")


def run(cfg: Config, images: Sequence[str], run_name: str | None = None, top_k: int = 3, tta: bool = False,
        csv: str | None = None) -> Path:
    """Predict `images` (files or folders) with a run; print the top-k classes per image; return the CSV written.

    The CSV (at `csv`, else RunDir.new_predictions_csv) has one row per input file in order: path, prediction,
    probability, prob_<class> per class, error. KitError only if nothing could be predicted (no CSV then).
    """
    if top_k < 1:
        raise KitError(f"--top-k is {top_k}: show at least one class, e.g. --top-k 3")
    entries = image_files(images)
    if not entries:
        raise KitError("no images given: name image files or folders, e.g. `python -m kit predict photo.jpg`")
    if csv:
        check_csv(csv, entries)
    run_dir = RunDir.find(cfg, run_name)
    device.for_prediction(cfg)
    model, classes = run_dir.load_model()
    at_size = with_image_size(cfg, run_dir.image_size(model))  # the run's size, not the current config's
    views = list(with_tta(cfg, saw_mirrored(run_dir)).submit.tta) if tta else ["original"]
    print(f"predict: run {run_dir.name} ({len(classes)} classes), {at_size.data.image_size} px, "
          f"views {', '.join(views)}")
    table, reasons = predict_entries(at_size, model, entries, views, len(classes))
    frame = results_frame(entries, reasons, table, classes)
    print(describe(frame, classes, min(top_k, len(classes))))
    failed = [(path, reason) for (path, _), reason in zip(entries, reasons) if reason]
    if not len(table):
        raise KitError(f"none of the {len(entries)} inputs could be predicted (e.g. {failed[0][0]}: "
                       f"{failed[0][1]}): give readable image files (JPEG, PNG, ...)")
    if failed:
        print(f"predict: {len(failed)} of {len(entries)} inputs could not be read (reasons above); "
              f"the other {len(entries) - len(failed)} were predicted")
    written = write_csv(frame, csv or run_dir.new_predictions_csv())
    print(f"predict: wrote {written}")
    return written
