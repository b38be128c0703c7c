"""`kit plan`: the steps a config runs with their image counts, estimates from a probe measured once and then
read back, caches on disk counted as free, caches that do not fit refused up front, the faster paths named,
and a training run's plan.json beside its timings.json, step for step."""
from __future__ import annotations

import json

import pytest

from kit.errors import KitError
from kit.plan import estimate, probe
from kit.runs import RunDir

PLAN = ["train.plan=true"]


def names(steps):
    return [(s.name, s.images) for s in steps]


def test_a_fine_tune_plan_counts_every_step_and_probes_once(indexed, competition_zip):
    cfg = indexed(competition_zip, *PLAN, "train.head_epochs=0", "train.finetune_epochs=3", "data.image_size=48")
    n_train, n_val, n_test = len_split(cfg)
    text, steps = estimate.describe(cfg, load(cfg), "all", head_only=False)
    assert names(steps) == [("set-up", 0), ("decode train", n_train), ("decode val", n_val),
                            ("fine-tune", 3 * n_train), ("predict val", 2 * n_val), ("writing", 0), ("set-up", 0),
                            ("decode test", n_test), ("predict val", 2 * n_val), ("predict test", 2 * n_test)]
    assert all(s.seconds > 0 for s in steps) and "probe measured now" in text
    again, steps_again = estimate.describe(cfg, load(cfg), "all", head_only=False)
    assert "probe read from" in again and [s.seconds for s in steps_again] == [s.seconds for s in steps]
    submit_text, _ = estimate.describe(cfg, load(cfg), "submit", head_only=False)
    assert "probe read from" in submit_text  # the training probe measured more than submit needs


def test_a_head_only_plan_and_caches_already_on_disk(indexed, competition_zip):
    from kit.data import pipeline

    cfg = indexed(competition_zip, *PLAN, "train.head=features", "train.head_epochs=4", "train.finetune_epochs=0",
                  "train.feature_passes=1", "data.image_size=48")
    index = load(cfg)
    n_train, n_val, _ = len_split(cfg)
    pipeline.load_images(cfg, list(index.train["path"]), "train")  # the pixel cache is there: decoding is free
    _, steps = estimate.describe(cfg, index, "train", head_only=True)
    assert names(steps)[1:6] == [("decode train", n_train), ("decode val", n_val), ("features train", 2 * n_train),
                                 ("features val", n_val), ("head", 4 * 2 * n_train)]
    assert steps[1].seconds == 0 and steps[1].note == "pixel cache on disk" and steps[2].seconds > 0


def test_a_logistic_head_is_planned_from_one_timed_fit_of_its_solver(indexed, competition_zip):
    """train.head_solver=logistic: no head epochs to time; the C search and the fit on every row, priced per row."""
    from kit.train.logistic import C_GRID, LOGISTIC_FOLDS

    cfg = indexed(competition_zip, *PLAN, "train.head=features", "train.head_epochs=4", "train.finetune_epochs=0",
                  "train.head_solver=logistic", "model.pooling=avg_max", "data.image_size=48")
    n_train, _, _ = len_split(cfg)
    rates, _, measured = probe.rates_for(cfg, load(cfg), False, "features")
    assert measured and rates["logistic_row_s"] > 0 and "head" not in rates and "head_epoch_s" not in rates
    head = {s.name: s for s in estimate.describe(cfg, load(cfg), "train", head_only=True)[1]}["head"]
    rows = n_train * (1 + len(C_GRID) * (LOGISTIC_FOLDS - 1) / LOGISTIC_FOLDS)
    assert "a logistic regression" in head.note and head.seconds == pytest.approx(rows * rates["logistic_row_s"])
    cfg.train.logistic_c = 0.1  # a given C: the fit alone
    fixed = {s.name: s for s in estimate.describe(cfg, load(cfg), "train", head_only=True)[1]}["head"]
    assert fixed.seconds == pytest.approx(n_train * rates["logistic_row_s"])


def test_a_refit_is_planned_as_a_second_training_on_every_labelled_image(indexed, competition_zip):
    """train.refit_all: the head and fine-tuning again on train + validation, its validation passes computed."""
    cfg = indexed(competition_zip, *PLAN, "train.head=features", "train.head_epochs=4", "train.finetune_epochs=2",
                  "train.feature_passes=1", "data.image_size=48")
    n_train, n_val, _ = len_split(cfg)
    plain = {s.name: s for s in estimate.describe(cfg, load(cfg), "train", head_only=False)[1]}
    cfg.train.refit_all = True
    steps = {s.name: s for s in estimate.describe(cfg, load(cfg), "train", head_only=False)[1]}
    assert steps["features val"].images == 2 * n_val and plain["features val"].images == n_val
    assert steps["head"].images == 4 * 2 * (2 * n_train + n_val) and "train.refit_all" in steps["head"].note
    assert steps["fine-tune"].images == 2 * (2 * n_train + n_val)
    assert steps["fine-tune"].seconds > 1.5 * plain["fine-tune"].seconds and steps["head"].seconds > plain["head"].seconds


