"""Calibration chosen out of fold: temperature softens an over-confident model, a calibrated one keeps T ~ 1,
the floor keeps a certain mistake finite, and a backwards model is not rescued (submit's direction check
still sees it)."""
from __future__ import annotations

import numpy as np
import pytest

from kit.errors import KitError
from kit.model import calibrate
from kit.model.metrics import log_loss


def binary_predictions(n: int = 600, sharpen: float = 1.0, seed: int = 0):
    """Labels drawn from known probabilities, which are then reported sharpened (logit x `sharpen`)."""
    rng = np.random.default_rng(seed)
    true_p = 1 / (1 + np.exp(-rng.normal(0, 3, n)))
    labels = (rng.random(n) < true_p).astype(int)
    logit = np.log(true_p / (1 - true_p)) * sharpen
    return labels, 1 / (1 + np.exp(-logit))


def test_an_over_confident_model_is_softened_and_scored_out_of_fold():
    labels, p = binary_predictions(sharpen=3.0)
    cal = calibrate.choose("auto", labels, p, floor=1e-4, seed=0)
    assert cal.method in ("temperature", "clip") and cal.folds == 5
    assert 2.0 < cal.fitted["temperature"]["temperature"] < 4.5  # the sharpening undone, roughly
    assert cal.out_of_fold[cal.method] < cal.out_of_fold["none"] * 0.8
    assert cal.out_of_fold["temperature"] == pytest.approx(log_loss(labels, cal.held_out if cal.method ==
                                                                    "temperature" else calibrate.out_of_fold(
        "temperature", labels, p, 1e-4, calibrate.fold_ids(labels, 5, 0))))
    assert cal.held_out.shape == p.shape and not np.allclose(cal.held_out, cal.apply(p))  # fits differ per fold


def test_a_calibrated_model_keeps_a_temperature_near_one():
    labels, p = binary_predictions(n=4000, sharpen=1.0, seed=1)
    assert calibrate.fit("temperature", labels, p, 1e-4)["temperature"] == pytest.approx(1.0, abs=0.12)


def test_the_floor_keeps_a_certain_mistake_finite_and_applies_after_every_method():
    labels = np.array([0, 1, 0, 1] * 5)
    p = np.where(labels == 1, 1.0, 0.0)
    p[0] = 1.0  # one certain mistake
    for method in calibrate.METHODS:
        out = calibrate.transform(method, calibrate.fit(method, labels, p, 1e-4), p, 1e-4)
        assert out.min() >= 1e-4 and out.max() <= 1 - 1e-4 and np.isfinite(log_loss(labels, out))


def test_a_backwards_model_is_not_rescued():
    labels, p = binary_predictions(sharpen=1.0)
    cal = calibrate.choose("auto", labels, 1 - p, floor=1e-4)  # P(cat) in the label column
    assert min(cal.out_of_fold.values()) > np.log(2)


def test_several_classes_share_one_temperature_on_the_softmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (900, 3))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in true])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    cal = calibrate.choose("temperature", labels, sharp, floor=1e-4)
    assert cal.method == "temperature" and cal.fitted["temperature"]["temperature"] > 2
    out = cal.apply(sharp)
    assert out.shape == (900, 3) and np.allclose(out.sum(1), 1) and log_loss(labels, out) < log_loss(labels, sharp)


def test_too_few_images_per_class_are_not_calibrated_and_a_bad_setting_is_refused():
    cal = calibrate.choose("auto", [0, 1, 1, 1], [0.2, 0.7, 0.9, 0.8], floor=1e-4)
    assert cal.method == "none" and cal.folds == 0 and cal.held_out is None
    with pytest.raises(KitError, match="submit.calibrate must be one of auto, none, clip, temperature"):
        calibrate.choose("platt", [0, 1], [0.2, 0.7], floor=1e-4)


def test_the_interval_holds_the_score_and_narrows_with_more_images():
    labels, p = binary_predictions(n=600)
    low, high = calibrate.interval(labels, p)
    assert low < log_loss(labels, p) < high
    labels4, p4 = binary_predictions(n=6000)
    low4, high4 = calibrate.interval(labels4, p4)
    assert (high4 - low4) < (high - low) * 0.6
