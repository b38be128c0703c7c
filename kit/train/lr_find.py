"""`make lr-find`: the learning-rate range test (Smith 2015, fast.ai's `lr_find`), as a plot and a rate.

    python -m kit lr-find --config configs/dogs-vs-cats-redux.yaml [--run NAME] [--set lr_find.stage=finetune]

The learning rate grows exponentially, batch by batch, from lr_find.start_lr to lr_find.end_lr over
at most lr_find.steps batches, and the training loss is recorded and exponentially smoothed (with
bias correction, so the first points are not dragged towards zero). The test stops once the
smoothed loss exceeds lr_find.diverge times its minimum. It runs on a throwaway copy of the model:
the caller's weights are left exactly as they were.

Stages: `head` trains the head alone on the cached original-view training features (seconds, see
kit/model/features.py) and suggests train.head_lr; `finetune` trains the unfrozen model (BatchNorm
frozen, the layer-group ratios of train.group_lr_ratios) on the augmented training stream and
suggests train.lr, starting from a run's best.keras with --run.

The suggestion is the rate of steepest descent of the loss before its minimum: where the loss
falls fastest per decade of rate, training makes the most progress per step while staying clear
of the divergence beyond the minimum. It is read off a centred smoothing of the batch losses
(a Gaussian a quarter of a decade wide), not off the EMA: the EMA lags (at 0.98 over 100 steps
its minimum sits about a decade too far right) and is noisy early, and on small logistic heads
its steepest point landed anywhere from 4e-6 to 0.6, against 0.008-0.05 from the centred
curve, where fixed-rate training said 0.01-0.03 was best (tests/train/test_lr_find.py). When the loss never falls
(an already trained model, e.g. `--run` with the finetune stage), the suggestion is a tenth of the
last rate before the loss blew up. The plot shows the batch losses, the EMA, the centred curve,
the suggestion and the minimum. Writes
runs/lr_find/<timestamp>/ lr_find.png, lr_find.csv (lr, loss, smoothed, centred), lr_find.json
(the folder is written under a temporary name, then renamed).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from kit import paths as kit_paths
from kit.config import Config, LrFindConfig
from kit.data import pipeline
from kit.data.dataset import load_index
from kit.data.pipeline import prefetched
from kit.errors import KitError
from kit.fsutil import atomic_path
from kit.model import features
from kit.model.backbones import build_model
from kit.provenance import save_provenance
from kit.runs import RunDir
from kit.train.recipe import compile_model, label_array, optimizer, unfreeze

SKIP_START = 0.1  # the first 10% of points (rates far too low to matter) are not candidates
SIGMA_DECADES = 0.25  # the centred smoothing's width, in decades of learning rate
RATE_KEYS = {"head": "train.head_lr", "finetune": "train.lr"}


class LRRangeTest(keras.callbacks.Callback):
    """Set the optimizer's rate before each batch, record the batch loss after it, stop on divergence."""

    def __init__(self, start_lr: float, end_lr: float, steps: int, smoothing: float = 0.98, diverge: float = 4.0):
        super().__init__()
        self.start_lr, self.end_lr, self.steps = start_lr, end_lr, steps
        self.smoothing, self.diverge = smoothing, diverge
        self.lrs, self.losses, self.smoothed = [], [], []
        self.diverged, self._average, self._best = False, 0.0, math.inf

    def rate(self, step: int) -> float:
        return self.start_lr * (self.end_lr / self.start_lr) ** (step / max(self.steps - 1, 1))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.rate(len(self.lrs))

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {})["loss"])
        self.model.reset_metrics()  # Keras logs the epoch's running mean: reset it so the next is one batch
        step = len(self.lrs)
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** (step + 1))  # bias correction
        self.lrs.append(self.rate(step))
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        # A grace period: the first few smoothed values are nearly raw batch losses, too noisy to judge.
        if not math.isfinite(loss) or (step >= self.steps * SKIP_START and smoothed > self.diverge * self._best):
            self.diverged, self.model.stop_training = True, True
        self._best = min(self._best, smoothed)
        if step + 1 >= self.steps:
            self.model.stop_training = True

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed})


