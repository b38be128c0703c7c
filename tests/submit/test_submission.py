"""Submission writer: clipping, log loss, every refusal (with nothing on disk changed), the valid write."""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.errors import KitError
from kit.model.metrics import clip_probabilities, log_loss, prior_log_loss
from kit.submit.submission import (LN2, build_frame, check_direction, check_submission, meta_path, validation_score,
                                   write_submission)

CLASSES = ["cat", "dog"]
N = 10
NOW = datetime(2024, 5, 6, 7, 8, 9)


@pytest.fixture
def sample_path(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "sample_submission.csv"
    path.parent.mkdir()
    path.write_text("id,label\n" + "".join(f"{i},0.5\n" for i in range(1, N + 1)))
    return path


@pytest.fixture
def multi_sample_path(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "multi_sample.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("id,cat,dog,fox\n" + "".join(f"{i},0.3,0.3,0.4\n" for i in range(1, 7)))
    return path


@pytest.fixture
def places(tmp_path: Path) -> dict:
    """An out_dir with an earlier submission in it and an existing latest submission.csv + json."""
    out_dir = tmp_path / "submissions"
    out_dir.mkdir()
    (out_dir / "earlier-20240101-000000.csv").write_text("id,label\n1,0.123456\n")
    latest = tmp_path / "work" / "submission.csv"
    latest.parent.mkdir()
    latest.write_text("id,label\n1,0.123456\n")
    meta_path(latest).write_text('{"run": "earlier"}\n')
    return {"out_dir": out_dir, "latest": latest}


def snapshot(places: dict) -> dict:
    """Every file (name -> bytes) in out_dir and beside the latest submission: what must not change."""
    folders = [places["out_dir"], places["latest"].parent]
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.iterdir())}


def good_frame(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return build_frame(np.arange(1, n + 1), rng.uniform(0.05, 0.95, n), CLASSES)


def write(frame: pd.DataFrame, sample: Path, places: dict, **kwargs) -> Path:
    args = dict(clip=0.005, extra_meta={"val_log_loss": 0.25}, latest_path=places["latest"], now=NOW)
    args.update(kwargs)
    return write_submission(frame, sample, places["out_dir"], "run1", **args)


def set_label(frame: pd.DataFrame, row_id: int, value: float) -> pd.DataFrame:
    frame.loc[frame["id"] == row_id, "label"] = value
    return frame


def with_ids(frame: pd.DataFrame, ids) -> pd.DataFrame:
    frame["id"] = ids
    return frame


BINARY_BAD = {
    "wrong ids": (lambda f: with_ids(f, np.arange(101, 111)), "10 missing (e.g. 1, 2, 3), 10 extra (e.g. 101, 102"),
    "missing id": (lambda f: f[f["id"] != 5].reset_index(drop=True), "1 missing (e.g. 5)"),
    "extra id": (lambda f: pd.concat([f, pd.DataFrame({"id": [11], "label": [0.5]})], ignore_index=True),
                 "1 extra (e.g. 11)"),
    "duplicate id": (lambda f: with_ids(f, [1, 2, 3, 4, 4, 6, 7, 8, 9, 10]), "id 4 appears more than once"),
    "NaN": (lambda f: set_label(set_label(f, 3, np.nan), 8, np.nan), "2 NaN probabilities (first at id 3)"),
    "negative": (lambda f: set_label(f, 2, -0.1), "1 probabilities outside [0, 1], worst -0.1 (id 2"),
    "above one": (lambda f: set_label(set_label(f, 2, -0.1), 7, 1.2),
                  "2 probabilities outside [0, 1], worst 1.2 (id 7"),
    "string ids": (lambda f: with_ids(f, [f"{i}.jpg" for i in range(1, N + 1)]), "got strings such as '1.jpg'"),
    "float ids": (lambda f: with_ids(f, np.arange(1, N + 1) + 0.0), "got floats such as 1.0"),
    "unsorted ids": (lambda f: f.iloc[::-1].reset_index(drop=True), "not sorted: id 9 comes right after id 10"),
    "wrong header": (lambda f: f.rename(columns={"label": "dog"}), "missing column(s) 'label'"),
    "extra column": (lambda f: f.assign(cat=0.5), "column(s) 'cat' not in the sample"),
    "text labels": (lambda f: f.assign(label="dog"), "column 'label' must hold probabilities"),
}


@pytest.mark.parametrize("case", list(BINARY_BAD))
def test_bad_binary_submission_is_refused_and_nothing_changes(case, sample_path, places):
    mutate, reason = BINARY_BAD[case]
    before = snapshot(places)
    with pytest.raises(KitError) as err:
        write(mutate(good_frame()), sample_path, places)
    message = str(err.value)
    assert reason in message
    assert "\n" not in message and ": " in message  # one line, with a fix after the reason
    assert snapshot(places) == before


def multi_frame() -> pd.DataFrame:
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], 6)
    return build_frame(range(1, 7), probs, ["cat", "dog", "fox"])


