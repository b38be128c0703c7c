"""`make submit`: validation scored on the run's own split (never on its training images), damaged checkpoints.

The model's predictions are faked at the boundary (`snapshots.predict_split`, P(dog) read off each file name),
so what is pinned here is *which* images are scored and what is written; the trained end-to-end chain is in
tests/train/test_fit.py and tests/submit/test_multiclass.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kit import paths
from kit.data.dataset import load_index
from kit.errors import KitError
from kit.submit import ledger, snapshots, submit
from tests.submit.cli import one_error_line, overrides, refused, run_kit, tree
from tests.submit.test_predict import damage, make_run


@pytest.fixture
def scored(monkeypatch) -> dict:
    """Fake predictions (0.1 for a cat.*, 0.9 otherwise); records the paths of each split predicted."""
    seen = {}

    def predict_split(cfg, model, images, name, from_features=False):
        seen[name] = list(images)
        return np.array([0.1 if Path(p).name.startswith("cat.") else 0.9 for p in images])
    monkeypatch.setattr(snapshots, "predict_split", predict_split)
    return seen


def outputs(cfg) -> dict:
    """Everything a submit could change: the submissions folder and submission.csv(.json)."""
    latest = paths.latest_submission(cfg)
    return {**tree(paths.submissions_dir(cfg)), **{p.name: p.read_bytes() for p in latest.parent.glob("submission.csv*")}}


def earlier_submission(cfg) -> None:
    latest = paths.latest_submission(cfg)
    latest.write_text("id,label\n1,0.5\n")
    latest.with_name(latest.name + ".json").write_text('{"run": "earlier"}\n')


def test_the_runs_own_split_is_scored_not_this_configs(indexed, competition_zip, scored):
    seven = indexed(competition_zip, "data.seed=7")
    theirs = load_index(seven).val[["path", "label"]]
    cfg = indexed(competition_zip)  # the default seed, 42: another split of the same images
    ours = load_index(cfg)
    assert set(theirs["path"]) & set(ours.train["path"])  # some of the run's validation images train here
    make_run(Path(cfg.paths.runs_dir), "seven", ["cat", "dog"], split=theirs, config=["data.seed=7"])
    submit.run(cfg)
    assert scored["val"] == list(theirs["path"])  # exactly the run's images, in its order
    meta = json.loads(Path(cfg.paths.submission + ".json").read_text())
    assert meta["val_split"] == "run" and meta["val_rows"] == len(theirs) and meta["run"] == "seven"
    assert meta["val_accuracy"] == 1.0  # its labels: the fake is right on every cat and dog
    entry, = ledger.read(paths.submissions_dir(cfg))  # the ledger has its row (kit/submit/ledger.py)
    assert entry["sha256"] == meta["sha256"] and entry["run"] == "seven" and entry["file"] == Path(meta["file"]).name
    changes = json.loads(entry["config_changes"])  # against the defaults: the run was made with --set alone
    assert changes["data.seed"] == 7 and changes["model.backbone"] == "small_cnn" and entry["kaggle_ref"] == ""


def test_an_older_run_without_a_split_is_scored_only_on_the_same_seed(indexed, competition_zip, scored, capsys):
    cfg = indexed(competition_zip)
    run_dir = make_run(Path(cfg.paths.runs_dir), "old", ["cat", "dog"], config=["data.seed=7"])
    run_dir.split_file.unlink()  # saved before runs kept their split
    earlier_submission(cfg)
    before = outputs(cfg)
    with pytest.raises(KitError) as error:
        submit.run(cfg)
    assert str(error.value) == (
        "run old keeps no split.csv and was trained with data.seed=7 data.val_fraction=0.2, not this config's "
        "data.seed=42 data.val_fraction=0.2: its validation score here would count its own training images; "
        "submit with --set \"data.seed=7 data.val_fraction=0.2\" (make: SET=\"data.seed=7 data.val_fraction=0.2\")")
    assert outputs(cfg) == before and "val" not in scored  # refused before predicting anything
    message = refused(capsys, ["submit", *overrides(Path(cfg.paths.runs_dir).parent)])
    assert message == str(error.value) and outputs(cfg) == before

    saved = run_dir.config_file.read_bytes()
    run_dir.config_file.unlink()  # nothing to tell the run's split by
    with pytest.raises(KitError, match=r"^run old keeps neither split.csv nor data.seed and data.val_fraction in its "
                                       r"config.yaml, so its validation images are unknown: retrain it"):
        submit.run(cfg)
    assert outputs(cfg) == before
    run_dir.config_file.write_bytes(saved)

    seven = indexed(competition_zip, "data.seed=7")  # the fix the message names
    submit.run(seven)
    assert scored["val"] == list(load_index(seven).val["path"])
    assert json.loads(Path(seven.paths.submission + ".json").read_text())["val_split"] == "index"


def test_a_split_the_index_no_longer_has_is_refused(indexed, competition_zip, scored):
    cfg = indexed(competition_zip)
    split = load_index(cfg).val[["path", "label"]].copy()
    split.loc[3, "path"] = "/gone/cat.999.jpg"
    make_run(Path(cfg.paths.runs_dir), "moved", ["cat", "dog"], split=split)
    earlier_submission(cfg)
    before = outputs(cfg)
    with pytest.raises(KitError, match=r"^run moved was validated on images the index no longer has \(e.g. "
                                       r"/gone/cat.999.jpg; 1 of \d+\): rebuild the index .* `make data`, or pick"):
        submit.run(cfg)
    assert outputs(cfg) == before and not scored


def test_a_limited_index_still_knows_every_image_of_the_runs_split(indexed, competition_zip, scored):
    cfg = indexed(competition_zip)
    split = load_index(cfg).val[["path", "label"]]
    make_run(Path(cfg.paths.runs_dir), "full", ["cat", "dog"], split=split)
    cfg.data.limit_per_class = 2  # a quick look at fewer images: the run's split is still scored whole
    submit.run(cfg)
    assert scored["val"] == list(split["path"])


@pytest.mark.parametrize("how", ["zeroed", "truncated", "empty"])
def test_a_damaged_checkpoint_is_one_line_and_keeps_every_submission(indexed, competition_zip, scored, how):
    cfg = indexed(competition_zip)
    run_dir = make_run(Path(cfg.paths.runs_dir), "spoilt", ["cat", "dog"], split=load_index(cfg).val)
    submit.run(cfg)  # a previous, good submission
    damage(run_dir, how)
    before = outputs(cfg)
    with pytest.raises(KitError) as error:
        submit.run(cfg)
    assert str(error.value).startswith(f"the checkpoint {run_dir.best_model} of run spoilt is damaged (")
    assert "\n" not in str(error.value) and outputs(cfg) == before


def test_command_line_process_refuses_a_damaged_checkpoint_in_one_line(indexed, competition_zip, tmp_path):
    cfg = indexed(competition_zip)
    run_dir = make_run(Path(cfg.paths.runs_dir), "spoilt", ["cat", "dog"], split=load_index(cfg).val)
    damage(run_dir, "truncated")
    earlier_submission(cfg)
    before = tree(tmp_path)
    done = run_kit(tmp_path, "submit", *overrides(tmp_path))
    assert one_error_line(done.returncode, done.stderr).startswith(
        f"the checkpoint {run_dir.best_model} of run spoilt is damaged (")
    assert tree(tmp_path) == before
