"""`python -m kit predict`: top-k classes of files and folders, bad files reported, the run's own image size."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit import predict
from kit.__main__ import main
from kit.errors import KitError
from tests.fixtures import BAD_IMAGES, image_bytes, write


def make_run(runs_dir: Path, name: str, classes: list[str], size: int = 32, seed: int = 0,
             val_images: list[Path] = ()) -> Path:
    """A run folder as kit/train.py leaves it (untrained small_cnn weights, seeded): fast and deterministic."""
    import keras

    from kit.config import load_config, save_provenance
    from kit.model import build_model

    keras.utils.set_random_seed(seed)
    run_cfg = load_config(None, ["model.backbone=small_cnn", "model.weights=none", f"data.image_size={size}"])
    model = build_model(run_cfg, len(classes))
    run = runs_dir / name
    save_provenance(run_cfg, run)
    model.save(run / "best.keras")
    (run / "classes.json").write_text(json.dumps(classes) + "\n")
    if val_images:
        labels = [i % len(classes) for i in range(len(val_images))]
        pd.DataFrame({"path": [str(p) for p in val_images], "label": labels,
                      "class_name": [classes[i] for i in labels]}).to_csv(run / "val_predictions.csv", index=False)
    return run


def pixels(path: Path, size: int, flip: bool = False) -> np.ndarray:
    """What the model should see for `path`: the training pipeline's decode + resize, as float32."""
    import tensorflow as tf

    from kit.pipeline import decode_resize

    image = decode_resize(tf.constant(str(path)), size).numpy().astype(np.float32)
    return image[:, ::-1] if flip else image


def expected(run: Path, paths: list[Path], size: int, flip: bool = False) -> np.ndarray:
    model, _ = predict.load_run(run)
    return model.predict(np.stack([pixels(p, size, flip) for p in paths]), verbose=0)


@pytest.fixture
def good_images(tmp_path: Path) -> list[Path]:
    """Three good photos of different sizes and formats (not the model's 32 px)."""
    return [write(tmp_path / "in" / "one.jpg", image_bytes(size=48, seed=1)),
            write(tmp_path / "in" / "two.png", image_bytes(size=40, fmt="PNG", seed=2)),
            write(tmp_path / "in" / "three.webp", image_bytes(size=56, fmt="WEBP", seed=3))]


def test_binary_run_shows_both_classes_at_the_runs_own_size(cfg, tmp_path, good_images, capsys):
    run = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32)
    assert cfg.data.image_size == 224  # the current config's size must not be used
    frame = predict.run(cfg, [str(p) for p in good_images], run=str(run))
    p_dog = expected(run, good_images, 32)[:, 0]
    np.testing.assert_allclose(frame["prob_dog"], p_dog, rtol=1e-5)  # P(class 1) = the model's output
    np.testing.assert_allclose(frame["prob_cat"], 1 - p_dog, rtol=1e-5)
    assert list(frame["prediction"]) == ["dog" if p > 0.5 else "cat" for p in p_dog]
    assert (frame["error"] == "").all()
    out = capsys.readouterr().out
    assert "run binary (2 classes), 32 px" in out
    for path, p in zip(good_images, p_dog):
        line = next(line for line in out.splitlines() if line.startswith(str(path)))
        assert f"dog {p:.4f}" in line and f"cat {1 - p:.4f}" in line


def test_mix_of_good_and_bad_files_reports_each_and_predicts_the_rest(cfg, tmp_path, good_images, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(predict, "CHUNK", 3)  # failures on both sides of chunk boundaries keep their places
    run = make_run(tmp_path / "runs", "three", ["a", "b", "c"], size=32)
    folder = tmp_path / "album"
    inside = [write(folder / "x.jpg", image_bytes(seed=4)), write(folder / "sub" / "y.png", image_bytes(fmt="PNG"))]
    write(folder / ".hidden.jpg", image_bytes(seed=5))  # skipped, like notes in a folder
    write(folder / "notes.txt", b"not a photo")
    bad = {name: write(tmp_path / "bad" / f"{name}.jpg", data) for name, (data, _) in BAD_IMAGES.items()}
    inputs = ([str(good_images[0]), str(bad["truncated"]), str(folder), str(tmp_path / "missing.jpg")]
              + [str(bad["zero-byte"]), str(bad["not-an-image"]), str(tmp_path / "empty-folder"), str(good_images[1])])
    (tmp_path / "empty-folder").mkdir()
    csv = tmp_path / "out" / "predictions.csv"
    frame = predict.run(cfg, inputs, run=str(run), top_k=2, csv=str(csv))

    assert list(frame["path"]) == [str(good_images[0]), str(bad["truncated"]), str(inside[1]), str(inside[0]),
                                   str(tmp_path / "missing.jpg"), str(bad["zero-byte"]), str(bad["not-an-image"]),
                                   str(tmp_path / "empty-folder"), str(good_images[1])]  # folders sorted inside
    reasons = dict(zip(frame["path"], frame["error"]))
    assert "truncated" in reasons[str(bad["truncated"])] and "empty" in reasons[str(bad["zero-byte"])]
    assert "not an image" in reasons[str(bad["not-an-image"])]
    assert reasons[str(tmp_path / "missing.jpg")] == "file not found"
    assert reasons[str(tmp_path / "empty-folder")] == "folder holds no image files"
    good = frame[frame["error"] == ""]
    predicted = [good_images[0], inside[1], inside[0], good_images[1]]
    assert list(good["path"]) == [str(p) for p in predicted]
    np.testing.assert_allclose(good[["prob_a", "prob_b", "prob_c"]], expected(run, predicted, 32), rtol=1e-5)
    np.testing.assert_allclose(good[["prob_a", "prob_b", "prob_c"]].sum(axis=1), 1.0, rtol=1e-5)

    out = capsys.readouterr().out
    for path, reason in reasons.items():
        line = next(line for line in out.splitlines() if line.startswith(path))
        if reason:
            assert f"cannot read: {reason}" in line
        else:
            assert len([c for c in ("a 0.", "b 0.", "c 0.") if c in line]) == 2  # top-2 of 3
    assert "5 of 9 inputs could not be read" in out
    written = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(written.columns) == ["path", "prediction", "probability", "prob_a", "prob_b", "prob_c", "error"]
    assert list(written["path"]) == list(frame["path"])
    np.testing.assert_allclose(written["prob_a"], frame["prob_a"], atol=1e-6)  # NaN where not predicted
    assert written["error"].fillna("").tolist() == frame["error"].tolist()
    assert not [p for p in csv.parent.iterdir() if p.name != "predictions.csv"]  # no temporary files left


def test_tta_averages_the_configured_views(cfg, tmp_path, good_images):
    run = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, seed=1)
    cfg.submit.tta = ["original", "hflip"]
    frame = predict.run(cfg, [str(p) for p in good_images], run=str(run), tta=True)
    mean = (expected(run, good_images, 32) + expected(run, good_images, 32, flip=True))[:, 0] / 2
    np.testing.assert_allclose(frame["prob_dog"], mean, rtol=1e-5)
    plain = predict.run(cfg, [str(p) for p in good_images], run=str(run))
    assert not np.allclose(plain["prob_dog"], mean, rtol=1e-7)  # the views really were averaged


