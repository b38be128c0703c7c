"""Real photos and real ImageNet weights, when CI provides them (see .ci/run): a reduced run.

A 300-image subset at 144 px (Keras loads its 224-px MobileNetV2 weights for sizes it has no file
for) keeps this around a minute on 2 cores while still being the real recipe end to end: the head
to convergence on cached features, then a fine-tuning epoch, then a checked submission.
"""
import json

import pandas as pd
import pytest

from kit import download, submit, train

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_reduced_end_to_end_on_real_photos(cfg, real_competition_zip, keras_home):
    for key, value in {"image_size": 144, "limit_per_class": 150, "batch_size": 32}.items():
        setattr(cfg.data, key, value)
    cfg.train.head_epochs, cfg.train.finetune_epochs, cfg.train.lr = 1, 1, 3e-4
    cfg.train.head_on_features, cfg.train.head_precompute_epochs = True, 20
    cfg.name = "real"
    download.run(cfg, source=str(real_competition_zip))
    run = train.run(cfg)
    summary = json.loads((run / "summary.json").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val_accuracy"].max() > 0.9  # chance is 0.5; frozen ImageNet features alone give ~0.97
    assert summary["val_log_loss"] < 0.3

    submit.run(cfg)
    sub = pd.read_csv(cfg.paths.submission)
    assert len(sub) == 2000 and list(sub.columns) == ["id", "label"]
    meta = json.loads(open(cfg.paths.submission + ".json").read())
    assert meta["val_accuracy"] > 0.9
