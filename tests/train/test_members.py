"""train.members: more runs on the run's split, trained after it under runs/<run>/members/, averaged by submit with
equal weights; a bad member is refused before anything trains, an unfinished one before anything is written."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kit import paths
from kit.config import load_config
from kit.errors import KitError
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.submit import members, submit
from kit.train import fit
from tests.model.test_features import fixed_weights
from tests.submit.test_submit import outputs

MEMBERS = ["train.head_epochs=2", "train.feature_image_size=40 model.dropout=0.1"]


@pytest.fixture
def with_members(indexed, competition_zip, tmp_path):
    cfg = indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                  "train.head=features", "train.head_epochs=3", "train.finetune_epochs=0", "train.run_name=team",
                  "submit.tta=[original]")
    cfg.train.members = list(MEMBERS)
    return cfg


def test_members_train_on_the_runs_split_and_submit_averages_them(with_members):
    run = RunDir(fit.run(with_members))
    m1, m2 = run.member(1), run.member(2)
    assert m1.is_finished() and m2.is_finished() and run.is_done()
    assert len(pd.read_csv(m1.metrics)) == 2 and m2.saved_config()["data"]["image_size"] == 40
    assert m2.saved_config()["model"]["dropout"] == 0.1 and m2.saved_config()["train"]["members"] == []
    for member in (m1, m2):
        assert set(member.validation_split()["path"]) == set(run.validation_split()["path"])

    submit.run(with_members)
    meta = json.loads(paths.latest_submission(with_members).with_suffix(".csv.json").read_text())
    assert [m["run"] for m in meta["members"]] == [str(m1.path), str(m2.path)] and meta["members"][1]["image_size"] == 40
    frames = [pd.read_csv(r.val_predictions).set_index("path") for r in (run, m1, m2)]
    probs = np.clip([f.loc[frames[0].index, "prob"] for f in frames], 1e-7, 1 - 1e-7)  # each run's own TTA validation
    chosen = meta["member_weighting"]["name"]
    assert chosen == "equal" and set(meta["member_weighting"]["val_log_loss"]) == {"equal"}  # the default
    weights = members.weightings(3)[chosen][:, None]
    mean = 1 / (1 + np.exp(-(weights * np.log(probs / (1 - probs))).sum(axis=0)))  # the weighted mean logit
    assert meta["val_log_loss_raw"] == pytest.approx(log_loss(frames[0]["label"].to_numpy(), mean), abs=1e-5)

    with_members.submit.member_weights = "auto"  # the weighting chosen on validation, out of fold
    submit.run(with_members)
    auto = json.loads(paths.latest_submission(with_members).with_suffix(".csv.json").read_text())["member_weighting"]
    assert set(auto["val_log_loss"]) == {"equal", "run 0.5", "run 0.75", "run alone"}
    assert auto["val_log_loss"][auto["name"]] == min(auto["val_log_loss"].values())

    with_members.submit.members = False
    submit.run(with_members)
    alone = json.loads(paths.latest_submission(with_members).with_suffix(".csv.json").read_text())
    assert alone["members"] == [] and alone["val_log_loss_raw"] == pytest.approx(
        log_loss(frames[0]["label"].to_numpy(), frames[0]["prob"].to_numpy()), abs=1e-5)

    with_members.submit.members = True
    m2.summary_file.unlink()  # as if its training had been interrupted
    before = outputs(with_members)
    with pytest.raises(KitError, match=r"member m2 of run team is not trained .* submit.members=false"):
        submit.run(with_members)
    assert outputs(with_members) == before
    kept = run.metrics.read_bytes(), m1.metrics.read_bytes()
    fit.run(with_members)  # the same command: only m2 is left to do
    assert m2.is_finished() and run.is_done() and (run.metrics.read_bytes(), m1.metrics.read_bytes()) == kept


@pytest.mark.parametrize("member, words", [
    ("data.seed=3", "a member overrides train.*, model.* or augment.* keys"),
    ("train.run_name=other", "not train.run_name"),
    ("train.finetune_epochs", "as key=value"),
    ("train.head_epochs=-1", "train.head_epochs"),
    ("train.head=images train.folds=3", "train.folds=3"),
])
def test_a_bad_member_is_one_line_before_anything_trains(indexed, competition_zip, member, words):
    cfg = indexed(competition_zip, "train.head_epochs=1", "train.finetune_epochs=0")
    cfg.train.members = ["train.head_epochs=2", member]
    with pytest.raises(KitError, match=words.replace("*", r"\*").replace(".", r"\.")):
        fit.run(cfg)
    assert not paths.runs_dir(cfg).exists() or not any(paths.runs_dir(cfg).iterdir())


def test_a_member_that_is_the_run_itself_is_skipped(indexed, competition_zip, tmp_path):
    """One config for both paths: beside a head-only run, the member `train.finetune_epochs=0` is the run."""
    cfg = indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                  "train.head=features", "train.head_epochs=2", "train.finetune_epochs=0", "train.run_name=solo")
    cfg.train.members = ["train.finetune_epochs=0", "train.head_epochs=3"]
    run = RunDir(fit.run(cfg))
    assert run.summary()["members"] == [2] and not run.member(1).path.exists() and run.member(2).is_finished()
    assert run.is_done()
    submit.run(cfg)
    meta = json.loads(paths.latest_submission(cfg).with_suffix(".csv.json").read_text())
    assert [m["run"] for m in meta["members"]] == [str(run.member(2).path)]


def test_members_come_from_the_config_file(tmp_path):
    config = tmp_path / "team.yaml"
    config.write_text("train:\n  members:\n    - train.finetune_epochs=0\n    - train.finetune_epochs=0 "
                      "train.feature_image_size=320\n")
    assert load_config(config).train.members == ["train.finetune_epochs=0",
                                                 "train.finetune_epochs=0 train.feature_image_size=320"]


def test_weightings_and_the_weighted_mean_logit():
    w = members.weightings(3)
    assert list(w) == ["equal", "run 0.5", "run 0.75", "run alone"] and all(abs(v.sum() - 1) < 1e-12 for v in w.values())
    np.testing.assert_allclose(w["run 0.5"], [0.5, 0.25, 0.25])
    assert list(members.weightings(2)) == ["equal", "run 0.75", "run alone"]  # 0.5 is equal for two
    a, b = np.array([0.9, 0.2]), np.array([0.6, 0.4])
    np.testing.assert_allclose(members.mean_in_log_space([a, b], np.array([1.0, 0.0])), a)
    both = members.mean_in_log_space([a, b])
    np.testing.assert_allclose(np.log(both / (1 - both)), (np.log(a / (1 - a)) + np.log(b / (1 - b))) / 2)
    three = np.array([[[0.7, 0.2, 0.1]], [[0.1, 0.8, 0.1]]])  # softmax: renormalised geometric mean
    mean = members.mean_in_log_space(list(three))
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)
    geometric = np.sqrt(three[0, 0] * three[1, 0])
    np.testing.assert_allclose(mean[0], geometric / geometric.sum())
