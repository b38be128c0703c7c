"""Prediction with a trained run, and the predict stage: the top-k classes of your own images.

    python -m kit predict photo.jpg more-photos/ [--run NAME] [--top-k 3] [--tta] [--csv predictions.csv]
    make predict IMAGES="photo.jpg more-photos/"

`find_run`, `load_run` and `predict_views` are shared with `make submit` and `make train`. A run
folder holds `best.keras` (the best epoch by validation log loss) and `classes.json`.

The predict stage decodes and resizes each image exactly as training did (kit.pipeline.decode_resize)
at the size the run's model takes, whatever data.image_size says now, so a run trained at 160 px is
fed 160 px. Formats TensorFlow cannot decode (WebP, TIFF, ...) go through a temporary PNG copy, as in
the data stage. A file that cannot be read is reported with its reason and the rest are still
predicted; the stage fails (exit status 2) only when no image at all could be predicted, because a
folder of photos with one broken file should still give answers for the others.
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kit import paths as kit_paths
from kit.config import Config, with_image_size
from kit.errors import KitError
from kit.fsutil import atomic_path
from kit.index import IMAGE_EXTENSIONS

CHUNK = 256  # images the predict stage decodes and predicts at a time
# From this many images on, predict_views runs the model on train.feature_engine (kit/engine.py: TFLite on a
# CPU, ~2.6x Keras): its one-time conversion (~3 s) costs what Keras takes for ~200 images.
ENGINE_MIN_IMAGES = 200


def find_run(cfg: Config) -> Path:
    """The run named by `submit.run`, or the newest run folder holding a best model."""
    if cfg.submit.run:
        run = Path(cfg.submit.run)
        run = run if run.is_dir() else kit_paths.runs_dir(cfg) / cfg.submit.run
        if not (run / "best.keras").is_file():
            raise KitError(f"no trained model in {run}: check submit.run, or train one with `make train`")
        return run
    runs = sorted((p.parent for p in kit_paths.runs_dir(cfg).glob("*/best.keras")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise KitError(f"no trained run in {kit_paths.runs_dir(cfg)}: train one first with `make train`")
    return runs[-1]


def find_named_run(cfg: Config, run: str | None) -> Path:
    """`find_run` with `run` (a folder or a name under paths.runs_dir) in place of submit.run when given."""
    if not run:
        return find_run(cfg)
    chosen = copy.deepcopy(cfg)
    chosen.submit.run = str(run)
    return find_run(chosen)


def load_run(run: Path):
    """(model, classes) of a run. Loaded without its optimizer: prediction does not need it."""
    import keras

    import kit.model  # noqa: F401  registers the custom layers the saved model refers to

    model = keras.saving.load_model(run / "best.keras", compile=False)
    classes = json.loads((run / "classes.json").read_text())
    return model, classes


def predict_views(cfg: Config, model, images: np.ndarray | None, paths: Sequence[str],
                  views: Sequence[str], progress: bool = True) -> np.ndarray:
    """Class probabilities averaged over the test-time `views`, in the order of `paths`.

    Binary models give P(class 1) as a vector; multi-class models an (n, classes) matrix.
    """
    from tqdm import tqdm

    from kit import engine
    from kit.pipeline import prediction_stream

    if not views:
        raise KitError("submit.tta is empty: give at least one view, e.g. [original, hflip]")
    forward = engine.model_function(cfg, model) if len(paths) >= ENGINE_MIN_IMAGES else model.predict_on_batch
    total = None
    for view in views:
        stream = prediction_stream(cfg, images, len(paths), paths, view=view)
        with tqdm(total=len(paths), desc=f"predicting ({view})", unit="img", disable=not progress) as bar:
            parts = []
            for batch in stream:
                parts.append(np.asarray(forward(np.asarray(batch))))
                bar.update(len(parts[-1]))
        probabilities = np.concatenate(parts)
        total = probabilities if total is None else total + probabilities
    mean = total / len(views)
    return mean[:, 0] if mean.shape[1] == 1 else mean


def model_image_size(model, run: Path) -> int:
    """The image size a run's model takes: its input layer's, else the run's saved config.yaml."""
    import yaml

    height, width = model.input_shape[1:3]
    if height is not None and height == width:
        return int(height)
    saved = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    size = (saved or {}).get("data", {}).get("image_size")
    if not isinstance(size, int):
        raise KitError(f"cannot tell the image size of run {run.name} (no data.image_size in its config.yaml): "
                       "retrain it with `make train`")
    return size


