"""`python -m kit predict`: top-k classes of files and folders, bad files reported, the run's own image size."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pytest

from kit.__main__ import main
from kit.errors import KitError
from kit.model import inference
from kit.runs import RunDir
from kit.submit import predict
from tests.fixtures import BAD_IMAGES, image_bytes, write


def make_run(runs_dir: Path, name: str, classes: list[str], size: int = 32, seed: int = 0,
             val_images: list[Path] = (), split: pd.DataFrame | None = None, config: Sequence[str] = ()) -> RunDir:
    """A run folder as the train stage leaves it (untrained small_cnn weights, seeded): fast and deterministic.

    Its split.csv is `split` (path, label), else `val_images` labelled in turn; `config`: overrides saved
    in its config.yaml."""
    import keras

    from kit.config import load_config
    from kit.model.backbones import build_model

    keras.utils.set_random_seed(seed)
    run_cfg = load_config(None, ["model.backbone=small_cnn", "model.weights=none", f"data.image_size={size}",
                                 *config])
    model = build_model(run_cfg, len(classes))
    run_dir = RunDir(runs_dir / name)
    labels = [i % len(classes) for i in range(len(val_images))]
    if split is None:
        split = pd.DataFrame({"path": [str(p) for p in val_images], "label": labels})
    run_dir.start(run_cfg, classes, split)
    run_dir.save_model(model)
    if val_images:
        run_dir.write_val_predictions(pd.DataFrame({"path": [str(p) for p in val_images], "label": labels,
                                                    "class_name": [classes[i] for i in labels]}))
    return run_dir


def pixels(path: Path, size: int, flip: bool = False) -> np.ndarray:
    """What the model should see for `path`: the training pipeline's decode + resize, as float32."""
    import tensorflow as tf

    from kit.data.pipeline import decode_resize

    if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".gif"):  # e.g. WebP: TF < 2.21 can't decode
        import tempfile

        from PIL import Image

        converted = Path(tempfile.mkdtemp(prefix="kit-test-")) / "image.png"  # as kit does: a lossless PNG copy
        Image.open(path).convert("RGB").save(converted)
        path = converted
    image = decode_resize(tf.constant(str(path)), size).numpy().astype(np.float32)
    return image[:, ::-1] if flip else image


def expected(run_dir: RunDir, paths: list[Path], size: int, flip: bool = False) -> np.ndarray:
    model, _ = run_dir.load_model()
    return model.predict(np.stack([pixels(p, size, flip) for p in paths]), verbose=0)


def read_predictions(csv: Path) -> pd.DataFrame:
    """The CSV predict wrote: '' (not NaN) where an input has no prediction or no error."""
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    for column in ("prediction", "error"):
        frame[column] = frame[column].fillna("")
    return frame


def predictions_dir(run_dir: RunDir) -> Path:
    return run_dir.predictions_dir


def default_csv_pattern(run_dir: RunDir) -> str:
    return re.escape(str(predictions_dir(run_dir))) + r"/predict-\d{8}-\d{6}(-\d+)?\.csv"


@pytest.fixture
def good_images(tmp_path: Path) -> list[Path]:
    """Three good photos of different sizes and formats (not the model's 32 px)."""
    return [write(tmp_path / "in" / "one.jpg", image_bytes(size=48, seed=1)),
            write(tmp_path / "in" / "two.png", image_bytes(size=40, fmt="PNG", seed=2)),
            write(tmp_path / "in" / "three.webp", image_bytes(size=56, fmt="WEBP", seed=3))]


def test_binary_run_shows_both_classes_at_the_runs_own_size(cfg, tmp_path, good_images, capsys):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32)
    assert cfg.data.image_size == 224  # the current config's size must not be used
    csv = predict.run(cfg, [str(p) for p in good_images], run_name=str(run_dir.path))
    assert re.fullmatch(default_csv_pattern(run_dir), str(csv))  # no --csv: into the run's predictions/
    frame = read_predictions(csv)
    p_dog = expected(run_dir, good_images, 32)[:, 0]
    np.testing.assert_allclose(frame["prob_dog"], p_dog, atol=1e-6)  # P(class 1) = the model's output
    np.testing.assert_allclose(frame["prob_cat"], 1 - p_dog, atol=1e-6)
    assert list(frame["prediction"]) == ["dog" if p > 0.5 else "cat" for p in p_dog]
    assert (frame["error"] == "").all()
    out = capsys.readouterr().out
    assert "run binary (2 classes), 32 px" in out and f"predict: wrote {csv}" in out
    for path, p in zip(good_images, p_dog):
        line = next(line for line in out.splitlines() if line.startswith(str(path)))
        assert f"dog {p:.4f}" in line and f"cat {1 - p:.4f}" in line


