"""The moving parts of one training run on images or cached features: kit/train/fit.py's stages use it, and
the refit on every labelled image (kit/train/refit.py) reuses it.

    trainer = Trainer(cfg, run_dir, index, strategy); trainer.train_head(); trainer.finetune()
"""
from __future__ import annotations

import sys

import keras
import numpy as np

from kit import timings
from kit.config import Config
from kit.data import pipeline
from kit.errors import KitError
from kit.fsutil import atomic_path
from kit.model import device
from kit.model.backbones import build_model, set_backbone_trainable
from kit.model.optim import epochs_for_cycles, sgdr_schedule
from kit.runs import RunDir
from kit.train.callbacks import BestEpoch, CycleSnapshots, EpochExtras, ProgressLines, StepLearningRate
from kit.train.folds import fit_fold_heads
from kit.train.head import feature_arrays, fit_head
from kit.train.recipe import compile_model, label_array, optimizer, unfreeze


class Trainer:
    """One run's moving parts: its folder, the index, the model, the best epoch; image streams when needed."""

    def __init__(self, cfg: Config, run_dir: RunDir, index, strategy=None):
        self.cfg, self.run_dir, self.index = cfg, run_dir, index
        self.n_classes = len(index.classes)
        self.strategy = strategy or device.default_strategy()
        with self.strategy.scope():  # its variables are mirrored under a MirroredStrategy
            self.model = build_model(cfg, self.n_classes)
        self.best = BestEpoch(run_dir.best_model, **run_dir.earlier_best())
        self.fold_epochs = None  # train.folds: each fold head's best epoch
        self.logistic_c = None  # train.head_solver=logistic: the C it chose (the refit's recipe)
        self.snapshot_epochs = cycle_end_epochs(cfg)  # fine-tuning's weights kept at these epochs (from 1)
        self._streams = None

    @property
    def streams(self):
        """(training stream, validation stream), built on first use: a run on features alone never decodes."""
        if self._streams is None:
            cfg, index = self.cfg, self.index
            train_paths, val_paths = list(index.train["path"]), list(index.val["path"])
            train_images = pipeline.load_images(cfg, train_paths, "train")
            val_images = pipeline.load_images(cfg, val_paths, "val")
            y_train = label_array(index.train["label"].to_numpy(), self.n_classes)
            y_val = label_array(index.val["label"].to_numpy(), self.n_classes)
            streams = (pipeline.training_stream(cfg, train_images, y_train, train_paths),
                       pipeline.prediction_stream(cfg, val_images, len(val_paths), val_paths, labels=y_val))
            self._streams = tuple(device.for_strategy(stream, self.strategy) for stream in streams)
        return self._streams

    @property
    def steps_per_epoch(self) -> int:
        return int(np.ceil(len(self.index.train) / self.cfg.data.batch_size))

    def fit(self, stage: str, first_epoch: int, epochs: int) -> None:
        """`epochs` epochs of model.fit on the image streams, logging into the run folder."""
        run_dir = self.run_dir
        # BackupAndRestore last: an epoch counts as done only once its logs and checkpoint are written.
        callbacks = [EpochExtras(stage), keras.callbacks.CSVLogger(str(run_dir.metrics), append=True),
                     StepLearningRate(run_dir.lr, self.steps_per_epoch), self.best,
                     keras.callbacks.TensorBoard(str(run_dir.tensorboard), write_graph=False, profile_batch=0),
                     keras.callbacks.TerminateOnNaN(), keras.callbacks.BackupAndRestore(str(run_dir.backup(stage)))]
        if stage == "finetune":  # before BackupAndRestore: an epoch counts as done once its snapshot is written
            callbacks.insert(-1, CycleSnapshots(run_dir.snapshot, self.snapshot_epochs))
        if not sys.stdout.isatty():  # a terminal gets Keras' live bar with its ETA instead
            callbacks.insert(0, ProgressLines(self.steps_per_epoch, self.cfg.data.batch_size))
        print(f"train: stage {stage}, epochs {first_epoch + 1}-{first_epoch + epochs}")
        train_stream, val_stream = self.streams  # built (decoded) before the stage's clock starts
        with timings.step("head" if stage == "head" else "fine-tune", epochs * len(self.index.train)):
            history = self.model.fit(train_stream, validation_data=val_stream, initial_epoch=first_epoch,
                                     epochs=first_epoch + epochs, callbacks=callbacks, shuffle=False,
                                     verbose=1 if sys.stdout.isatty() else 2)  # a live bar with ETA on a terminal
        self.model._initial_epoch = None  # BackupAndRestore sets it; it must not leak into the next stage
        losses = history.history.get("loss", [])
        if losses and not np.isfinite(losses[-1]):
            raise KitError(f"training loss became NaN in stage {stage} (epoch {first_epoch + len(losses)}): "
                           f"lower train.lr / train.head_lr; the best checkpoint so far is kept in {run_dir.path}")

    def train_head(self) -> None:
        """Stage 1: the backbone frozen, the head trained at train.head_lr (skipped if already done)."""
        done = self.run_dir.head_done
        if done.exists():
            with np.load(done) as saved:
                self.model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
            print(f"train: head stage already done in {self.run_dir.name}, continuing")
            return
        set_backbone_trainable(self.model, False)
        if self.cfg.train.head == "features":
            self.train_head_on_features()
        else:
            with self.strategy.scope():  # the optimizer's state and the metrics live beside the variables
                compile_model(self.model, optimizer(self.cfg, self.cfg.train.head_lr), self.cfg, self.n_classes)
            self.fit("head", 0, self.cfg.train.head_epochs)
        with atomic_path(done, suffix=".npz") as tmp:
            np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.model.get_weights())})

    def train_head_on_features(self) -> None:
        """Stage 1 to convergence in seconds on cached backbone features; the head may stay the best model."""
        train_xy, val_xy = feature_arrays(self.cfg, self.model, self.index)
        folds = self.cfg.train.folds
        # k heads on (k-1)/k of the rows each: k-1 passes' worth of samples per epoch
        with timings.step("head", self.cfg.train.head_epochs * len(train_xy[0]) * max(1, folds - 1)):
            if folds > 1:
                head_best, self.fold_epochs = fit_fold_heads(self.cfg, self.model, train_xy, val_xy, self.run_dir,
                                                             self.index)
            else:
                head_best = fit_head(self.cfg, self.model, train_xy, val_xy, self.run_dir, self.n_classes)
                self.logistic_c = getattr(head_best, "c", None)
        if head_best.best < self.best.best:
            self.best.best, self.best.best_epoch = head_best.best, head_best.best_epoch
            self.run_dir.save_model(self.model)

    def finetune(self) -> None:
        """Stage 2: everything unfrozen but BatchNorm, layer-group rates under SGDR."""
        t = self.cfg.train
        multipliers = unfreeze(self.cfg, self.model)
        schedule = sgdr_schedule(t.lr, self.steps_per_epoch, t.cycle_epochs, t.cycle_mult, t.warmup_epochs)
        with self.strategy.scope():
            compile_model(self.model, optimizer(self.cfg, schedule, multipliers), self.cfg, self.n_classes)
        warn_mid_cycle(self.cfg)
        self.fit("finetune", t.head_epochs, t.finetune_epochs)


def cycle_end_epochs(cfg: Config) -> list[int]:
    """The epochs (counted from 1, head epochs first) at which an SGDR cycle of fine-tuning ends, and the last."""
    t = cfg.train
    last = t.head_epochs + t.finetune_epochs
    ends = {last}
    for n in range(1, 64):
        end = t.head_epochs + t.warmup_epochs + epochs_for_cycles(t.cycle_epochs, t.cycle_mult, n)
        if end > last + 1e-6:
            break
        if abs(end - round(end)) < 1e-6:
            ends.add(int(round(end)))
    return sorted(ends)


def warn_mid_cycle(cfg: Config) -> None:
    t = cfg.train
    ends = sorted({round(epochs_for_cycles(t.cycle_epochs, t.cycle_mult, n) + t.warmup_epochs, 6) for n in range(1, 9)})
    if t.finetune_epochs not in ends:
        print(f"train: note: {t.finetune_epochs} fine-tuning epochs stop mid-cycle; SGDR cycles end after "
              f"{[e for e in ends if e <= 64][:6]} epochs")
