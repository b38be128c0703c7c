"""Snapshot ensembles: fine-tuning keeps the weights at each SGDR cycle end; submit averages the snapshots the
validation images choose (out of fold), or best.keras; a bad choice is one line and nothing is written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kit import paths
from kit.config import load_config
from kit.errors import KitError
from kit.model import ensemble
from kit.runs import RunDir
from kit.submit import submit
from kit.train import fit
from kit.train.trainer import cycle_end_epochs
from tests.submit.test_submit import outputs


@pytest.mark.parametrize("overrides, ends", [
    (["train.head_epochs=2", "train.finetune_epochs=7"], [3, 5, 9]),  # 1 + 2 + 4
    (["train.head_epochs=1", "train.finetune_epochs=4"], [2, 4, 5]),  # the last epoch too, mid-cycle
    (["train.head_epochs=0", "train.finetune_epochs=3", "train.cycle_mult=1", "train.cycle_epochs=1"], [1, 2, 3]),
])
def test_cycle_ends_are_counted_from_the_first_epoch(overrides, ends):
    assert cycle_end_epochs(load_config(None, overrides)) == ends


def test_choosing_picks_the_better_average_and_scores_it_out_of_fold():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    good = np.where(labels == 1, 0.9, 0.1) + rng.normal(0, 0.05, 400)
    noisy = np.clip(good + rng.normal(0, 0.3, 400), 0.01, 0.99)
    cands = ensemble.candidates([(3, noisy), (5, np.clip(good, 0.01, 0.99))])
    assert set(cands) == {"last_1", "last_2"}
    name, scores, oof = ensemble.choose(labels, cands, 1e-4)
    assert name == "last_1" and scores["last_1"] < scores["last_2"]
    np.testing.assert_allclose(oof, np.clip(cands["last_1"], 1e-4, 1 - 1e-4))  # the same winner in every fold
    with pytest.raises(KitError, match="submit.snapshot_k=5 snapshots but the run keeps 2"):
        ensemble.wanted("last_k", 5, 2)


def test_a_fine_tuned_run_keeps_its_cycle_end_snapshots_and_submit_averages_them(indexed, competition_zip,
                                                                               monkeypatch):
    from kit.model.engine import weights_digest
    from kit.submit import snapshots

    best_digest, best_nudge = [], [-0.099]

    def fake(cfg, model, images, name, from_features=False):
        """P(dog) off the file name, nudged by the weights: each snapshot predicts a little differently, and
        best.keras's weights best of all (p = 0.001 / 0.999), as its epoch chosen on validation can look."""
        digest = weights_digest(model.weights)
        if useless and digest not in best_digest:  # leaning the wrong way a little: worse than a constant
            return np.array([0.6 if Path(p).name.startswith("cat.") else 0.4 for p in images])
        nudge = best_nudge[0] if digest in best_digest else int(digest[:2], 16) / 255 * 0.05
        return np.array([0.1 + nudge if Path(p).name.startswith("cat.") else 0.9 - nudge for p in images])

    useless = []

    monkeypatch.setattr(snapshots, "predict_split", fake)  # the weak tiny model's scores would fail the checks
    cfg = indexed(competition_zip, "train.head_epochs=1", "train.finetune_epochs=3", "train.cycle_epochs=1",
                  "train.cycle_mult=2", "submit.tta=[original]")
    run = RunDir(fit.run(cfg))
    assert [epoch for epoch, _ in run.snapshots()] == [2, 4]
    best_digest.append(weights_digest(run.load_model()[0].weights))
    submit.run(cfg)
    meta = json.loads(paths.latest_submission(cfg).with_suffix(".csv.json").read_text())
    # auto averages snapshots, never best.keras: its better score was chosen on these images
    assert meta["snapshots"]["name"] in ("last_1", "last_2") and set(meta["snapshots"]["val_log_loss"]) == {"last_1", "last_2"}
    assert meta["snapshots"]["epochs"] == [2, 4][-int(meta["snapshots"]["name"][-1]):]
    assert set(meta["snapshots"]["each"]) == {"epoch 2", "epoch 4"}
    report = run.report.read_text()  # redrawn by submit with its scores
    assert "Newest submission" in report and "snapshot epoch 2, alone" in report and "snapshots last_2 averaged" in report
    low, high = meta["val_log_loss_interval"]
    assert low - 1e-6 <= meta["val_log_loss"] <= high + 1e-6 and meta["calibration"]["method"] in ("none", "clip", "temperature")

    useless.append(True)  # snapshots worse than a constant, best.keras good: auto falls back to best.keras
    submit.run(cfg)
    assert json.loads(paths.latest_submission(cfg).with_suffix(".csv.json").read_text())["snapshots"]["name"] == "best"
    useless.clear()

    cfg.submit.snapshots, cfg.submit.snapshot_k = "last_k", 3
    before = outputs(cfg)
    with pytest.raises(KitError, match="submit.snapshot_k=3 snapshots but the run keeps 2"):
        submit.run(cfg)
    assert outputs(cfg) == before  # nothing written by the refused submit

    cfg.submit.snapshots, snapshot = "auto", run.snapshots()[0][1]
    run.snapshots()[1][1].rename(run.snapshots()[1][1].with_suffix(".moved"))  # one snapshot left: best.keras
    submit.run(cfg)
    assert json.loads(paths.latest_submission(cfg).with_suffix(".csv.json").read_text())["snapshots"]["name"] == "best"
    run.snapshots_dir.joinpath("epoch-004.weights.moved").rename(run.snapshot(4))
    before = outputs(cfg)
    snapshot.write_bytes(snapshot.read_bytes()[:100])  # a truncated snapshot: one line, nothing written
    with pytest.raises(KitError, match=r"snapshot .*epoch-002.weights.h5 cannot be loaded .* submit.snapshots=best"):
        submit.run(cfg)
    assert outputs(cfg) == before

    cfg.submit.snapshots = "best"
    submit.run(cfg)
    meta = json.loads(paths.latest_submission(cfg).with_suffix(".csv.json").read_text())
    assert meta["snapshots"] == {"name": "best", "epochs": [], "val_log_loss": {}, "each": {}}
