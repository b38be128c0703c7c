"""train.folds: k heads on k folds of the training images, each epoch chosen on the fold it never saw (an image's
augmented passes included), averaged into one head; out-of-fold predictions score every training image."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.config import load_config
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.model import features
from kit.runs import RunDir
from kit.train import fit, folds
from tests.model.test_features import fixed_weights


@pytest.fixture
def fold_run(indexed, competition_zip, tmp_path):
    return indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                   "train.head=features", "train.head_epochs=3", "train.finetune_epochs=0", "train.feature_passes=1",
                   "train.folds=3", "train.run_name=folds")


def test_each_head_is_chosen_on_images_it_never_saw_and_the_average_is_the_model(fold_run, monkeypatch):
    index, seen = load_index(fold_run), []
    real = folds.fit_head

    def spy(cfg, model, train_xy, val_xy, run_dir, n_classes, **kw):
        best = real(cfg, model, train_xy, val_xy, run_dir, n_classes, **kw)
        seen.append((train_xy[0].copy(), val_xy[0].copy(), [w.copy() for w in features.head_model(model).get_weights()]))
        return best

    monkeypatch.setattr(folds, "fit_head", spy)
    run_dir = RunDir(fit.run(fold_run))
    assert len(seen) == 3
    held_rows = 0
    for trained, held, _ in seen:
        held_rows += len(held)
        assert len(trained) == 2 * (len(index.train) - len(held))  # original + augmented pass of the others
        for row in held:  # neither the held image's features nor its augmented pass were trained on
            assert not np.isclose(trained, row).all(axis=1).any()
    assert held_rows == len(index.train)
    model, _ = run_dir.load_model()
    averaged = [np.mean(layer, axis=0) for layer in zip(*(w for _, _, w in seen))]
    for got, want in zip(features.head_model(model).get_weights(), averaged):
        np.testing.assert_allclose(got, want, atol=1e-6)
    oof = pd.read_csv(run_dir.oof_predictions)
    assert list(oof["path"]) == list(index.train["path"]) and oof["prob_dog"].between(0, 1).all()
    summary = json.loads(run_dir.summary_file.read_text())
    assert summary["folds"] == 3 and len(summary["fold_epochs"]) == 3
    assert list(pd.read_csv(run_dir.metrics)["epoch"]) == [0, 1, 2]  # the folds' mean learning curve


def test_folds_need_the_head_on_features_and_two_or_more():
    for overrides in (["train.folds=1"], ["train.folds=3", "train.head=images"]):
        with pytest.raises(KitError, match="train.folds=.* use 2 or more with train.head=features"):
            load_config(None, overrides)
