"""`train.refit_all: true`: once the recipe is fixed on the split, the same training on every labelled image.

    python -m kit train --set train.refit_all=true          # make train SET="train.refit_all=true"

The run is first trained and scored on its split as always (its best epoch, snapshots and calibration are
chosen on its validation images; summary.json is written). Then a second model is trained from the same seed
on train + validation, for the same epochs with the same schedule: the head (on cached features, the validation
images' features added; or on images) for train.head_epochs, then train.finetune_epochs of fine-tuning, saving
its weights at the same SGDR cycle ends and at the split's best epoch. It lands in runs/<run>/refit/ (a run
folder of its own: best.keras = the split's best epoch, snapshots/, metrics.csv, summary.json), and
`make submit` predicts the test set with it, using the snapshot choice and calibration fitted on the split
model's validation predictions (submit.refit=false: the split model). The refit has no held-out score of its
own: the validation numbers printed are the split model's, for a model that saw a fifth fewer photos.

Interrupted, it continues: `make train` with the same config finds the finished run whose refit is not, and
trains the refit only (its head stage and fine-tuning epochs resume as a run's do).
"""
from __future__ import annotations

import time
from dataclasses import replace

import keras
import numpy as np
import pandas as pd

from kit.config import Config
from kit.data import pipeline
from kit.data.dataset import DatasetIndex
from kit.model import device, features
from kit.runs import RunDir
from kit.train.head import fit_head
from kit.train.logistic import uses_logistic
from kit.train.recipe import label_array
from kit.train.trainer import Trainer


def every_labelled(index: DatasetIndex) -> DatasetIndex:
    """The index with validation moved into training (train rows first, as the feature arrays are laid out)."""
    empty = index.val.iloc[0:0]
    return DatasetIndex(index.classes, pd.concat([index.train, index.val], ignore_index=True), empty, index.test,
                        index.quarantine, index.sample_submission, index.indexed_paths)


def refit_features(cfg: Config, model: keras.Model, index: DatasetIndex) -> tuple[np.ndarray, np.ndarray]:
    """Training features of every labelled image: for each pass (original, then train.feature_passes augmented
    ones) the training images' cached features, then the validation images'. Computed only where missing."""
    identity, n_classes = features.backbone_identity(model), len(index.classes)
    parts = []
    for k in range(cfg.train.feature_passes + 1):
        parts.append(features.features(cfg, model, list(index.train["path"]), "train", "original", k, identity))
        parts.append(features.features(cfg, model, list(index.val["path"]), "val", "original", k, identity))
    labels = label_array(np.concatenate([index.train["label"], index.val["label"]]), n_classes)
    return np.concatenate(parts), np.concatenate([labels] * (cfg.train.feature_passes + 1))


def make_trainer(cfg: Config, run_dir: RunDir, index: DatasetIndex, strategy, best_epoch: int):
    """A Trainer (kit/train/fit.py) on every labelled image, validating on none, keeping the split's best epoch."""
    class RefitTrainer(Trainer):
        @property
        def streams(self):
            if self._streams is None:
                cfg, paths = self.cfg, list(self.index.train["path"])
                split = len(index.train)
                train, val = (pipeline.load_images(cfg, p, name) for p, name in
                              ((paths[:split], "train"), (paths[split:], "val")))
                images = None if train is None else pipeline.JoinedImages(train, val)  # the split's own caches
                labels = label_array(self.index.train["label"].to_numpy(), self.n_classes)
                stream = pipeline.training_stream(cfg, images, labels, paths)
                self._streams = (device.for_strategy(stream, self.strategy), None)
            return self._streams

        def train_head_on_features(self):
            fit_head(self.cfg, self.model, refit_features(self.cfg, self.model, index), None, self.run_dir,
                     self.n_classes)

    trainer = RefitTrainer(cfg, run_dir, every_labelled(index), strategy)
    if best_epoch > cfg.train.head_epochs:
        trainer.snapshot_epochs = sorted({*trainer.snapshot_epochs, best_epoch})
    return trainer


def refit(cfg: Config, run_dir: RunDir, index: DatasetIndex, strategy, summary: dict) -> dict:
    """Train runs/<run>/refit on every labelled image (see the module's docstring); return its summary."""
    final, started = run_dir.refit, time.time()
    if final.is_finished():
        return final.summary()
    everything, best_epoch = every_labelled(index), int(summary["best_epoch"] or cfg.train.head_epochs)
    if summary.get("logistic_c"):  # the recipe fixed on the split: its logistic head's C, not a new search
        cfg = replace(cfg, train=replace(cfg.train, logistic_c=summary["logistic_c"]))
    head = "a logistic head" if uses_logistic(cfg) else f"{cfg.train.head_epochs} head"
    print(f"train: refit on all {len(everything.train):,} labelled images (train.refit_all), {head} + "
          f"{cfg.train.finetune_epochs} fine-tuning epochs, into {final.path}")
    if not final.config_file.is_file():  # its own config asks for no refit or members of its own
        final.start(replace(cfg, train=replace(cfg.train, refit_all=False, members=[])), index.classes, everything.val)
    elif final.has_progress():  # interrupted: continue after its last completed epoch, as a run does
        final.trim_logs(final.completed_epochs(cfg.train.head_epochs))
    keras.utils.set_random_seed(cfg.data.seed)  # the split run's seed: the same recipe, more photos
    trainer = make_trainer(cfg, final, index, strategy, best_epoch)
    if cfg.train.head_epochs:
        trainer.train_head()
    if best_epoch <= cfg.train.head_epochs or not cfg.train.finetune_epochs:
        final.save_model(trainer.model)  # the split kept its head stage (or trains nothing else)
    if cfg.train.finetune_epochs:
        trainer.finetune()
        if best_epoch > cfg.train.head_epochs:
            trainer.model.load_weights(final.snapshot(best_epoch))
            final.save_model(trainer.model)
    result = {"run": final.name, "refit_of": run_dir.name, "train_images": len(everything.train),
              "best_epoch": best_epoch, "head_epochs": cfg.train.head_epochs,
              "finetune_epochs": cfg.train.finetune_epochs, "snapshots": [e for e, _ in final.snapshots()],
              "val_log_loss": None, "note": "trained on every labelled image: no held-out score of its own",
              "seconds": round(time.time() - started, 1)}
    final.finish(result)
    return result
