"""`make train`: fine-tune a pretrained backbone, fast.ai lesson-1 style, and keep the best epoch.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml [--set train.finetune_epochs=7]

Stage 1 (train.head_epochs): backbone frozen, only the new head learns.
Stage 2 (train.finetune_epochs): backbone unfrozen (its BatchNorm kept in inference mode), the
layers split into groups that learn at train.lr x train.group_lr_ratios, under cosine annealing
with warm restarts (SGDR: cycles of train.cycle_epochs, each train.cycle_mult times longer).
With train.precompute the head alone learns on cached backbone features (kit/features.py).

Each epoch logs training loss, validation log loss and accuracy to metrics.csv; the epoch with the
lowest validation log loss is kept as best.keras. A run killed midway continues from its last
completed epoch when started again with the same config (kit/resume.py).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from kit import data, device, pipeline, predict, resume
from kit.callbacks import BestCheckpoint, EpochExtras, StepLearningRate
from kit.config import Config, save_provenance
from kit.errors import KitError
from kit.fsutil import atomic_path, write_text_atomic
from kit.model import build_model, layer_groups, set_backbone_trainable
from kit.optim import epochs_for_cycles, group_multipliers, make_optimizer, sgdr_schedule

HEAD_DONE = "head-stage.npz"  # the weights at the end of stage 1, so a resumed run skips it


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
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=device.jit_compile(cfg))


class Trainer:
    """One run's moving parts: its folder, the data streams, the model, the best checkpoint."""

    def __init__(self, cfg: Config, run: Path, streams, steps_per_epoch: int, n_classes: int):
        self.cfg, self.run, self.streams = cfg, run, streams
        self.steps_per_epoch, self.n_classes = steps_per_epoch, n_classes
        self.model = build_model(cfg, n_classes)
        self.best = BestCheckpoint(run / "best.keras", **earlier_best(run))

    def fit(self, stage: str, first_epoch: int, epochs: int) -> None:
        run = self.run
        # BackupAndRestore last: an epoch counts as done only once its logs and checkpoint are written.
        callbacks = [EpochExtras(stage), keras.callbacks.CSVLogger(str(run / "metrics.csv"), append=True),
                     StepLearningRate(run / "lr.csv", self.steps_per_epoch), self.best,
                     keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False, profile_batch=0),
                     keras.callbacks.TerminateOnNaN(), keras.callbacks.BackupAndRestore(str(run / "backup" / stage))]
        print(f"train: stage {stage}, epochs {first_epoch + 1}-{first_epoch + epochs}")
        history = self.model.fit(self.streams[0], validation_data=self.streams[1], initial_epoch=first_epoch,
                                 epochs=first_epoch + epochs, callbacks=callbacks, shuffle=False,
                                 verbose=1 if sys.stdout.isatty() else 2)  # a live bar with ETA on a terminal
        self.model._initial_epoch = None  # BackupAndRestore sets it; it must not leak into the next stage
        losses = history.history.get("loss", [])
        if losses and not np.isfinite(losses[-1]):
            raise KitError(f"training loss became NaN in stage {stage} (epoch {first_epoch + len(losses)}): "
                           f"lower train.lr / train.head_lr; the best checkpoint so far is kept in {run}")

    def train_head(self, split) -> None:
        """Stage 1: the backbone frozen, the head trained at train.head_lr (skipped if already done)."""
        done = self.run / HEAD_DONE
        if done.exists():
            with np.load(done) as saved:
                self.model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
            print(f"train: head stage already done in {self.run.name}, continuing")
            return
        set_backbone_trainable(self.model, False)
        if self.cfg.train.head_on_features:
            self.train_head_on_features(*split)
        else:
            compile_model(self.model, keras.optimizers.Adam(self.cfg.train.head_lr), self.cfg, self.n_classes)
            self.fit("head", 0, self.cfg.train.head_epochs)
        with atomic_path(done, suffix=".npz") as tmp:
            np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.model.get_weights())})

    def train_head_on_features(self, train_paths, y_train, val_paths, y_val) -> None:
        """Stage 1 to convergence in seconds on cached backbone features (fast.ai: precompute, then unfreeze)."""
        from kit import features, head

        identity = features.backbone_identity(self.model)
        train_xy = features.training_features(self.cfg, self.model, train_paths, y_train, identity)
        val_xy = (features.features(self.cfg, self.model, val_paths, "val", "original", identity=identity), y_val)
        best = head.fit_head(self.cfg, self.model, train_xy, val_xy, self.run, self.n_classes)
        if best.best < self.best.best:  # the head alone may stay the best model: keep it as a candidate
            self.best.best, self.best.best_epoch = best.best, best.best_epoch
            with atomic_path(self.best.path, suffix=".keras") as tmp:
                self.model.save(tmp)

    def finetune(self) -> None:
        """Stage 2: everything unfrozen but BatchNorm, layer-group rates under SGDR."""
        t = self.cfg.train
        set_backbone_trainable(self.model, True, freeze_batchnorm=self.cfg.model.freeze_batchnorm)
        multipliers = group_multipliers(layer_groups(self.model, len(t.group_lr_ratios)), t.group_lr_ratios)
        schedule = sgdr_schedule(t.lr, self.steps_per_epoch, t.cycle_epochs, t.cycle_mult, t.warmup_epochs)
        optimizer = make_optimizer("adamw" if t.weight_decay else "adam", schedule, multipliers, t.weight_decay)
        compile_model(self.model, optimizer, self.cfg, self.n_classes)
        warn_mid_cycle(self.cfg)
        self.fit("finetune", head_epochs(self.cfg), t.finetune_epochs)