MULTI_BAD = {
    "missing class column": (lambda f: f.drop(columns="fox"), "missing column(s) 'fox'"),
    "columns out of order": (lambda f: f[["id", "dog", "cat", "fox"]], "header is 'id,dog,cat,fox'"),
    "row not summing to 1": (lambda f: f.assign(fox=np.where(f["id"] == 4, 0.0, f["fox"])), "e.g. id 4 sums to"),
}


@pytest.mark.parametrize("case", list(MULTI_BAD))
def test_bad_multiclass_submission_is_refused_and_nothing_changes(case, multi_sample_path, places):
    mutate, reason = MULTI_BAD[case]
    before = snapshot(places)
    with pytest.raises(KitError) as err:
        write(mutate(multi_frame()), multi_sample_path, places)
    assert reason in str(err.value) and "\n" not in str(err.value)
    assert snapshot(places) == before


def test_valid_write_produces_identical_files_and_metadata(sample_path, places, capsys):
    frame = good_frame()
    out = write(frame, sample_path, places, extra_meta={"val_log_loss": 0.25, "tta": ["original", "hflip"]})
    latest = places["latest"]
    assert out == places["out_dir"] / "run1-20240506-070809.csv"
    assert out.read_bytes() == latest.read_bytes()
    assert (places["out_dir"] / "earlier-20240101-000000.csv").read_text() == "id,label\n1,0.123456\n"
    assert sorted(p.name for p in places["out_dir"].iterdir()) == ["earlier-20240101-000000.csv", out.name]
    assert sorted(p.name for p in latest.parent.iterdir()) == ["submission.csv", "submission.csv.json"]  # no temps
    written = pd.read_csv(latest)
    assert list(written.columns) == ["id", "label"] and written["id"].tolist() == list(range(1, N + 1))
    np.testing.assert_allclose(written["label"], frame["label"], atol=5e-7)
    meta = json.loads(meta_path(latest).read_text())
    assert {"run", "val_log_loss", "git_commit", "clip", "n_clipped", "rows", "file", "sha256"} <= set(meta)
    assert meta["run"] == "run1" and meta["val_log_loss"] == 0.25 and meta["tta"] == ["original", "hflip"]
    assert meta["rows"] == N and meta["clip"] == 0.005 and meta["n_clipped"] == 0
    assert meta["file"] == str(out.resolve())
    assert meta["sha256"] == hashlib.sha256(latest.read_bytes()).hexdigest()
    assert "clipped 0 of 10 probabilities to [0.005, 0.995]" in capsys.readouterr().out


def test_clipping_count_and_bound_are_reported(sample_path, places, capsys):
    frame = good_frame()
    for row_id, value in [(1, 0.0), (2, 0.001), (3, 0.999), (4, 1.0), (5, 0.006)]:
        set_label(frame, row_id, value)
    write(frame, sample_path, places)
    written = pd.read_csv(places["latest"])["label"]
    assert written.min() == pytest.approx(0.005) and written.max() == pytest.approx(0.995)
    assert written.tolist()[4] == pytest.approx(0.006)  # inside the bounds: untouched
    meta = json.loads(meta_path(places["latest"]).read_text())
    assert meta["clip"] == 0.005 and meta["n_clipped"] == 4
    assert "clipped 4 of 10 probabilities to [0.005, 0.995]" in capsys.readouterr().out