def test_members_are_planned_as_runs_of_their_own_and_in_the_submit_that_averages_them(indexed, competition_zip):
    cfg = indexed(competition_zip, *PLAN, "train.head_epochs=1", "train.finetune_epochs=1", "data.image_size=48")
    cfg.train.members = ["train.finetune_epochs=0 train.head=features"]
    text, steps = estimate.describe(cfg, load(cfg), "train", head_only=False)
    assert "then train.members, each a run of its own" in text and " m1 " in text
    assert not [s for s in steps if s.name.startswith("m1")]  # its own run prints and books its own steps
    _, submit_steps = estimate.describe(cfg, load(cfg), "submit", head_only=False)
    member = [s for s in submit_steps if s.name.startswith("m1: ")]
    assert member and all(s.seconds >= 0 for s in member) and len(submit_steps) > len(member)


def test_a_plan_counts_feature_caches_on_disk_as_free(indexed, competition_zip):
    """A second head-only run on the same photos reads every feature array: no decode, no forward pass."""
    from kit.train import fit

    cfg = indexed(competition_zip, *PLAN, "train.head=features", "train.head_epochs=2", "train.finetune_epochs=0",
                  "data.image_size=48", "train.feature_image_size=0")
    _, before = estimate.describe(cfg, load(cfg), "train", head_only=True)
    assert [s.name for s in before][1:5] == ["decode train", "decode val", "features train", "features val"]
    fit.run(cfg)
    _, after = estimate.describe(cfg, load(cfg), "train", head_only=True)
    feature_steps = [s for s in after if s.name.startswith("features")]
    assert not [s for s in after if s.name.startswith("decode")], after
    assert feature_steps and all(s.images == 0 and s.seconds == 0 and s.note == "feature cache on disk"
                                 for s in feature_steps)
    assert {"head", "writing"} <= {s.name for s in after if s.seconds > 0}


def test_caches_that_do_not_fit_are_refused_before_training_writes_anything(indexed, competition_zip, monkeypatch,
                                                                             tmp_path):
    from kit.train import fit

    cfg = indexed(competition_zip, *PLAN, "train.finetune_epochs=1", "train.head_epochs=0")
    monkeypatch.setattr(probe, "free_bytes", lambda folder: 1000)
    with pytest.raises(KitError, match=r"need 0\.\d GB but .* has 0\.0 GB free: free space, set paths.cache_dir"):
        fit.run(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_long_fine_tuning_on_a_cpu_names_the_faster_paths(indexed, competition_zip, monkeypatch):
    cfg = indexed(competition_zip, *PLAN, "train.finetune_epochs=7", "train.head_epochs=0")
    slow = {"build_s": 2.0, "decode": 300.0, "engine": 150.0, "model_convert_s": 5.0, "keras": 70.0, "finetune": 0.01,
            "finetune_warmup_s": 10.0, "feature_dim": 16, "probe_s": 1.0}
    monkeypatch.setattr(probe, "rates_for", lambda *args: (slow, probe.probe_file(cfg, {}), True))
    text, steps = estimate.describe(cfg, load(cfg), "train", head_only=False)
    assert "note: fine-tuning is estimated at" in text
    for path in ("train.finetune_epochs=0", "data.image_size=160", "train.finetune_epochs=3", "kit kernel push --gpu"):
        assert path in text
    (fine,) = [s for s in steps if s.name == "fine-tune"]
    assert fine.seconds == pytest.approx(10.0 + 7 * (len(load(cfg).train) / 0.01 + len(load(cfg).val) / 70.0 + 1.0))


def test_a_run_keeps_its_plan_beside_what_each_step_took(indexed, competition_zip):
    from kit.train import fit

    cfg = indexed(competition_zip, *PLAN, "train.head=features", "train.head_epochs=2", "train.finetune_epochs=1")
    run = RunDir(fit.run(cfg))
    planned = {s["name"] for s in json.loads(run.plan_file.read_text())}
    took = json.loads(run.timings_file.read_text())
    assert {"set-up", "features train", "head", "fine-tune", "predict val", "writing"} <= planned & set(took)
    assert took["fine-tune"]["images"] == len(load(cfg).train) and took["fine-tune"]["seconds"] > 0


def test_kit_plan_from_the_command_line_writes_its_steps(indexed, competition_zip, tmp_path, capsys):
    from kit.__main__ import main
    from tests.conftest import SMALL_MODEL, output_paths

    indexed(competition_zip)
    args = [arg for item in [*output_paths(tmp_path), *SMALL_MODEL, "train.head_epochs=0"] for arg in ("--set", item)]
    assert main(["plan", *args, "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "plan (all):" in out and "disk: new caches need" in out
    steps = json.loads((tmp_path / "plan.json").read_text())
    assert [s["name"] for s in steps][-2:] == ["predict val", "predict test"]


def load(cfg):
    from kit.data.dataset import load_index

    return load_index(cfg)


def len_split(cfg):
    index = load(cfg)
    return len(index.train), len(index.val), len(index.test)
