"""The head alone, trained on cached backbone features: the precompute path and stage 1 of fine-tuning.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml --set train.precompute=true

`train_head` is the whole precompute run (writes the run folder like kit/train.py does); `fit_head` trains
a model's head on feature arrays and is also what `train.head_on_features` uses before fine-tuning.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm import tqdm

from kit.augment import build_augmenter
from kit.config import Config, save_provenance
from kit.errors import KitError
from kit.features import features, training_features, predict_views_from_features, backbone_identity, head_model
from kit.fsutil import atomic_path, write_text_atomic
from kit.pipeline import prefetched

class BestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the lowest validation log loss (in memory: no file per epoch)."""

    def __init__(self, monitor: str = "val_log_loss"):
        super().__init__()
        self.monitor, self.best, self.best_epoch, self.weights = monitor, math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value < self.best:
            self.best, self.best_epoch, self.weights = float(value), epoch + 1, self.model.get_weights()


class EpochBar(keras.callbacks.Callback):
    """One progress bar over the epochs, showing the validation log loss."""

    def __init__(self, epochs: int):
        super().__init__()
        self.bar = tqdm(total=epochs, desc="head on features", unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix(val_log_loss=f"{(logs or {}).get('val_log_loss', float('nan')):.4f}")
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


def _feature_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return prefetched(ds.batch(batch_size))


def fit_head(cfg: Config, model: keras.Model, train_xy, val_xy, run_dir: Path, n_classes: int) -> BestWeights:
    """Train the model's head on feature arrays under SGDR; leave the best epoch's weights in place."""
    from kit.callbacks import EpochExtras
    from kit.optim import sgdr_schedule
    from kit.train import compile_model

    t, batch_size = cfg.train, cfg.data.batch_size
    steps_per_epoch = math.ceil(len(train_xy[0]) / batch_size)
    # ONE cosine cycle over all head epochs, not the fine-tuning restarts: a head on fixed features is a
    # (nearly) convex problem with nothing to escape from, and a restart late in the run undoes its
    # annealing. A choice on principle: on the mini competition's cached features the head's spread over
    # seeds (0.042-0.046 validation log loss after TTA and clipping) hides the difference.
    schedule = sgdr_schedule(t.head_lr, steps_per_epoch, t.head_precompute_epochs, 1.0, t.warmup_epochs)
    optimizer = (keras.optimizers.AdamW(schedule, weight_decay=t.weight_decay) if t.weight_decay
                 else keras.optimizers.Adam(schedule))
    head = head_model(model)
    compile_model(head, optimizer, cfg, n_classes)
    head.steps_per_execution = min(steps_per_epoch, 32)  # per-step Python overhead dominates tiny steps
    best, epochs = BestWeights(), t.head_precompute_epochs
    callbacks = [EpochExtras("head"), keras.callbacks.CSVLogger(str(run_dir / "metrics.csv")), best,
                 keras.callbacks.TerminateOnNaN(), EpochBar(epochs)]
    history = head.fit(_feature_dataset(*train_xy, batch_size, cfg.data.seed), epochs=epochs, verbose=0,
                       shuffle=False, validation_data=_feature_dataset(*val_xy, 4096, None), callbacks=callbacks)
    losses = history.history.get("loss", [])
    _write_lr_csv(run_dir / "lr.csv", schedule, steps_per_epoch, len(losses))
    if best.weights is not None:
        head.set_weights(best.weights)  # the model's own head layers: the full model has them too
    if not losses or not np.isfinite(losses[-1]):
        if best.weights is not None:
            _save_model(model, run_dir)
        raise KitError(f"training loss became NaN on the cached features: lower train.head_lr "
                       f"(best epoch so far kept in {run_dir})")
    return best


def _write_lr_csv(path: Path, schedule, steps_per_epoch: int, epochs: int) -> None:
    import tensorflow as tf

    steps = np.arange(steps_per_epoch * epochs)
    # Step by step (the restart schedule does not broadcast over a vector), inside one graph: fast.
    each_step = tf.function(lambda s: tf.map_fn(lambda i: tf.cast(schedule(i), tf.float32), s))
    rates = each_step(tf.constant(steps, tf.float32)).numpy().astype(float) if len(steps) else np.zeros(0)
    frame = pd.DataFrame({"step": steps, "epoch": steps // steps_per_epoch, "lr": rates})
    write_text_atomic(path, frame.to_csv(index=False))


def _save_model(model: keras.Model, run_dir: Path) -> None:
    with atomic_path(run_dir / "best.keras", suffix=".keras") as tmp:
        model.save(tmp)


def val_predictions_frame(val: pd.DataFrame, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """path, label, class_name and prob (binary: P(classes[1])) or prob_<class> per class."""
    frame = val[["path", "label", "class_name"]].reset_index(drop=True).copy()
    if probabilities.ndim == 1:
        frame["prob"] = probabilities
    else:
        for i, name in enumerate(classes):
            frame[f"prob_{name}"] = probabilities[:, i]
    return frame


def check_settings(cfg: Config, index) -> None:
    """Refuse a precompute run that cannot work before any feature is computed."""
    t = cfg.train
    if t.head_precompute_epochs < 1:
        raise KitError("train.precompute=true trains only the head: set train.head_precompute_epochs above 0")
    if t.precompute_passes < 0:
        raise KitError(f"train.precompute_passes must be >= 0, got {t.precompute_passes}")
    if t.precompute_passes and build_augmenter(cfg.augment) is None:
        raise KitError("train.precompute_passes > 0 needs augmentation: set augment.enabled=true "
                       "or train.precompute_passes=0")
    if len(index.val) == 0:
        raise KitError("precompute training keeps the best epoch by validation log loss: set data.val_fraction > 0")


def train_head(cfg: Config, index, run_dir: Path) -> dict:
    """The precompute training path: the head alone on cached features; writes the run folder.

    `index` is data.load_index(cfg). Returns the summary (also written as summary.json).
    """
    from kit.model import build_model, set_backbone_trainable
    from kit.submission import log_loss
    from kit.train import label_array

    started, run_dir = time.time(), Path(run_dir)
    check_settings(cfg, index)
    classes, n_classes = list(index.classes), len(index.classes)
    save_provenance(cfg, run_dir)
    write_text_atomic(run_dir / "classes.json", json.dumps(classes) + "\n")
    model = build_model(cfg, n_classes)
    set_backbone_trainable(model, False)
    identity = backbone_identity(model)
    train_paths, val_paths = list(index.train["path"]), list(index.val["path"])
    train_xy = training_features(cfg, model, train_paths, label_array(index.train["label"].to_numpy(), n_classes),
                                 identity)
    val_xy = (features(cfg, model, val_paths, "val", "original", identity=identity),
              label_array(index.val["label"].to_numpy(), n_classes))
    best = fit_head(cfg, model, train_xy, val_xy, run_dir, n_classes)
    _save_model(model, run_dir)
    probabilities = predict_views_from_features(cfg, model, val_paths, cfg.submit.tta, "val")
    frame = val_predictions_frame(index.val, probabilities, classes)
    write_text_atomic(run_dir / "val_predictions.csv", frame.to_csv(index=False))
    summary = {"run": run_dir.name, "best_epoch": best.best_epoch, "val_log_loss": best.best,
               "train_images": len(train_paths), "val_images": len(val_paths), "classes": classes,
               "precompute": True, "precompute_passes": cfg.train.precompute_passes, "tta": list(cfg.submit.tta),
               "val_log_loss_tta": log_loss(index.val["label"].to_numpy(), probabilities),
               "seconds": round(time.time() - started, 1)}
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"train: head on cached features, best epoch {best.best_epoch} with validation log loss {best.best:.4f} "
          f"({summary['val_log_loss_tta']:.4f} with TTA {cfg.submit.tta}, no clipping); "
          f"model in {run_dir / 'best.keras'}")
    return summary
