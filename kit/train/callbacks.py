"""Keras callbacks for a training run: the best checkpoint, per-epoch extras, the per-step learning rate.

Used by kit/train/fit.py and kit/train/head.py; the files they write are named by kit/runs.py.
"""
from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np

from kit.fsutil import atomic_path

STAGES = {"head": 1, "finetune": 2}  # numbers, not names: Keras averages every value in the logs


class BestEpoch(keras.callbacks.Callback):
    """Keep the epoch with the lowest monitored metric (validation log loss).

    With a `path` the model is saved there on each improvement (best.keras, through a temporary name):
    training on images. Without one its weights are kept in memory (`weights`): the head on cached
    features, whose full model is saved once at the end. `best` may start from an earlier, interrupted part
    of the same run, so a resumed run only replaces its best model with a better epoch.
    """

    def __init__(self, path: Path | None = None, monitor: str = "val_log_loss", best: float = np.inf,
                 best_epoch=None):
        super().__init__()
        self.path, self.monitor = None if path is None else Path(path), monitor
        self.best, self.best_epoch, self.weights = best, best_epoch, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value) or value >= self.best:
            return
        self.best, self.best_epoch = float(value), epoch + 1
        if self.path is None:
            self.weights = self.model.get_weights()
        else:
            with atomic_path(self.path, suffix=".keras") as tmp:
                self.model.save(tmp)


def current_lr(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochExtras(keras.callbacks.Callback):
    """Add the stage (1 head, 2 fine-tune) and the epoch's last learning rate to the logs (metrics.csv)."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = STAGES[stage]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = current_lr(self.model)
            logs["stage"] = self.stage


class StepLearningRate(keras.callbacks.Callback):
    """Append (step, epoch, lr) for every training step to lr.csv, one epoch at a time.

    Rows are flushed at the end of each epoch, the same moment BackupAndRestore saves, so a
    resumed run's lr.csv has no duplicate or missing steps. `step` counts from the run's start.
    """

    def __init__(self, path: Path, steps_per_epoch: int):
        super().__init__()
        self.path, self.steps_per_epoch = Path(path), steps_per_epoch
        self.rows: list[tuple[int, int, float]] = []
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.rows = epoch, []

    def on_train_batch_begin(self, batch, logs=None):
        # The rate this step is taken with: the optimizer's schedule at its current iteration.
        self.rows.append((self.epoch * self.steps_per_epoch + batch, self.epoch, current_lr(self.model)))

    def on_epoch_end(self, epoch, logs=None):
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "epoch", "lr"])
            writer.writerows(self.rows)
        self.rows = []


class ProgressLines(keras.callbacks.Callback):
    """A line every `every` of an epoch with images/s and the epoch's ETA, for logs that are not a terminal
    (a Kaggle kernel's log, `nohup`, CI): Keras' verbose=2 prints only at the epoch's end, after 20+ minutes."""

    def __init__(self, steps_per_epoch: int, batch_size: int, every: float = 0.1):
        super().__init__()
        self.steps, self.batch_size = steps_per_epoch, batch_size
        self.marks = sorted({max(1, round(steps_per_epoch * every * k)) for k in range(1, int(1 / every))})
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        import time

        self.epoch, self.started = epoch + 1, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 not in self.marks:
            return
        import time

        from kit.timings import duration

        seconds = time.perf_counter() - self.started
        done = batch + 1
        rate = done * self.batch_size / max(seconds, 1e-9)
        print(f"epoch {self.epoch}: {done}/{self.steps} steps, {rate:.1f} img/s, loss {(logs or {}).get('loss', 0):.4f}, "
              f"ETA {duration(seconds / done * (self.steps - done))} (then validation)", flush=True)


class CycleSnapshots(keras.callbacks.Callback):
    """Save the weights at the end of each SGDR cycle (`epochs`, counted from 1): the models a snapshot
    ensemble averages ("Snapshot Ensembles: Train 1, get M for free", Huang et al. 2017). Weights only, through
    a temporary name: a snapshot is loaded into the run's best.keras model, which has the architecture."""

    def __init__(self, path_for, epochs):
        super().__init__()
        self.path_for, self.epochs = path_for, set(epochs)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        path = Path(self.path_for(epoch + 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