def test_second_write_in_the_same_second_keeps_the_first(sample_path, places):
    first = write(good_frame(), sample_path, places)
    first_bytes = first.read_bytes()
    second = write(set_label(good_frame(), 1, 0.5), sample_path, places)
    assert second.name == "run1-20240506-070809-2.csv" and first.read_bytes() == first_bytes
    assert places["latest"].read_bytes() == second.read_bytes()


def test_multiclass_write_keeps_rows_summing_to_one(multi_sample_path, places):
    frame = multi_frame()
    frame.loc[0, ["cat", "dog", "fox"]] = [1.0, 0.0, 0.0]
    write(frame, multi_sample_path, places, clip=0.01)
    written = pd.read_csv(places["latest"])
    values = written[["cat", "dog", "fox"]].to_numpy()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
    assert values.min() > 0.009
    assert json.loads(meta_path(places["latest"]).read_text())["n_clipped"] == 3  # 1.0 and both 0.0


def test_missing_sample_is_refused(tmp_path, places):
    before = snapshot(places)
    with pytest.raises(KitError, match="sample submission .* not found: download the competition"):
        write(good_frame(), tmp_path / "nope.csv", places)
    assert snapshot(places) == before


def labels_and_good_predictions(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Balanced 0/1 labels (1 = dog) and a decent model's P(dog)."""
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat([0, 1], n // 2))
    p_dog = np.clip(np.where(labels == 1, 0.85, 0.15) + rng.normal(0, 0.1, n), 0, 1)
    return labels, p_dog


def test_validation_score_of_good_predictions_passes_direction_check():
    labels, p_dog = labels_and_good_predictions()
    score = validation_score(labels, p_dog, clip=0.005, classes=CLASSES)
    assert score["val_log_loss"] < 0.3 and score["val_accuracy"] > 0.9
    assert score["val_prior_log_loss"] == pytest.approx(LN2) and score["val_rows"] == 200
    check_direction(score["val_log_loss"], score["val_prior_log_loss"])  # no error
    # a two-column softmax [P(cat), P(dog)] scores the same as P(dog) alone
    two_col = validation_score(labels, np.stack([1 - p_dog, p_dog], axis=1), clip=0.005, classes=CLASSES)
    assert two_col["val_log_loss"] == pytest.approx(score["val_log_loss"])


def test_label_column_holding_p_cat_is_refused(sample_path, places):
    labels, p_dog = labels_and_good_predictions()
    flipped = validation_score(labels, 1 - p_dog, clip=0.005, classes=CLASSES)
    assert flipped["val_log_loss"] > 1.5 and flipped["val_accuracy"] < 0.1
    with pytest.raises(KitError, match=r"label column is probably P\(cat\) rather than P\(dog\)"):
        check_direction(flipped["val_log_loss"], flipped["val_prior_log_loss"])
    before = snapshot(places)
    with pytest.raises(KitError, match="no better than always predicting the class frequencies"):
        write(good_frame(), sample_path, places, extra_meta=flipped)
    assert snapshot(places) == before


def test_misaligned_predictions_are_refused():
    labels, p_dog = labels_and_good_predictions()
    shuffled = np.random.default_rng(9).permutation(p_dog)
    score = validation_score(labels, shuffled, clip=0.005, classes=CLASSES)
    with pytest.raises(KitError, match="misaligned with their ids"):
        check_direction(score["val_log_loss"], score["val_prior_log_loss"])


def test_direction_check_for_multiclass_and_missing_scores():
    with pytest.raises(KitError, match="class columns are probably in the wrong order"):
        check_direction(1.2, math.log(3), n_classes=3)
    with pytest.raises(KitError, match="missing or NaN"):
        check_direction(float("nan"))
    check_direction(0.5, math.log(3), n_classes=3)


def test_log_loss_matches_hand_calculation():
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert log_loss([1, 0, 1, 0], [0.5] * 4) == pytest.approx(math.log(2))
    assert log_loss([1], [1.0], bound=0.005) == pytest.approx(-math.log(0.995))
    assert log_loss([0], [1.0], bound=0.005) == pytest.approx(-math.log(0.005))  # 5.298: why we clip
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))  # finite, not inf
    p = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
    assert log_loss([0, 2], p) == pytest.approx(-(math.log(0.7) + math.log(0.6)) / 2)
    # clipped then renormalised, like Kaggle: [0.5, 0.5, 0.01] / 1.01
    assert log_loss([0], [[0.5, 0.5, 0.0]], bound=0.01) == pytest.approx(-math.log(0.5 / 1.01))