def head_epochs(cfg: Config) -> int:
    """Epochs stage 1 takes: on cached features it runs train.head_precompute_epochs."""
    if not cfg.train.head_epochs:
        return 0
    return cfg.train.head_precompute_epochs if cfg.train.head_on_features else cfg.train.head_epochs


def warn_mid_cycle(cfg: Config) -> None:
    t = cfg.train
    ends = sorted({round(epochs_for_cycles(t.cycle_epochs, t.cycle_mult, n) + t.warmup_epochs, 6) for n in range(1, 9)})
    if t.finetune_epochs not in ends:
        print(f"train: note: {t.finetune_epochs} fine-tuning epochs stop mid-cycle; SGDR cycles end after "
              f"{[e for e in ends if e <= 64][:6]} epochs")


def earlier_best(run: Path) -> dict:
    """The best validation log loss already logged in an interrupted run (resume must not lose it)."""
    metrics = run / "metrics.csv"
    if not metrics.exists() or not (run / "best.keras").exists():
        return {}
    frame = pd.read_csv(metrics)
    if frame.empty or "val_log_loss" not in frame:
        return {}
    row = frame["val_log_loss"].idxmin()
    return {"best": float(frame.loc[row, "val_log_loss"]), "best_epoch": int(frame.loc[row, "epoch"]) + 1}


def completed_epochs(run: Path, cfg: Config) -> int:
    """Epochs an interrupted run finished, from BackupAndRestore's metadata (0 for a new run)."""
    for stage in ("finetune", "head"):
        meta = run / "backup" / stage / "training_metadata.json"
        if meta.exists():
            return int(json.loads(meta.read_text())["epoch"])
    return head_epochs(cfg) if (run / HEAD_DONE).exists() else 0


def trim_logs(run: Path, epochs: int) -> None:
    """Drop log rows of epochs after the restore point: an epoch cut short is done again."""
    for name in ("metrics.csv", "lr.csv"):
        path = run / name
        if path.exists():
            frame = pd.read_csv(path)
            with atomic_path(path) as tmp:
                frame[frame["epoch"] < epochs].to_csv(tmp, index=False)