def test_many_images_go_through_the_engine_with_kerass_numbers(cfg, tmp_path, good_images, monkeypatch):
    """From predict.ENGINE_MIN_IMAGES images on, the TFLite copy predicts: converted once, again after new weights."""
    from kit import engine

    run = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, seed=1)
    model, _ = predict.load_run(run)
    cfg.data.image_size = 32
    images = np.stack([pixels(p, 32).astype(np.uint8) for p in good_images])
    paths = [str(p) for p in good_images]
    keras_probabilities = predict.predict_views(cfg, model, images, paths, ["original", "hflip"])
    monkeypatch.setattr(predict, "ENGINE_MIN_IMAGES", 1)
    conversions = []
    real = engine.to_tflite
    monkeypatch.setattr(engine, "to_tflite", lambda m: conversions.append(m) or real(m))
    for _ in range(2):
        got = predict.predict_views(cfg, model, images, paths, ["original", "hflip"])
        np.testing.assert_allclose(got, keras_probabilities, atol=1e-5)
    assert len(conversions) == 1
    kernel = model.get_layer("head_out").kernel
    kernel.assign(kernel.numpy() * 2)  # new weights: the old copy must not be used
    on_keras = copy.deepcopy(cfg)
    on_keras.train.feature_engine = "keras"
    np.testing.assert_allclose(predict.predict_views(cfg, model, images, paths, ["original"]),
                               predict.predict_views(on_keras, model, images, paths, ["original"]), atol=1e-5)
    assert len(conversions) == 2


def test_nothing_readable_is_an_error_and_an_earlier_csv_is_kept(cfg, tmp_path, capsys):
    run = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    bad = write(tmp_path / "broken.jpg", BAD_IMAGES["truncated"][0])
    csv = write(tmp_path / "predictions.csv", b"path,prediction\nearlier.jpg,cat\n")
    with pytest.raises(KitError, match=r"none of the 2 inputs could be predicted \(e.g. .*broken.jpg: truncated"):
        predict.run(cfg, [str(bad), str(tmp_path / "nope.jpg")], run=str(run), csv=str(csv))
    assert csv.read_bytes() == b"path,prediction\nearlier.jpg,cat\n"
    assert "nope.jpg" in capsys.readouterr().out  # each failure is still named with its reason


def test_runs_are_found_by_name_or_newest_and_bad_arguments_refused(cfg, tmp_path, good_images):
    runs = Path(cfg.paths.runs_dir)
    make_run(runs, "older", ["cat", "dog"], seed=0)
    newest = make_run(runs, "newer", ["x", "y", "z"], seed=1)
    assert list(predict.run(cfg, [str(good_images[0])]).columns)[3:6] == ["prob_x", "prob_y", "prob_z"]
    assert predict.find_named_run(cfg, None) == newest
    assert "prob_dog" in predict.run(cfg, [str(good_images[0])], run="older").columns
    with pytest.raises(KitError, match="no trained model in .*nosuchrun"):
        predict.run(cfg, [str(good_images[0])], run="nosuchrun")
    with pytest.raises(KitError, match="--top-k is 0"):
        predict.run(cfg, [str(good_images[0])], top_k=0)
    with pytest.raises(KitError, match="is a folder: give a file name"):
        predict.run(cfg, [str(good_images[0])], csv=str(tmp_path))


def test_command_line_exit_status(tmp_path, good_images, capsys):
    run = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    bad = write(tmp_path / "broken.jpg", b"")
    assert main(["predict", str(good_images[0]), str(bad), "--run", str(run), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{bad}" in out and "cannot read: empty file" in out
    assert main(["predict", str(bad), "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: none of the 1 inputs could be predicted") and "\n" not in err
