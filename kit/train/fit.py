"""`make train`: one training path, fast.ai lesson-1 style: the head first, then fine-tuning; keep the best epoch.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml [--set train.finetune_epochs=7]

Stage 1 (train.head_epochs, backbone frozen): the new head learns, on augmented images
(train.head=images) or on cached backbone features (train.head=features, kit/train/head.py: seconds).
Stage 2 (train.finetune_epochs): the backbone is unfrozen (its BatchNorm kept in inference mode), its
layers split into groups that learn at train.lr x train.group_lr_ratios, under cosine annealing with
warm restarts (SGDR: cycles of train.cycle_epochs, each train.cycle_mult times longer).
A head-only run on features (train.finetune_epochs=0) is fast.ai's precompute=True.

Each epoch logs training loss, validation log loss and accuracy to metrics.csv; the epoch with the
lowest validation log loss is kept as best.keras. A run killed midway continues from its last completed
epoch when started again with the same config (kit/runs.py). The CLI runs the data stage first.

More than one device (train.distribute: auto | none | mirrored, chosen by kit.model.device.strategy): `auto`
is MirroredStrategy with two or more GPUs (Kaggle's T4 x2), the default strategy otherwise. The model, its
optimizers (with their layer-group rates), metrics and checkpoints are built inside the strategy's scope
(Trainer: build_model and every compile). data.batch_size is the GLOBAL batch: each of n replicas gets
data.batch_size / n, so steps per epoch, the SGDR schedule, lr.csv and a resume are the same on one device or
two (raise data.batch_size to use a second GPU's memory); the start of training logs both ("batch 16 per
replica x 2 replicas = 32 global"). The head on cached features (kit/train/head.py) runs under the same scope.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kit import timings
from kit.config import Config, check_consistency
from kit.data import pipeline
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.fsutil import atomic_path, write_text_atomic
from kit.plan.estimate import print_plan, took_line
from kit.model import calibrate, device, features, inference
from kit.model.backbones import build_model, set_backbone_trainable
from kit.model.metrics import log_loss
from kit.model.optim import epochs_for_cycles, sgdr_schedule
from kit.runs import RunDir
from kit.train.callbacks import BestEpoch, CycleSnapshots, EpochExtras, ProgressLines, StepLearningRate
from kit.train.folds import fit_fold_heads
from kit.train.head import feature_arrays, fit_head
from kit.train.recipe import compile_model, label_array, optimizer, unfreeze


class Trainer:
    """One run's moving parts: its folder, the index, the model, the best epoch; image streams when needed."""

    def __init__(self, cfg: Config, run_dir: RunDir, index, strategy=None):
        import tensorflow as tf

        self.cfg, self.run_dir, self.index = cfg, run_dir, index
        self.n_classes = len(index.classes)
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():  # its variables are mirrored under a MirroredStrategy
            self.model = build_model(cfg, self.n_classes)
        self.best = BestEpoch(run_dir.best_model, **run_dir.earlier_best())
        self.fold_epochs = None  # train.folds: each fold head's best epoch
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
            callbacks.insert(-1, CycleSnapshots(run_dir.snapshot, cycle_end_epochs(self.cfg)))
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


def check_plan(cfg: Config, index) -> None:
    """Refuse a run that cannot work, before any image is read."""
    check_consistency(cfg)  # the rules between keys load_config checks, again for a config changed since
    if len(index.val) == 0:
        raise KitError("training keeps the best epoch by validation log loss: set data.val_fraction above 0")


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


def prepare_run(cfg: Config, index, run_dir: RunDir, resuming: bool) -> None:
    """Continue an unfinished run (its logs trimmed to the last completed epoch) or start one anew."""
    if resuming:
        check_same_split(run_dir, index)
        done = run_dir.completed_epochs(cfg.train.head_epochs)
        run_dir.trim_logs(done)
        print(f"train: resuming run {run_dir.name} after epoch {done} (same config; train.resume=false starts anew)")
    else:
        run_dir.discard()  # what a run that never completed an epoch left; nothing when the folder is new
        run_dir.start(cfg, index.classes, index.val)
        print(f"train: new run {run_dir.path}")


def check_same_split(run_dir: RunDir, index) -> None:
    """A run is resumed only on the validation images it started with: its best epoch is chosen on them."""
    saved = run_dir.validation_split()
    if saved is None:
        return
    before, now = set(saved["path"]), set(index.val["path"])
    if before != now:
        raise KitError(f"cannot resume run {run_dir.name}: its validation images changed since it started "
                       f"({len(now - before)} added, {len(before - now)} gone; images added, removed or "
                       f"quarantined): start a new run with --set train.resume=false")