def prepare_run(cfg: Config, classes: list[str]) -> Path:
    run, resuming = resume.choose_run(cfg, cfg.train.resume)
    if resuming:
        done = completed_epochs(run, cfg)
        trim_logs(run, done)
        print(f"train: resuming run {run.name} after epoch {done} (same config; train.resume=false starts anew)")
    else:
        save_provenance(cfg, run)
        write_text_atomic(run / "classes.json", json.dumps(classes) + "\n")
        print(f"train: new run {run}")
    return run


def save_val_predictions(cfg: Config, run: Path, index, images) -> None:
    """The best model's TTA-averaged validation probabilities (unclipped), for submit and the report."""
    model, classes = predict.load_run(run)
    probabilities = predict.predict_views(cfg, model, images, list(index.val["path"]), cfg.submit.tta)
    frame = index.val[["path", "label", "class_name"]].copy()
    if probabilities.ndim == 1:
        frame["prob"] = probabilities
    else:
        for i, name in enumerate(classes):
            frame[f"prob_{name}"] = probabilities[:, i]
    with atomic_path(run / "val_predictions.csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_report(run: Path) -> None:
    """Plots and report.html; a failure here is a warning: the trained model is already safe."""
    from kit.report import build_report

    try:
        print(f"train: report {build_report(run)}")
    except Exception as error:  # noqa: BLE001 — the run's outputs matter more than its pictures
        print(f"train: warning: the report could not be built ({error}); retry with `make report`")


def run(cfg: Config) -> Path:
    """Train (or continue) one run; return its folder (runs/<run>/ with best.keras, metrics.csv, ...)."""
    if cfg.train.head_epochs + cfg.train.finetune_epochs < 1 and not cfg.train.precompute:
        raise KitError("nothing to train: set train.head_epochs or train.finetune_epochs above 0")
    from kit.features import precompute_config

    cfg = precompute_config(cfg)  # a precompute run may work at its own image size (saved with the run)
    keras.utils.set_random_seed(cfg.data.seed)  # head init, shuffling, augmentation: a run can be repeated
    data.run(cfg)  # make sure the index is there and up to date (cheap when nothing changed)
    index = data.load_index(cfg)
    run = prepare_run(cfg, index.classes)
    print(f"train: {device.describe()}, dtype policy {device.apply_mixed_precision(cfg)}, "
          f"XLA {'on' if device.jit_compile(cfg) else 'off'}")
    if cfg.train.precompute:  # head only, on cached backbone features (kit/features.py)
        from kit import head

        head.train_head(cfg, index, run)
        write_report(run)
        return run
    started = time.time()
    train_paths, val_paths = list(index.train["path"]), list(index.val["path"])
    train_images = pipeline.load_images(cfg, train_paths, "train")
    val_images = pipeline.load_images(cfg, val_paths, "val")
    n_classes = len(index.classes)
    y_train = label_array(index.train["label"].to_numpy(), n_classes)
    y_val = label_array(index.val["label"].to_numpy(), n_classes)
    streams = (pipeline.training_stream(cfg, train_images, y_train, train_paths),
               pipeline.prediction_stream(cfg, val_images, len(val_paths), val_paths, labels=y_val))
    trainer = Trainer(cfg, run, streams, int(np.ceil(len(train_paths) / cfg.data.batch_size)), n_classes)
    if cfg.train.head_epochs:
        trainer.train_head((train_paths, y_train, val_paths, y_val))
    if cfg.train.finetune_epochs:
        trainer.finetune()
    save_val_predictions(cfg, run, index, val_images)
    summary = {"run": run.name, "best_epoch": trainer.best.best_epoch, "val_log_loss": trainer.best.best,
               "train_images": len(train_paths), "val_images": len(val_paths), "classes": index.classes,
               "optimizer_iterations": int(keras.ops.convert_to_numpy(trainer.model.optimizer.iterations)),
               "tta": list(cfg.submit.tta), "seconds": round(time.time() - started, 1)}
    write_text_atomic(run / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_report(run)
    print(f"train: best epoch {trainer.best.best_epoch} with validation log loss {trainer.best.best:.4f} "
          f"(no TTA, no clipping); model in {run / 'best.keras'}")
    return run
