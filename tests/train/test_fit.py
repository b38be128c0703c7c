"""End to end on the synthetic competition: download -> data -> train -> submit, and what each leaves."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


from kit.data.dataset import load_index
from kit.data.synthetic import make_competition_zip
from kit.errors import KitError
from kit.model import inference
from kit.model.backbones import build_model
from kit.model.metrics import log_loss
from kit.runs import RunDir
from kit.submit import submit
from kit.train import fit as train


@pytest.fixture(scope="module")
def competition_zip(tmp_path_factory):
    """A synthetic competition big enough to learn from in seconds: 2 x 100 train, 30 test, 64 px."""
    out = tmp_path_factory.mktemp("learnable") / "dogs-vs-cats-redux-kernels-edition.zip"
    return make_competition_zip(out, train_per_class=100, n_test=30, size=64, seed=3)


@pytest.fixture
def tiny(indexed, competition_zip):
    """The synthetic competition downloaded and indexed, with a small from-scratch CNN to train."""
    # group_lr_ratios [0.3, 1]: from scratch, the low layers must learn too
    return indexed(competition_zip, "data.image_size=64", "train.head_epochs=1", "train.finetune_epochs=15",
                   "train.lr=0.01", "train.run_name=tiny", "data.val_fraction=0.25", "train.group_lr_ratios=[0.3, 1.0]")


@pytest.mark.slow
def test_train_then_submit_end_to_end(tiny, competition_zip, monkeypatch):
    run = train.run(tiny)
    for name in ("best.keras", "metrics.csv", "config.yaml", "versions.json", "classes.json", "summary.json"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(16))
    assert {"loss", "val_log_loss", "val_accuracy", "lr", "stage"} <= set(metrics.columns)
    assert list(metrics["stage"]) == [1] + [2] * 15  # head, then fine-tune
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_log_loss"] == pytest.approx(metrics["val_log_loss"].min(), rel=1e-5)  # best, not last
    assert summary["best_epoch"] == int(metrics["val_log_loss"].idxmin()) + 1

    archived = submit.run(tiny)
    latest = pd.read_csv(tiny.paths.submission)
    assert archived.read_bytes() == open(tiny.paths.submission, "rb").read()
    sample = pd.read_csv(load_index(tiny).sample_submission)
    assert list(latest.columns) == ["id", "label"] and list(latest["id"]) == list(sample["id"])
    assert latest["label"].between(1e-4, 1 - 1e-4).all()  # submit.clip, the floor after calibrating
    meta = json.loads(open(str(tiny.paths.submission) + ".json").read())
    assert meta["run"] == "tiny" and meta["tta"] == ["original", "hflip"]
    truth = pd.read_csv(str(competition_zip) + ".test_labels.csv")
    # 150 small training images: clearly better than a constant 0.5 is what a test this small can promise.
    assert log_loss(truth["label"].to_numpy(), latest["label"].to_numpy()) < 0.5

    # A model whose output means P(cat) is caught through the validation score; nothing overwritten.
    before = open(tiny.paths.submission, "rb").read(), sorted(p.name for p in archived.parent.iterdir())
    real = inference.predict_views
    monkeypatch.setattr(inference, "predict_views", lambda *a, **k: 1.0 - real(*a, **k))
    with pytest.raises(KitError, match="probably P\\(cat\\) rather than P\\(dog\\)"):
        submit.run(tiny)
    assert (open(tiny.paths.submission, "rb").read(), sorted(p.name for p in archived.parent.iterdir())) == before


def test_tta_is_the_mean_of_its_views(tiny):
    model = build_model(tiny, 2)  # any model will do: averaging views is not a property of training
    paths = list(load_index(tiny).test["path"])
    from kit.data.pipeline import load_images
    images = load_images(tiny, paths, "test")
    both = inference.predict_views(tiny, model, images, paths, ["original", "hflip"])
    one = inference.predict_views(tiny, model, images, paths, ["original"])
    flipped = inference.predict_views(tiny, model, images, paths, ["hflip"])
    assert not np.allclose(one, flipped)  # the views differ, so the mean is a real check
    np.testing.assert_allclose(both, (one + flipped) / 2, rtol=1e-5)
    assert both.shape == (len(paths),)


def test_submit_without_a_trained_run_is_a_clear_error(tiny):
    with pytest.raises(KitError, match="no run with a trained model .*make train"):
        submit.run(tiny)


@pytest.mark.parametrize("files, message", [
    ({"best.keras": b"previous model"}, "already exists: .*not an unfinished kit run"),
    ({"best.keras": b"previous model", "summary.json": b"{}", "config.yaml": b"{}"}, "already finished"),
])
def test_run_folder_that_is_not_resumable_is_never_trained_over(tiny, files, message):
    run_dir = Path(tiny.paths.runs_dir) / "tiny"
    run_dir.mkdir(parents=True)
    for name, content in files.items():
        (run_dir / name).write_bytes(content)
    with pytest.raises(KitError, match=message):
        train.run(tiny)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == files


@pytest.mark.slow
def test_head_only_run_on_features_end_to_end_and_its_feature_cache(tiny, monkeypatch):
    tiny.train.head, tiny.train.head_epochs, tiny.train.finetune_epochs, tiny.train.head_lr = "features", 30, 0, 0.01
    tiny.train.feature_image_size = 48  # its own size; data.image_size stays 64
    run = train.run(tiny)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["head"] == "features" and summary["finetune_epochs"] == 0 and (run / "best.keras").is_file()
    assert list(pd.read_csv(run / "metrics.csv")["stage"].unique()) == [1]
    assert "image_size: 48" in (run / "config.yaml").read_text() and tiny.data.image_size == 64
    model, _ = RunDir(run).load_model()
    assert model.input_shape[1:3] == (48, 48)
    submit.run(tiny)  # at the run's 48 px, though the config says 64
    cached = sorted(p.name for p in (Path(tiny.paths.cache_dir) / "features").glob("*.npy"))
    assert len(cached) == 5 and all("-48px-" in name for name in cached), cached  # train, val x 2, test x 2
    # one converted backbone, written by train and read by submit (not one per feature set)
    assert len(list((Path(tiny.paths.cache_dir) / "features").glob("engine-*.tflite"))) == 1
    first = pd.read_csv(tiny.paths.submission)
    assert len(first) == 30 and first["label"].between(0.005, 0.995).all()

    # A second submit reads every view's features from the cache: no forward pass through the backbone.
    from kit.model import features
    monkeypatch.setattr(features, "_compute", lambda *a, **k: pytest.fail("features recomputed"))
    submit.run(tiny)
    pd.testing.assert_frame_equal(pd.read_csv(tiny.paths.submission), first)


@pytest.mark.slow
def test_head_on_cached_features_then_finetune(tiny):
    tiny.train.head, tiny.train.head_epochs, tiny.train.finetune_epochs = "features", 5, 3
    tiny.train.head_lr = 0.01
    run = train.run(tiny)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(8)) and list(metrics["stage"]) == [1] * 5 + [2] * 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_log_loss"] == pytest.approx(metrics["val_log_loss"].min(), rel=1e-5)
    assert summary["optimizer_iterations"] == 3 * -(-150 // 16)  # fine-tuning steps only
