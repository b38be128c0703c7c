"""More than two classes, end to end: a folder-per-class dataset -> data -> train (softmax) -> submit and predict."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config import load_config
from kit.data import index as data
from kit.data.synthetic import make_folder_dataset
from kit.errors import KitError
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.submit import predict, submit
from kit.submit.submission import build_frame, meta_path, write_submission
from kit.train import fit as train

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Three classes (striped circles, squares, checked triangles), 60 each at 48 px, 24 test images. Read only."""
    return make_folder_dataset(tmp_path_factory.mktemp("multiclass") / "shapes", classes=tuple(CLASSES),
                               per_class=60, size=48, seed=5, test=24)


@pytest.mark.slow
def test_three_classes_train_submit_and_predict_end_to_end(indexed, shapes, capsys):
    # configs/folder.yaml as a user would run it, indexed, with small_cnn and the settings that learn in seconds
    cfg = indexed(None, f"competition.folder={shapes}", "competition.slug=shapes", "data.image_size=48",
                  "data.val_fraction=0.25", "train.head_epochs=0", "train.finetune_epochs=15", "train.lr=0.01",
                  "train.group_lr_ratios=[0.3, 1.0]", "train.run_name=shapes", "train.head=images", "train.members=[]",
                  config=ROOT / "configs" / "folder.yaml")
    train.run(cfg)
    run_dir = RunDir.find(cfg)
    assert run_dir.name == "shapes" and run_dir.is_finished()
    assert run_dir.classes() == CLASSES
    val = pd.read_csv(run_dir.val_predictions)
    probs = val[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # a softmax over the three classes
    accuracy = float(np.mean(probs.argmax(axis=1) == val["label"].to_numpy()))
    print(f"\nsynthetic 3-class validation accuracy {accuracy:.3f} on {len(val)} images, "
          f"log loss {log_loss(val['label'].to_numpy(), probs):.3f}")
    assert accuracy > 0.6  # chance is 1/3
    metrics = pd.read_csv(run_dir.metrics)
    assert metrics["val_accuracy"].max() > 0.6

    archived = submit.run(cfg)
    written = pd.read_csv(cfg.paths.submission, dtype={"id": str})
    assert archived.read_bytes() == Path(cfg.paths.submission).read_bytes()
    sample = pd.read_csv(shapes / "sample_submission.csv", dtype={"id": str})
    assert list(written.columns) == ["id", *CLASSES] and set(written["id"]) == set(sample["id"])
    np.testing.assert_allclose(written[CLASSES].sum(axis=1), 1.0, atol=1e-6)
    truth = pd.read_csv(str(shapes) + ".test_labels.csv", dtype={"id": str}).set_index("id").loc[written["id"]]
    assert log_loss(truth["label"].to_numpy(), written[CLASSES].to_numpy()) < math.log(3)  # beats uniform

    frame = pd.read_csv(predict.run(cfg, [str(shapes / "test")], top_k=1), dtype={"prediction": str})
    assert (frame["error"].isna()).all() and len(frame) == len(sample)
    ids = [Path(p).stem for p in frame["path"]]
    hits = frame["prediction"].to_numpy() == truth.loc[ids, "class_name"].to_numpy()
    assert hits.mean() > 0.6, hits.mean()


def multi_places(tmp_path: Path) -> dict:
    out_dir, latest = tmp_path / "submissions", tmp_path / "submission.csv"
    out_dir.mkdir()
    latest.write_text("id,a,b,c\nearlier,0.2,0.3,0.5\n")
    return {"out_dir": out_dir, "latest": latest}


def test_multiclass_submission_with_hex_ids_and_its_refusals(tmp_path):
    folder = make_folder_dataset(tmp_path / "shapes", per_class=1, size=16, seed=1, test=5)
    sample = folder / "sample_submission.csv"
    ids = pd.read_csv(sample, dtype={"id": str})["id"].tolist()
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], len(ids))
    places = multi_places(tmp_path)
    before = places["latest"].read_bytes()
    bad = {"wrong ids": ([f"{i}x" for i in ids], "5 missing (e.g. "),
           "file names as ids": ([f"{i}.jpg" for i in ids], "5 extra (e.g. "),
           "an id twice": ([ids[0], *ids[:-1]], f"submission id '{ids[0]}' appears more than once")}
    for case, (wrong, reason) in bad.items():
        with pytest.raises(KitError) as err:
            write_submission(build_frame(wrong, probs, CLASSES), sample, places["out_dir"], "run", 0.005,
                             latest_path=places["latest"])
        assert reason in str(err.value), case
        assert places["latest"].read_bytes() == before and not list(places["out_dir"].iterdir())
    out = write_submission(build_frame(ids, probs, CLASSES), sample, places["out_dir"], "run", 0.0,
                           latest_path=places["latest"])
    written = pd.read_csv(out, dtype={"id": str})
    assert written["id"].tolist() == ids  # string ids keep their order and leading zeros
    np.testing.assert_allclose(written[CLASSES].to_numpy(), probs, atol=1e-6)
    assert json.loads(meta_path(places["latest"]).read_text())["rows"] == 5


def test_make_folder_dataset_layout(tmp_path):
    folder = make_folder_dataset(tmp_path / "d", classes=("x", "y"), per_class=3, size=24, seed=0, test=4)
    assert sorted(p.name for p in folder.iterdir()) == ["sample_submission.csv", "test", "x", "y"]
    assert sorted(p.name for p in (folder / "x").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    sample = pd.read_csv(folder / "sample_submission.csv", dtype={"id": str})
    labels = pd.read_csv(str(folder) + ".test_labels.csv", dtype={"id": str})
    assert list(sample.columns) == ["id", "x", "y"] and sorted(sample["id"]) == sorted(labels["id"])
    assert sorted(p.stem for p in (folder / "test").iterdir()) == sorted(sample["id"])
    again = make_folder_dataset(tmp_path / "e", classes=("x", "y"), per_class=3, size=24, seed=0, test=4)
    assert (again / "y" / "2.jpg").read_bytes() == (folder / "y" / "2.jpg").read_bytes()  # seeded


def test_folder_config_without_a_folder_is_a_clear_error(cfg, tmp_path):
    folder = load_config(ROOT / "configs" / "folder.yaml", [f"paths.data_dir={tmp_path / 'data'}"])
    assert folder.competition.layout == "folder"
    with pytest.raises(KitError, match="data folder path/to/your-dataset not found: set competition.folder"):
        data.run(folder)
    assert not (tmp_path / "data").exists()
