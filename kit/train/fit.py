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

More than one device (train.distribute: auto | none | mirrored | data_parallel, chosen by
kit.model.device.strategy): `auto` is MirroredStrategy with two or more GPUs on TensorFlow (Kaggle's T4 x2),
keras.distribution.DataParallel with two or more devices on JAX (Kaggle's TPU v5e-8), one device otherwise. The model, its
optimizers (with their layer-group rates), metrics and checkpoints are built inside the strategy's scope
(Trainer: build_model and every compile). data.batch_size is the GLOBAL batch: each of n replicas gets
data.batch_size / n, so steps per epoch, the SGDR schedule, lr.csv and a resume are the same on one device or
two (raise data.batch_size to use a second GPU's memory); the start of training logs both ("batch 16 per
replica x 2 replicas = 32 global"). The head on cached features (kit/train/head.py) runs under the same scope.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from kit import timings
from kit.config import Config, check_consistency
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.fsutil import write_text_atomic
from kit.plan.estimate import print_plan, took_line
from kit.model import backend, calibrate, device, engine, features, inference
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.train.members import check_members, distinct_members, train_members
from kit.train.refit import refit
from kit.train.trainer import Trainer


def check_plan(cfg: Config, index) -> None:
    """Refuse a run that cannot work, before any image is read."""
    check_consistency(cfg)  # the rules between keys load_config checks, again for a config changed since
    check_members(cfg)
    device.check_choice(cfg)
    engine.engine_name(cfg)  # train.feature_engine=tflite is refused on JAX here, not after a run folder exists
    if len(index.val) == 0:
        raise KitError("training keeps the best epoch by validation log loss: set data.val_fraction above 0")


def prepare_run(cfg: Config, index, run_dir: RunDir, resuming: bool) -> None:
    """Continue an unfinished run (its logs trimmed to the last completed epoch) or start one anew."""
    if resuming:
        check_same_split(run_dir, index)
        note_backend_change(run_dir)
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


def note_backend_change(run_dir: RunDir) -> None:
    """A run continues on another Keras backend: its checkpoints and backups are Keras files, read the same by
    both (nothing needs refusing); the note says where its epochs came from. It records the first backend."""
    try:
        started_on = json.loads(run_dir.versions_file.read_text()).get("keras_backend") or "tensorflow"
    except (OSError, ValueError):
        return
    if started_on != backend.name():
        print(f"train: run {run_dir.name} started on the {started_on} backend and continues on {backend.name()} "
              f"(its checkpoints read the same on both)")


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
               "folds": cfg.train.folds, "fold_epochs": trainer.fold_epochs, "logistic_c": trainer.logistic_c,
               "members": distinct_members(cfg),
               "refit": features.refits(cfg),
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


def train_on_split(cfg: Config, index, run_dir: RunDir, resuming: bool, steps: list, strategy, started: float) -> dict:
    """Both stages on the training images, chosen and scored on the validation images; summary.json."""
    prepare_run(cfg, index, run_dir, resuming)
    if steps:
        write_text_atomic(run_dir.plan_file, json.dumps(steps, indent=2) + "\n")
    with timings.step("set-up"):
        trainer = Trainer(cfg, run_dir, index, strategy)
    if cfg.train.head_epochs:
        trainer.train_head()
    if cfg.train.finetune_epochs:
        trainer.finetune()
    return finish(cfg, trainer, started)


def write_report(run_dir: RunDir) -> None:
    """Plots and report.html; a failure here is a warning: the trained model is already safe."""
    from kit.report.html import build_report

    try:
        print(f"train: report {build_report(run_dir)}")
    except Exception as error:  # noqa: BLE001 — the run's outputs matter more than its pictures
        print(f"train: warning: the report could not be built ({error}); retry with `make report`")


def run(cfg: Config) -> Path:
    """Train (or continue) one run; return its folder (runs/<run>/ with best.keras, metrics.csv, ...)."""
    given, cfg = cfg, features.run_config(cfg)  # a head-only run may work at its own image size (saved with the run)
    backend.check_supported()
    index = load_index(cfg)
    check_plan(cfg, index)
    timings.reset()
    steps = print_plan(cfg, index, "train", features.is_head_only(cfg))  # probes before the seed is set
    keras.utils.set_random_seed(cfg.data.seed)  # head init, shuffling, augmentation: a run can be repeated
    run_dir, resuming = RunDir.for_training(cfg)
    with run_dir.lock.held(f"run {run_dir.name}"):  # one process at a time trains a run
        started = time.time()
        strategy = device.strategy(cfg)
        print(f"train: {device.describe(strategy)}, dtype policy {device.apply_mixed_precision(cfg)}, "
              f"XLA {'on' if device.jit_compile(cfg) else 'off'}")
        print(f"train: {device.batch_line(cfg.data.batch_size, strategy)}")
        if backend.name() == "jax" and device.accelerator() is None:
            print("train: note: JAX on a CPU fine-tunes MobileNetV2 15-20x slower than TensorFlow here (BENCHMARKS.md, "
                  "3b: XLA's CPU convolutions): it is the TPU's backend; KERAS_BACKEND=tensorflow is the CPU's")
        continued = run_dir.is_finished()
        if continued:  # trained on its split, its refit or members interrupted: only they are left
            print(f"train: run {run_dir.name} is trained on its split; continuing its refit / members")
            summary = run_dir.summary()
        else:
            summary = train_on_split(cfg, index, run_dir, resuming, steps, strategy, started)
        if features.refits(cfg):
            refit(cfg, run_dir, index, strategy, summary)
    write_report(run_dir)
    timings.close()  # saving, writing and the report: the plan's "writing" step
    if not continued:  # the split's own record stays
        write_text_atomic(run_dir.timings_file, json.dumps(timings.snapshot(), indent=2) + "\n")
    print(f"train: {took_line(timings.elapsed(), steps)}")
    print(f"train: best epoch {summary['best_epoch']} with validation log loss {summary['val_log_loss']:.4f} "
          f"({summary['val_log_loss_tta']:.4f} with TTA {list(cfg.submit.tta)}, no clipping; "
          f"{summary['val_log_loss_calibrated']:.4f} calibrated ({summary['calibration']['method']}), out of fold); "
          f"model in {run_dir.best_model}")
    # each a run of its own, after this one (its lock released), from the config as given: its own run_config
    # decides its size, pooling and submit.tta=[auto], not this run's
    train_members(given, run_dir, run)
    return run_dir.path