def test_log_loss_refuses_bad_input():
    with pytest.raises(KitError, match="2 labels and 3 predictions"):
        log_loss([0, 1], [0.5, 0.5, 0.5])
    with pytest.raises(KitError, match="labels must be in 0..1"):
        log_loss([0, 2], [0.5, 0.5])
    with pytest.raises(KitError, match="1 predictions are NaN"):
        log_loss([0, 1], [0.5, np.nan])


def test_prior_log_loss_is_the_label_entropy():
    assert prior_log_loss([0, 1, 0, 1]) == pytest.approx(math.log(2))
    assert prior_log_loss([0, 0, 0, 1]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert prior_log_loss([0, 1, 2], n_classes=3) == pytest.approx(math.log(3))


def test_clip_probabilities_counts_and_renormalises():
    clipped, n = clip_probabilities(np.array([0.0, 0.004, 0.005, 0.5, 0.996, 1.0]), 0.005)
    assert n == 4
    np.testing.assert_allclose(clipped, [0.005, 0.005, 0.005, 0.5, 0.995, 0.995])
    rows, n = clip_probabilities(np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]), 0.01)
    assert n == 3
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(rows[1], [0.2, 0.3, 0.5])
    with pytest.raises(KitError, match=r"clip bound must be in \[0, 0.5\)"):
        clip_probabilities(np.array([0.5]), 0.5)


def test_build_frame_binary_multiclass_and_id_handling():
    frame = build_frame([3, 1, 2], np.array([[0.7, 0.3], [0.1, 0.9], [0.6, 0.4]]), CLASSES)
    assert list(frame.columns) == ["id", "label"]
    assert frame["id"].tolist() == [1, 2, 3] and frame["label"].tolist() == [0.9, 0.4, 0.3]  # pairs kept
    assert build_frame(["2", "10"], [0.2, 0.8], CLASSES)["id"].tolist() == [2, 10]  # sorted numerically
    assert build_frame(["1.jpg"], [0.2], CLASSES)["id"].tolist() == ["1.jpg"]  # left for the check to refuse
    multi = build_frame([1, 2], [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], ["a", "b", "c"])
    assert list(multi.columns) == ["id", "a", "b", "c"] and multi["c"].tolist() == [0.5, 0.8]
    with pytest.raises(KitError, match="3 ids but 2 predictions"):
        build_frame([1, 2, 3], [0.1, 0.2], CLASSES)
    with pytest.raises(KitError, match="one column per class, in the order a,b,c"):
        build_frame([1, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"])


def test_check_submission_with_string_ids_in_the_sample():
    sample = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "label": [0.5, 0.5]})
    check_submission(pd.DataFrame({"image": ["b.jpg", "a.jpg"], "label": [0.1, 0.9]}), sample)
    with pytest.raises(KitError, match=r"1 missing \(e.g. b.jpg\), 1 extra \(e.g. c.jpg\)"):
        check_submission(pd.DataFrame({"image": ["a.jpg", "c.jpg"], "label": [0.1, 0.9]}), sample)
