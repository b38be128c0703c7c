"""`make train`: fine-tune a pretrained backbone, fast.ai lesson-1 style, and keep the best epoch.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml [--set train.finetune_epochs=7]

Stage 1 (train.head_epochs): backbone frozen, only the new head learns.
Stage 2 (train.finetune_epochs): backbone unfrozen (its BatchNorm kept in inference mode), the
layers split into groups that learn at train.lr x train.group_lr_ratios, under cosine annealing
with warm restarts (SGDR: cycles of train.cycle_epochs, each train.cycle_mult times longer).
Each epoch logs training loss, validation log loss and accuracy to metrics.csv; the epoch with the
lowest validation log loss is kept as best.keras (written to a temporary name, then renamed).
The run folder runs/<run>/ also holds the resolved config, library versions, classes and summary.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from kit import data, pipeline
from kit import paths as kit_paths
from kit.config import Config, save_provenance
from kit.errors import KitError
from kit.fsutil import atomic_path, write_text_atomic
from kit.model import build_model, layer_groups, set_backbone_trainable
from kit.optim import epochs_for_cycles, group_multipliers, make_optimizer, sgdr_schedule


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever the monitored metric improves: temporary file, then rename."""

    def __init__(self, path: Path, monitor: str = "val_log_loss"):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best, self.best_epoch = np.inf, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            with atomic_path(self.path, suffix=".keras") as tmp:
                self.model.save(tmp)


STAGES = {"head": 1, "finetune": 2}  # numbers: Keras averages every value in the logs


class EpochExtras(keras.callbacks.Callback):
    """Add the stage (1 head, 2 fine-tune) and the epoch's last learning rate to the logs (metrics.csv)."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = STAGES[stage]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["stage"] = self.stage


def new_run_dir(cfg: Config) -> Path:
    name = cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = kit_paths.runs_dir(cfg) / name
    if (run / "best.keras").exists():
        raise KitError(f"run {run} already holds a trained model: choose another train.run_name")
    run.mkdir(parents=True, exist_ok=True)
    return run


def label_array(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Binary: (n, 1) float targets for P(class 1); more classes: one-hot rows (label smoothing works)."""
    if n_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[labels]


def compile_model(model: keras.Model, optimizer, cfg: Config, n_classes: int) -> None:
    smoothing = cfg.train.label_smoothing
    if n_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.BinaryCrossentropy(name="log_loss")]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.CategoricalCrossentropy(name="log_loss")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def fit_stage(model, stage: str, streams, run: Path, first_epoch: int, epochs: int, best: BestCheckpoint):
    callbacks = [EpochExtras(stage), keras.callbacks.CSVLogger(str(run / "metrics.csv"), append=True),
                 best, keras.callbacks.TerminateOnNaN()]
    print(f"train: stage {stage}, epochs {first_epoch + 1}-{first_epoch + epochs}")
    history = model.fit(streams[0], validation_data=streams[1], initial_epoch=first_epoch,
                        epochs=first_epoch + epochs, callbacks=callbacks, shuffle=False, verbose=2)
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise KitError(f"training loss became NaN in stage {stage}: lower train.lr or train.head_lr "
                       f"(best checkpoint so far kept in {run})")


def train_head(model, cfg: Config, streams, run: Path, best: BestCheckpoint, n_classes: int) -> int:
    """Stage 1: the backbone frozen, the head trained at train.head_lr. Returns epochs done."""
    set_backbone_trainable(model, False)
    compile_model(model, keras.optimizers.Adam(cfg.train.head_lr), cfg, n_classes)
    fit_stage(model, "head", streams, run, 0, cfg.train.head_epochs, best)
    return cfg.train.head_epochs


def finetune(model, cfg: Config, streams, run: Path, best: BestCheckpoint, n_classes: int,
             first_epoch: int, steps_per_epoch: int) -> None:
    """Stage 2: everything unfrozen but BatchNorm, layer-group rates under SGDR."""
    t = cfg.train
    set_backbone_trainable(model, True, freeze_batchnorm=cfg.model.freeze_batchnorm)
    groups = layer_groups(model, len(t.group_lr_ratios))
    multipliers = group_multipliers(groups, t.group_lr_ratios)
    schedule = sgdr_schedule(t.lr, steps_per_epoch, t.cycle_epochs, t.cycle_mult, t.warmup_epochs)
    optimizer = make_optimizer("adamw" if t.weight_decay else "adam", schedule, multipliers, t.weight_decay)
    compile_model(model, optimizer, cfg, n_classes)
    cycle_ends = {round(epochs_for_cycles(t.cycle_epochs, t.cycle_mult, n) + t.warmup_epochs, 6) for n in range(1, 12)}
    if t.finetune_epochs not in cycle_ends:
        print(f"train: note: {t.finetune_epochs} fine-tuning epochs stop mid-cycle; cycles end after "
              f"{sorted(e for e in cycle_ends if e <= 4 * t.finetune_epochs + 8)[:6]} epochs")
    fit_stage(model, "finetune", streams, run, first_epoch, t.finetune_epochs, best)


def run(cfg: Config) -> Path:
    """Train one run; return its folder (runs/<run>/ with best.keras, metrics.csv, summary.json)."""
    if cfg.train.head_epochs + cfg.train.finetune_epochs < 1:
        raise KitError("nothing to train: set train.head_epochs or train.finetune_epochs above 0")
    data.run(cfg)  # make sure the index is there and up to date (cheap when nothing changed)
    index = data.load_index(cfg)
    n_classes = len(index.classes)
    run = new_run_dir(cfg)
    save_provenance(cfg, run)
    write_text_atomic(run / "classes.json", json.dumps(index.classes) + "\n")
    train_paths, val_paths = list(index.train["path"]), list(index.val["path"])
    train_images = pipeline.load_images(cfg, train_paths, "train")
    val_images = pipeline.load_images(cfg, val_paths, "val")
    y_train = label_array(index.train["label"].to_numpy(), n_classes)
    y_val = label_array(index.val["label"].to_numpy(), n_classes)
    streams = (pipeline.training_stream(cfg, train_images, y_train, train_paths),
               pipeline.prediction_stream(cfg, val_images, len(val_paths), val_paths, labels=y_val))
    steps_per_epoch = int(np.ceil(len(train_paths) / cfg.data.batch_size))
    model = build_model(cfg, n_classes)
    best = BestCheckpoint(run / "best.keras")
    started = time.time()
    done = train_head(model, cfg, streams, run, best, n_classes) if cfg.train.head_epochs else 0
    if cfg.train.finetune_epochs:
        finetune(model, cfg, streams, run, best, n_classes, done, steps_per_epoch)
    summary = {"run": run.name, "best_epoch": best.best_epoch, "val_log_loss": best.best,
               "train_images": len(train_paths), "val_images": len(val_paths), "classes": index.classes,
               "seconds": round(time.time() - started, 1)}
    write_text_atomic(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"train: best epoch {best.best_epoch} with validation log loss {best.best:.4f} "
          f"(no TTA, no clipping); model in {run / 'best.keras'}")
    return run