def finish(cfg: Config, trainer: Trainer, started: float) -> dict:
    """The best model's TTA-averaged validation probabilities (unclipped) and summary.json, written last."""
    run_dir, index = trainer.run_dir, trainer.index
    model, classes = run_dir.load_model()
    val_paths = list(index.val["path"])
    probabilities = inference.predict_split(cfg, model, val_paths, "val", features.is_head_only(cfg))
    run_dir.write_val_predictions(inference.val_predictions_frame(index.val, probabilities, classes))
    labels = index.val["label"].to_numpy()
    summary = {"run": run_dir.name, "best_epoch": trainer.best.best_epoch, "val_log_loss": trainer.best.best,
               "val_log_loss_tta": log_loss(labels, probabilities),
               "val_accuracy_tta": float(np.mean(inference.class_table(probabilities, len(classes)).argmax(1) == labels)),
               **calibrated_score(cfg, labels, probabilities),
               "train_images": len(index.train), "val_images": len(val_paths), "classes": classes,
               "head": cfg.train.head, "head_epochs": cfg.train.head_epochs,
               "finetune_epochs": cfg.train.finetune_epochs, "feature_passes": cfg.train.feature_passes,
               "folds": cfg.train.folds, "fold_epochs": trainer.fold_epochs,
               "image_size": cfg.data.image_size, "tta": list(cfg.submit.tta),
               "seconds": round(time.time() - started, 1)}
    if getattr(trainer.model, "optimizer", None) is not None:  # trained on images: its steps, resumed ones too
        summary["optimizer_iterations"] = int(keras.ops.convert_to_numpy(trainer.model.optimizer.iterations))
    run_dir.finish(summary)
    return summary


def calibrated_score(cfg: Config, labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The validation log loss after submit.calibrate's choice, out of fold (kit/model/calibrate.py): what
    `make submit` will print for this run."""
    cal = calibrate.choose(cfg.submit.calibrate, labels, probabilities, cfg.submit.clip, cfg.data.seed)
    return {"val_log_loss_calibrated": log_loss(labels, cal.honest(probabilities)), "calibration": cal.as_dict()}


def write_report(run_dir: RunDir) -> None:
    """Plots and report.html; a failure here is a warning: the trained model is already safe."""
    from kit.report.html import build_report

    try:
        print(f"train: report {build_report(run_dir)}")
    except Exception as error:  # noqa: BLE001 — the run's outputs matter more than its pictures
        print(f"train: warning: the report could not be built ({error}); retry with `make report`")


def run(cfg: Config) -> Path:
    """Train (or continue) one run; return its folder (runs/<run>/ with best.keras, metrics.csv, ...)."""
    cfg = features.run_config(cfg)  # a head-only run may work at its own image size (saved with the run)
    index = load_index(cfg)
    check_plan(cfg, index)
    timings.reset()
    steps = print_plan(cfg, index, "train", features.is_head_only(cfg))  # probes before the seed is set
    keras.utils.set_random_seed(cfg.data.seed)  # head init, shuffling, augmentation: a run can be repeated
    run_dir, resuming = RunDir.for_training(cfg)
    with run_dir.lock.held(f"run {run_dir.name}"):  # one process at a time trains a run
        started = time.time()
        prepare_run(cfg, index, run_dir, resuming)
        if steps:
            write_text_atomic(run_dir.plan_file, json.dumps(steps, indent=2) + "\n")
        strategy = device.strategy(cfg)
        print(f"train: {device.describe(strategy)}, dtype policy {device.apply_mixed_precision(cfg)}, "
              f"XLA {'on' if device.jit_compile(cfg) else 'off'}")
        print(f"train: {device.batch_line(cfg.data.batch_size, strategy)}")
        with timings.step("set-up"):
            trainer = Trainer(cfg, run_dir, index, strategy)
        if cfg.train.head_epochs:
            trainer.train_head()
        if cfg.train.finetune_epochs:
            trainer.finetune()
        summary = finish(cfg, trainer, started)
    write_report(run_dir)
    timings.close()  # saving, writing and the report: the plan's "writing" step
    write_text_atomic(run_dir.timings_file, json.dumps(timings.snapshot(), indent=2) + "\n")
    print(f"train: {took_line(timings.elapsed(), steps)}")
    print(f"train: best epoch {summary['best_epoch']} with validation log loss {summary['val_log_loss']:.4f} "
          f"({summary['val_log_loss_tta']:.4f} with TTA {list(cfg.submit.tta)}, no clipping; "
          f"{summary['val_log_loss_calibrated']:.4f} calibrated ({summary['calibration']['method']}), out of fold); "
          f"model in {run_dir.best_model}")
    return run_dir.path