def test_mix_of_good_and_bad_files_reports_each_and_predicts_the_rest(cfg, tmp_path, good_images, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(predict, "CHUNK", 3)  # failures on both sides of chunk boundaries keep their places
    run_dir = make_run(tmp_path / "runs", "three", ["a", "b", "c"], size=32)
    folder = tmp_path / "album"
    inside = [write(folder / "x.jpg", image_bytes(seed=4)), write(folder / "sub" / "y.png", image_bytes(fmt="PNG"))]
    write(folder / ".hidden.jpg", image_bytes(seed=5))  # skipped, like notes in a folder
    write(folder / "notes.txt", b"not a photo")
    bad = {name: write(tmp_path / "bad" / f"{name}.jpg", data) for name, (data, _) in BAD_IMAGES.items()}
    inputs = ([str(good_images[0]), str(bad["truncated"]), str(folder), str(tmp_path / "missing.jpg")]
              + [str(bad["zero-byte"]), str(bad["not-an-image"]), str(tmp_path / "empty-folder"), str(good_images[1])])
    (tmp_path / "empty-folder").mkdir()
    csv = tmp_path / "out" / "predictions.csv"
    assert predict.run(cfg, inputs, run_name=str(run_dir.path), top_k=2, csv=str(csv)) == csv
    assert not predictions_dir(run_dir).exists()  # --csv given: nothing written into the run
    frame = read_predictions(csv)

    assert list(frame.columns) == ["path", "prediction", "probability", "prob_a", "prob_b", "prob_c", "error"]
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
    probabilities = good[["prob_a", "prob_b", "prob_c"]].to_numpy()
    np.testing.assert_allclose(probabilities, expected(run_dir, predicted, 32), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(good["probability"], probabilities.max(axis=1))
    assert list(good["prediction"]) == [["a", "b", "c"][i] for i in probabilities.argmax(axis=1)]
    failed = frame[frame["error"] != ""]
    assert failed[["probability", "prob_a", "prob_b", "prob_c"]].isna().all().all()  # NaN where not predicted
    assert (failed["prediction"] == "").all()

    out = capsys.readouterr().out
    for path, reason in reasons.items():
        line = next(line for line in out.splitlines() if line.startswith(path))
        if reason:
            assert f"cannot read: {reason}" in line
        else:
            assert len([c for c in ("a 0.", "b 0.", "c 0.") if c in line]) == 2  # top-2 of 3
    assert "5 of 9 inputs could not be read" in out and f"predict: wrote {csv}" in out
    assert not [p for p in csv.parent.iterdir() if p.name != "predictions.csv"]  # no temporary files left


def test_tta_averages_the_configured_views(cfg, tmp_path, good_images):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, seed=1)
    cfg.submit.tta = ["original", "hflip"]
    with_tta = predict.run(cfg, [str(p) for p in good_images], run_name=str(run_dir.path), tta=True)
    mean = (expected(run_dir, good_images, 32) + expected(run_dir, good_images, 32, flip=True))[:, 0] / 2
    np.testing.assert_allclose(read_predictions(with_tta)["prob_dog"], mean, atol=1e-6)
    plain = predict.run(cfg, [str(p) for p in good_images], run_name=str(run_dir.path))
    assert plain != with_tta and with_tta.is_file()  # a second run (maybe in the same second) keeps the first
    assert sorted(p.name for p in plain.parent.iterdir()) == sorted([plain.name, with_tta.name])
    assert not np.allclose(read_predictions(plain)["prob_dog"], mean, atol=1e-6)  # the views really were averaged


def test_many_images_go_through_the_engine_with_kerass_numbers(cfg, tmp_path, good_images, monkeypatch):
    """From inference.ENGINE_MIN_IMAGES images on, the TFLite copy predicts: converted once, again after new weights."""
    from kit.model import engine

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, seed=1)
    model, _ = run_dir.load_model()
    cfg.data.image_size = 32
    images = np.stack([pixels(p, 32).astype(np.uint8) for p in good_images])
    paths = [str(p) for p in good_images]
    keras_probabilities = inference.predict_views(cfg, model, images, paths, ["original", "hflip"])
    monkeypatch.setattr(inference, "ENGINE_MIN_IMAGES", 1)
    conversions = []
    real = engine.to_tflite
    monkeypatch.setattr(engine, "to_tflite", lambda m: conversions.append(m) or real(m))
    for _ in range(2):
        got = inference.predict_views(cfg, model, images, paths, ["original", "hflip"])
        np.testing.assert_allclose(got, keras_probabilities, atol=1e-5)
    assert len(conversions) == 1
    kernel = model.get_layer("head_out").kernel
    kernel.assign(kernel.numpy() * 2)  # new weights: the old copy must not be used
    on_keras = copy.deepcopy(cfg)
    on_keras.train.feature_engine = "keras"
    np.testing.assert_allclose(inference.predict_views(cfg, model, images, paths, ["original"]),
                               inference.predict_views(on_keras, model, images, paths, ["original"]), atol=1e-5)
    assert len(conversions) == 2


