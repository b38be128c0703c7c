"""The training recipe's parts that the train stage and lr-find share: targets, loss and metrics, optimizers.

    from kit.train.recipe import compile_model, optimizer, unfreeze
    multipliers = unfreeze(cfg, model)                    # stage 2: backbone unfrozen, rate per layer group
    compile_model(model, optimizer(cfg, schedule, multipliers), cfg, n_classes)

One place decides "AdamW when train.weight_decay is set, else Adam", the loss (binary or categorical
cross-entropy with train.label_smoothing), the metrics every epoch logs (accuracy, log_loss) and XLA.
"""
from __future__ import annotations

import keras
import numpy as np

from kit.config import Config
from kit.model import device
from kit.model.backbones import layer_groups, set_backbone_trainable
from kit.model.optim import group_multipliers, make_optimizer


def label_array(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Binary: (n, 1) float targets for P(class 1); more classes: one-hot rows (label smoothing works)."""
    if n_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[labels]


def compile_model(model: keras.Model, chosen_optimizer, cfg: Config, n_classes: int) -> None:
    """Loss, metrics (accuracy, log_loss: what metrics.csv logs and the best epoch is chosen by) and XLA."""
    smoothing = cfg.train.label_smoothing
    # Under DataParallel a short batch is padded at sample weight 0 (kit/model/device.py): the mean over the real
    # rows only, so its step is the one a single device takes.
    padded = device.data_parallel_devices() > 1
    reduction = "mean_with_sample_weight" if padded else "sum_over_batch_size"
    if n_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing, reduction=reduction)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.BinaryCrossentropy(name="log_loss")]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing, reduction=reduction)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.CategoricalCrossentropy(name="log_loss")]
    # ... and the metrics weighted too (Keras' `metrics` ignore sample weights, `weighted_metrics` use them)
    by_kind = {"weighted_metrics" if padded else "metrics": metrics}
    model.compile(optimizer=chosen_optimizer, loss=loss, **by_kind, jit_compile=device.jit_compile(cfg))


def optimizer(cfg: Config, learning_rate, multipliers: dict[str, float] | None = None) -> keras.optimizers.Optimizer:
    """AdamW when train.weight_decay is set, else Adam; each variable's step scaled by its group's multiplier."""
    t = cfg.train
    return make_optimizer("adamw" if t.weight_decay else "adam", learning_rate, multipliers or {}, t.weight_decay)


def unfreeze(cfg: Config, model: keras.Model) -> dict[str, float]:
    """Unfreeze the backbone (BatchNorm kept frozen if model.freeze_batchnorm); return the per-variable
    learning-rate multipliers of train.group_lr_ratios over the model's layer groups. Recompile after."""
    ratios = cfg.train.group_lr_ratios
    set_backbone_trainable(model, True, freeze_batchnorm=cfg.model.freeze_batchnorm)
    return group_multipliers(layer_groups(model, len(ratios)), ratios)