def at_run_size(cfg: Config, model, run: Path) -> Config:
    """cfg with data.image_size set to the size the run's model takes, whatever the current config says."""
    return with_image_size(cfg, model_image_size(model, run))


def class_table(probabilities: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, classes) probabilities from predict_views' output: binary P(class 1) becomes [1 - p, p]."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        return np.stack([1.0 - probabilities, probabilities], axis=1)
    if probabilities.shape[1] != n_classes:
        raise KitError(f"the model gives {probabilities.shape[1]} outputs but the run has {n_classes} classes: "
                       "its classes.json does not belong to its best.keras; retrain the run")
    return probabilities


def image_files(items: Sequence[str]) -> list[tuple[str, str]]:
    """(path, reason) per input: files as given, folders replaced by the image files inside them.

    Folders are searched recursively, sorted, hidden files and non-image extensions skipped. `reason`
    is '' for a file to try, else why there is nothing to predict (missing path, empty folder).
    """
    entries = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            entries += [(str(p), "") for p in inside] or [(item, "folder holds no image files")]
        else:
            entries.append((item, "" if path.is_file() else "file not found"))
    return entries


def read_image(path: str, size: int, converted_dir: Path) -> tuple[np.ndarray | None, str]:
    """(size x size x 3 uint8 pixels, '') decoded as in training, or (None, why it cannot be read)."""
    import tensorflow as tf

    from kit.images import check_image
    from kit.pipeline import decode_resize

    ok, reason, load_path = check_image(path, str(converted_dir))
    if not ok:
        return None, reason
    try:
        return decode_resize(tf.constant(load_path), size).numpy(), ""
    except tf.errors.OpError as error:
        return None, f"cannot decode: {str(error).splitlines()[0][:120]}"


def read_images(entries: list[tuple[str, str]], size: int) -> tuple[np.ndarray, list[str]]:
    """(pixels of the readable images, in order; the reason per entry, '' where it was read)."""
    reasons, pixels = [], []
    with tempfile.TemporaryDirectory(prefix="kit-predict-") as converted:
        for path, reason in entries:
            image = None
            if not reason:
                image, reason = read_image(path, size, Path(converted))
            reasons.append(reason)
            if image is not None:
                pixels.append(image)
    return np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8), reasons


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


def run(cfg: Config, images: Sequence[str], run: str | None = None, top_k: int = 3, tta: bool = False,
        csv: str | None = None) -> pd.DataFrame:
    """Predict `images` (files or folders) with a run; print the top-k classes per image; return the table.

    The table (and the CSV, when `csv` is given) has one row per input file in order: path,
    prediction, probability, prob_<class> per class, error. KitError only if nothing could be predicted.
    """
    if top_k < 1:
        raise KitError(f"--top-k is {top_k}: show at least one class, e.g. --top-k 3")
    if csv and Path(csv).is_dir():
        raise KitError(f"--csv {csv} is a folder: give a file name, e.g. {Path(csv) / 'predictions.csv'}")
    entries = image_files(images)
    if not entries:
        raise KitError("no images given: name image files or folders, e.g. `python -m kit predict photo.jpg`")
    run_dir = find_named_run(cfg, run)
    model, classes = load_run(run_dir)
    at_size = at_run_size(cfg, model, run_dir)  # the run's size, not the current config's
    views = list(cfg.submit.tta) if tta else ["original"]
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
    if csv:
        print(f"predict: wrote {write_csv(frame, csv)}")
    return frame