def throwaway_copy(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights: training it leaves `model` untouched."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def range_test(model: keras.Model, dataset, compile_fn, settings: LrFindConfig) -> tuple[pd.DataFrame, bool]:
    """Run the range test on a copy of `model`; `dataset` must yield at least settings.steps batches.

    `compile_fn(copy)` compiles the copy with an optimizer whose learning rate is a plain float.
    Returns the (lr, loss, smoothed) frame and whether the loss diverged before the last step.
    """
    trial = throwaway_copy(model)
    compile_fn(trial)
    test = LRRangeTest(settings.start_lr, settings.end_lr, settings.steps, settings.smoothing, settings.diverge)
    trial.fit(dataset, epochs=1, steps_per_epoch=settings.steps, callbacks=[test], verbose=0, shuffle=False)
    frame = test.frame()
    if len(frame) < 3:
        raise KitError(f"the loss diverged after {len(frame)} steps of the range test: lower lr_find.start_lr")
    return frame, test.diverged


def centred(losses: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over neighbouring steps on both sides: no lag, unlike the running EMA."""
    steps = np.arange(len(losses))
    weights = np.exp(-0.5 * ((steps[:, None] - steps[None, :]) / sigma) ** 2)
    weights *= np.isfinite(losses)[None, :]  # a NaN batch loss gets no weight
    return weights @ np.nan_to_num(losses, nan=0.0, posinf=0.0) / np.maximum(weights.sum(axis=1), 1e-12)


def centred_curve(frame: pd.DataFrame) -> np.ndarray:
    """The batch losses smoothed over a quarter of a decade of rate on each side (at least 2 steps)."""
    lr = frame["lr"].to_numpy()
    steps_per_decade = (len(lr) - 1) / max(np.log10(lr[-1] / lr[0]), 1e-12)
    return centred(frame["loss"].to_numpy(dtype=float), sigma=max(2.0, SIGMA_DECADES * steps_per_decade))


def suggest(frame: pd.DataFrame, diverged: bool = False) -> dict:
    """The rate of steepest descent of the centred loss curve before its minimum (and the minimum's rate).

    The EMA lags: at 0.98 over 100 steps its minimum sits about a decade past the real one and its
    slope is noisy while the bias correction still matters, so the suggestion uses the centred curve.
    """
    curve = frame["centred"].to_numpy() if "centred" in frame else centred_curve(frame)
    lr, log_lr = frame["lr"].to_numpy(), np.log10(frame["lr"].to_numpy())
    lowest = int(np.argmin(curve))
    start = min(int(len(frame) * SKIP_START), max(lowest - 2, 0))
    if lowest - start < 2:  # no descent (e.g. an already trained model): a tenth of the last stable rate
        stable = max(len(frame) - (2 if diverged else 1), 0)  # a diverged test's last step is the bad one
        return {"lr": float(lr[stable]) / 10, "method": "no descent: last stable rate / 10",
                "min_lr": float(lr[lowest]), "min_loss": float(curve[lowest])}
    slope = np.gradient(curve[start:lowest + 1], log_lr[start:lowest + 1])
    steepest = start + int(np.argmin(slope))
    return {"lr": float(lr[steepest]), "method": "steepest descent", "loss": float(curve[steepest]),
            "slope_per_decade": float(slope[steepest - start]), "min_lr": float(lr[lowest]),
            "min_loss": float(curve[lowest])}


def plot(frame: pd.DataFrame, suggestion: dict, path: Path, title: str) -> None:
    """Loss against rate (log x), raw and smoothed, the suggested rate and the minimum marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(frame["lr"], frame["loss"], color="0.75", lw=1, label="batch loss")
    ax.plot(frame["lr"], frame["smoothed"], color="C0", lw=2, label="smoothed loss (EMA: the divergence check)")
    if "centred" in frame:
        ax.plot(frame["lr"], frame["centred"], color="C1", lw=1.5, label="centred smoothing (the suggestion)")
    ax.axvline(suggestion["lr"], color="C3", ls="--", label=f"suggested {suggestion['lr']:.2e} ({suggestion['method']})")
    ax.axvline(suggestion["min_lr"], color="0.4", ls=":", label=f"minimum at {suggestion['min_lr']:.2e}")
    ax.set_xscale("log")
    curves = frame[[c for c in ("smoothed", "centred") if c in frame]].to_numpy(dtype=float)
    curves = curves[np.isfinite(curves).all(axis=1)]
    low, high = float(curves.min()), float(curves[: max(len(curves) // 2, 1)].max())
    ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.3 * (high - low + 1e-9))  # the divergence off the top
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def write_outputs(cfg: Config, frame: pd.DataFrame, suggestion: dict, meta: dict) -> Path:
    """runs/lr_find/<timestamp>/ with lr_find.png, lr_find.csv, lr_find.json, config; returns the PNG."""
    base = kit_paths.runs_dir(cfg) / "lr_find"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = base / stamp, 2
    while folder.exists():
        folder, n = base / f"{stamp}-{n}", n + 1
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        frame.to_csv(tmp / "lr_find.csv", index=False)
        plot(frame, suggestion, tmp / "lr_find.png", f"lr-find ({meta['stage']}): {meta['rate_key']}")
        (tmp / "lr_find.json").write_text(json.dumps({**meta, "suggestion": suggestion}, indent=2) + "\n")
        save_provenance(cfg, tmp)
    return folder / "lr_find.png"


def _head_setup(cfg: Config, model: keras.Model, index):
    """The head (on the model's own layers) and a repeating stream of original-view training features."""
    import tensorflow as tf

    n_classes = len(index.classes)
    x = features.features(cfg, model, list(index.train["path"]), "train", "original")
    y = label_array(index.train["label"].to_numpy(), n_classes)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=cfg.data.seed).repeat()
    ds = prefetched(ds.batch(cfg.data.batch_size))
    return features.head_model(model), ds, lambda m: compile_model(m, optimizer(cfg, cfg.lr_find.start_lr),
                                                                   cfg, n_classes)


def _finetune_setup(cfg: Config, model: keras.Model, index):
    """The whole model, unfrozen but BatchNorm, with train.group_lr_ratios, on the augmented training stream."""
    n_classes = len(index.classes)
    paths = list(index.train["path"])
    images = pipeline.load_images(cfg, paths, "train")
    labels = label_array(index.train["label"].to_numpy(), n_classes)
    ds = pipeline.training_stream(cfg, images, labels, paths).repeat()

    def compile_fn(trial: keras.Model) -> None:  # the train stage's own stage-2 setup, at a plain rate
        compile_model(trial, optimizer(cfg, cfg.lr_find.start_lr, unfreeze(cfg, trial)), cfg, n_classes)
    return model, ds, compile_fn


def _model(cfg: Config, run_name: str | None, classes: list[str]) -> tuple[keras.Model, str | None]:
    if not run_name:
        return build_model(cfg, len(classes)), None
    run_dir = RunDir.find(cfg, run_name)
    model, run_classes = run_dir.load_model()
    if run_classes != classes:
        raise KitError(f"run {run_dir.name} was trained on classes {run_classes}, the index has {classes}: "
                       f"pick a run of this dataset with --run")
    return model, str(run_dir.path)


def run(cfg: Config, run_name: str | None = None) -> Path:
    """Run the range test for cfg.lr_find.stage; print the suggestion; return the PNG's path.

    The CLI runs the data stage first, as for `make train`.
    """
    s = cfg.lr_find
    if s.stage == "head":
        cfg = features.run_config(cfg)  # the features a head-only run would train on
    index = load_index(cfg)
    model, run_folder = _model(cfg, run_name, index.classes)
    setup = _head_setup if s.stage == "head" else _finetune_setup
    trainable, dataset, compile_fn = setup(cfg, model, index)
    started = time.time()
    frame, diverged = range_test(trainable, dataset, compile_fn, s)
    frame["centred"] = centred_curve(frame)
    suggestion = suggest(frame, diverged)
    meta = {"stage": s.stage, "rate_key": RATE_KEYS[s.stage], "run": run_folder, "steps": len(frame),
            "diverged": diverged, "seconds": round(time.time() - started, 1), **dataclasses.asdict(s)}
    png = write_outputs(cfg, frame, suggestion, meta)
    print(f"lr-find ({s.stage}): {len(frame)} steps{', stopped at divergence' if diverged else ''}; loss lowest at "
          f"{suggestion['min_lr']:.2e}; suggested {RATE_KEYS[s.stage]}={suggestion['lr']:.2e} ({suggestion['method']})")
    print(f"lr-find: plot {png}")
    return png