def test_nothing_readable_is_an_error_and_an_earlier_csv_is_kept(cfg, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    bad = write(tmp_path / "broken.jpg", BAD_IMAGES["truncated"][0])
    csv = write(tmp_path / "predictions.csv", b"path,prediction\nearlier.jpg,cat\n")
    with pytest.raises(KitError, match=r"none of the 2 inputs could be predicted \(e.g. .*broken.jpg: truncated"):
        predict.run(cfg, [str(bad), str(tmp_path / "nope.jpg")], run_name=str(run_dir.path), csv=str(csv))
    assert csv.read_bytes() == b"path,prediction\nearlier.jpg,cat\n"
    assert "nope.jpg" in capsys.readouterr().out  # each failure is still named with its reason
    with pytest.raises(KitError, match="none of the 1 inputs could be predicted"):
        predict.run(cfg, [str(bad)], run_name=str(run_dir.path))
    assert not predictions_dir(run_dir).exists()  # no CSV of nothing in the run folder either


def test_runs_are_found_by_name_or_newest_and_bad_arguments_refused(cfg, tmp_path, good_images):
    runs = Path(cfg.paths.runs_dir)
    make_run(runs, "older", ["cat", "dog"], seed=0)
    newest = make_run(runs, "newer", ["x", "y", "z"], seed=1)
    csv = predict.run(cfg, [str(good_images[0])])
    assert re.fullmatch(default_csv_pattern(newest), str(csv))
    assert list(read_predictions(csv).columns)[3:6] == ["prob_x", "prob_y", "prob_z"]
    assert RunDir.find(cfg) == newest
    assert "prob_dog" in read_predictions(predict.run(cfg, [str(good_images[0])], run_name="older")).columns
    with pytest.raises(KitError, match="no trained model in .*nosuchrun"):
        predict.run(cfg, [str(good_images[0])], run_name="nosuchrun")
    with pytest.raises(KitError, match="--top-k is 0"):
        predict.run(cfg, [str(good_images[0])], top_k=0)
    with pytest.raises(KitError, match="is a folder: give a file name"):
        predict.run(cfg, [str(good_images[0])], csv=str(tmp_path))


def test_command_line_exit_status(tmp_path, good_images, capsys):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    bad = write(tmp_path / "broken.jpg", b"")
    assert main(["predict", str(good_images[0]), str(bad), "--run", str(run_dir.path), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{bad}" in out and "cannot read: empty file" in out
    assert len(list(predictions_dir(run_dir).glob("predict-*.csv"))) == 1
    assert main(["predict", str(bad), "--run", str(run_dir.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: none of the 1 inputs could be predicted") and "\n" not in err


# ---- nothing of the user's is ever overwritten; a damaged checkpoint is one line -------------------

DAMAGES = ["zeroed", "truncated", "empty"]


def damage(run_dir: RunDir, how: str) -> None:
    """Spoil the run's best.keras as a full disk, a killed copy or a failed download would."""
    data = run_dir.best_model.read_bytes()
    run_dir.best_model.write_bytes({"zeroed": bytes(len(data)), "truncated": data[:len(data) // 2],
                                    "empty": b""}[how])


def test_csv_that_could_destroy_a_file_is_refused_before_anything_runs(cfg, tmp_path, good_images):
    from tests.submit.cli import tree

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    notes = write(tmp_path / "notes.txt", b"my notes\n")
    table = write(tmp_path / "in" / "labels.csv", b"path,label\none.jpg,cat\n")  # also given as an input
    theirs = write(tmp_path / "submission.csv", b"id,label\n1,0.5\n")
    blocker = write(tmp_path / "afile", b"a file, not a folder\n")
    inputs = [str(p) for p in good_images] + [str(table)]
    cases = {
        str(good_images[0]): "does not end in .csv",  # an input image: the bug this pins
        str(notes): "does not end in .csv",
        str(tmp_path / "new-name.jpg"): "does not end in .csv",  # would be read as a broken image next time
        str(table): "is one of the inputs",
        str(theirs): "already exists and is not an earlier `make predict` table",
        str(blocker / "out.csv"): "afile is a file, not a folder",
    }
    before = tree(tmp_path)
    for csv, reason in cases.items():
        with pytest.raises(KitError) as error:
            predict.run(cfg, inputs, run_name=str(run_dir.path), csv=csv)
        assert reason in str(error.value) and f"--csv {csv}" in str(error.value), (csv, str(error.value))
        assert tree(tmp_path) == before, csv


def test_a_csv_inside_an_input_folder_is_fine_and_replaces_only_its_own_table(cfg, tmp_path, good_images):
    from tests.submit.cli import tree

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    folder = good_images[0].parent
    images = tree(folder)
    csv = folder / "predictions.csv"
    for _ in range(2):  # the second run reads the folder again: its own CSV is no image, and is replaced
        assert predict.run(cfg, [str(folder)], run_name=str(run_dir.path), csv=str(csv)) == csv
        assert len(read_predictions(csv)) == len(good_images)
    assert {name: data for name, data in tree(folder).items() if name != csv.name} == images
    empty = write(tmp_path / "empty.csv", b"")  # nothing to lose
    assert predict.run(cfg, [str(folder)], run_name=str(run_dir.path), csv=str(empty)) == empty


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_is_one_line_and_writes_nothing(cfg, tmp_path, good_images, how, capsys):
    from tests.submit.cli import overrides, refused, tree

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"])
    damage(run_dir, how)
    earlier = write(tmp_path / "out" / "predictions.csv", b"path,prediction,probability\nx.jpg,cat,0.9\n")
    before = tree(tmp_path)
    with pytest.raises(KitError, match=r"the checkpoint .*best.keras of run binary is damaged \(not a readable "
                                       r"\.keras file: .*\): retrain with"):
        predict.run(cfg, [str(good_images[0])], run_name=str(run_dir.path), csv=str(earlier))
    message = refused(capsys, ["predict", str(good_images[0]), "--run", str(run_dir.path), *overrides(tmp_path)])
    assert message.startswith(f"the checkpoint {run_dir.best_model} of run binary is damaged")
    assert tree(tmp_path) == before and not predictions_dir(run_dir).exists()


def test_command_line_process_refuses_an_input_as_csv_in_one_line(tmp_path):
    from tests.submit.cli import one_error_line, run_kit, tree

    table = write(tmp_path / "mine.csv", b"path\nx.jpg\n")
    before = tree(tmp_path)
    done = run_kit(tmp_path, "predict", "mine.csv", "--csv", "mine.csv")
    assert one_error_line(done.returncode, done.stderr) == (
        "--csv mine.csv is one of the inputs: write the predictions to another file, e.g. mine-predictions.csv")
    assert tree(tmp_path) == before and table.read_bytes() == b"path\nx.jpg\n"
