"""`python -m kit export`: every format gives the Keras model's probabilities on real images, labels included."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from kit.data.synthetic import make_folder_dataset
from kit.errors import KitError
from kit.submit import export
from tests.submit.test_predict import make_run, pixels

ALL_FORMATS = ["keras", "saved_model", "tflite", "tflite_float16", "tflite_dynamic"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Twelve real (synthetic) photos at 48 px, four per class, standing in for a run's validation split."""
    folder = make_folder_dataset(tmp_path_factory.mktemp("export") / "shapes", per_class=4, size=48, seed=2)
    return sorted(folder.rglob("*.jpg"))


def load_each(fmt: str, path: Path):
    """A predict(images) function for an exported file, loaded the way its users would (not through kit)."""
    import keras
    import tensorflow as tf

    if fmt == "keras":
        model = keras.saving.load_model(path, compile=False)
        return lambda x: model.predict(x, verbose=0)
    if fmt == "saved_model":
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda x: serve(image=tf.constant(x))["probabilities"].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.float32 and list(given["shape"]) == [1, 32, 32, 3]  # raw pixels, batch of one

    def one_at_a_time(x):
        rows = []
        for image in x:
            interpreter.set_tensor(given["index"], image[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(taken["index"])[0].copy())
        return np.stack(rows)
    return one_at_a_time


def test_binary_run_round_trips_through_every_format(cfg, tmp_path, photos, capsys):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    cfg.export.formats = ALL_FORMATS
    out = export.run(cfg, run_name=str(run_dir.path))
    assert out == run_dir.export
    assert (out / "labels.txt").read_text() == "cat\ndog\n"
    meta = json.loads((out / "export.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["check"]["images"] == len(photos)
    assert meta["input"]["shape"] == [None, 32, 32, 3] and meta["input"]["range"] == [0, 255]
    assert meta["output"]["shape"] == [None, 2]
    assert meta["run"] == "binary" and meta["source_model"] == str(run_dir.best_model.absolute())
    assert meta["check"]["source"] == str(run_dir.val_predictions.absolute())

    images = np.stack([pixels(p, 32) for p in photos])
    model, _ = run_dir.load_model()
    p_dog = model.predict(images, verbose=0)[:, 0]
    truth = np.stack([1 - p_dog, p_dog], axis=1)  # the exports give one column per label
    for fmt in ALL_FORMATS:
        path = out / export.FORMATS[fmt][0]
        got = load_each(fmt, path)(images)
        quantized = fmt in ("tflite_float16", "tflite_dynamic")
        tolerance = cfg.export.tolerance_quantized if quantized else cfg.export.tolerance
        assert got.shape == (len(photos), 2), fmt
        np.testing.assert_allclose(got, truth, atol=tolerance, err_msg=fmt)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=tolerance, err_msg=fmt)
        record = meta["formats"][fmt]
        assert record["bytes"] == export.size_of(path) and record["tolerance"] == tolerance
        assert record["max_abs_difference"] <= tolerance
        assert record["max_abs_difference"] == pytest.approx(np.abs(got - truth).max(), abs=2e-6), fmt
    sizes = {fmt: meta["formats"][fmt]["bytes"] for fmt in ALL_FORMATS}
    assert sizes["tflite_dynamic"] < sizes["tflite_float16"] < sizes["tflite"]  # quantized really is smaller

    import tensorflow as tf
    stored = tf.train.load_checkpoint(str(out / "saved_model" / "variables" / "variables"))
    counts = [int(np.prod(shape)) for name, shape in stored.get_variable_to_shape_map().items()
              if "OBJECT_GRAPH" not in name]
    # Each weight stored once (Keras' own export stores them twice, keras#23553), plus the fixed Dense(2).
    assert sum(counts) == sum(int(np.prod(v.shape)) for v in model.variables) + 4
    labels = tf.saved_model.load(str(out / "saved_model")).signatures["labels"]()["labels"].numpy()
    assert [v.decode() for v in labels] == ["cat", "dog"]  # baked into the SavedModel too
    assert "model_float16.tflite" in capsys.readouterr().out


def test_multiclass_run_exports_one_column_per_class(cfg, tmp_path, photos):
    run_dir = make_run(Path(cfg.paths.runs_dir), "three", ["a", "b", "c"], size=32, seed=3, val_images=photos)
    cfg.export.formats = ["keras", "tflite"]
    out = export.run(cfg, run_name="three", out=str(tmp_path / "mobile"))  # by name, under paths.runs_dir
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "labels.txt", "model.keras", "model.tflite"]
    assert (out / "labels.txt").read_text().splitlines() == ["a", "b", "c"]
    images = np.stack([pixels(p, 32) for p in photos])
    assert not run_dir.export.exists()  # --out given: nothing in the run folder
    model, _ = run_dir.load_model()
    np.testing.assert_allclose(load_each("tflite", out / "model.tflite")(images), model.predict(images, verbose=0),
                               atol=cfg.export.tolerance)
    assert set(json.loads((out / "export.json").read_text())["formats"]) == {"keras", "tflite"}


def test_a_difference_over_tolerance_fails_and_keeps_the_earlier_export(cfg, tmp_path, photos):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    earlier = run_dir.export
    earlier.mkdir()
    (earlier / "labels.txt").write_text("an earlier, good export\n")
    cfg.export.formats = ["keras", "tflite_float16"]
    cfg.export.tolerance_quantized = 1e-9  # float16 weights cannot match float32 this closely
    with pytest.raises(KitError, match=r"exported model differs from the Keras model on 12 validation images: "
                                       r"tflite_float16 by up to \S+ \(export.tolerance_quantized is 1e-09\): "
                                       r"nothing was exported; leave tflite_float16 out of export.formats"):
        export.run(cfg, run_name=str(run_dir.path))
    assert [p.name for p in earlier.iterdir()] == ["labels.txt"]
    assert (earlier / "labels.txt").read_text() == "an earlier, good export\n"
    assert sorted(p.name for p in run_dir.path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_bad_settings_and_missing_images_are_clear_errors(cfg, tmp_path, photos):
    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    cfg.export.formats = ["keras", "onnx"]
    with pytest.raises(KitError, match=r"export.formats .* must name some of keras, .*\(unknown: onnx\)"):
        export.run(cfg, run_name=str(run_dir.path))
    cfg.export.formats = ["keras"]
    run_dir.val_predictions.unlink()
    with pytest.raises(KitError, match="no validation images to check the export of run binary against"):
        export.run(cfg, run_name=str(run_dir.path))
    assert not run_dir.export.exists()
    cfg.paths.runs_dir = str(tmp_path / "no-runs")
    with pytest.raises(KitError, match="no run with a trained model in .*no-runs: train one first"):
        export.run(cfg)


def test_an_unfinished_run_is_checked_on_the_index_of_the_same_classes(indexed, competition_zip, tmp_path):
    from kit import paths
    from kit.data.dataset import load_index

    cfg = indexed(competition_zip, "export.formats=[keras]")  # classes cat, dog
    make_run(Path(cfg.paths.runs_dir), "unfinished", ["cat", "dog"], size=32)  # no validation predictions
    val = load_index(cfg).val
    meta = json.loads((export.run(cfg) / "export.json").read_text())
    assert meta["run"] == "unfinished" and meta["check"]["images"] == min(len(val), export.CHECK_IMAGES) > 0
    assert meta["check"]["source"] == str(paths.index_dir(cfg).absolute())
    folder = make_folder_dataset(tmp_path / "xy", classes=("x", "y"), per_class=4, size=32, seed=1)
    other = indexed(None, "competition.layout=folder", f"competition.folder={folder}", "competition.slug=xy",
                    "export.formats=[keras]")
    assert Path(other.paths.runs_dir) == Path(cfg.paths.runs_dir)  # the same run, another dataset's index
    with pytest.raises(KitError, match="no validation images to check the export of run unfinished"):
        export.run(other)


# ---- --out: only kit's own files, never into a folder of other things; damaged checkpoints ---------

def test_out_folder_of_other_files_is_refused_and_left_alone(cfg, tmp_path, photos, capsys):
    from tests.submit.cli import overrides, refused, tree

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    cfg.export.formats = ["keras"]
    thesis = tmp_path / "d"
    (thesis / "sub").mkdir(parents=True)
    (thesis / "thesis.txt").write_text("x\n")
    (thesis / "sub" / "chapter.txt").write_text("y\n")
    afile = tmp_path / "model.bin"
    afile.write_bytes(b"someone's model\n")
    before = tree(tmp_path)
    cases = {thesis: "holds other files and is not an earlier kit export (no export.json)",
             afile: "is a file, not a folder", afile / "export": "model.bin is a file, not a folder",
             run_dir.path: "holds other files and is not an earlier kit export"}  # the run folder itself
    for out, reason in cases.items():
        with pytest.raises(KitError) as error:
            export.run(cfg, run_name=str(run_dir.path), out=str(out))
        assert f"--out {out}" in str(error.value) and reason in str(error.value), str(error.value)
        assert tree(tmp_path) == before, out
    message = refused(capsys, ["export", "--run", str(run_dir.path), "--out", str(thesis),
                               *overrides(tmp_path, "export.formats=[keras]")])
    assert message == (f"--out {thesis} holds other files and is not an earlier kit export (no export.json): kit "
                       f"will not mix its files into it; give a new or empty folder, e.g. {thesis / 'export'}")
    assert tree(tmp_path) == before


def test_out_replaces_an_earlier_export_but_only_kits_own_files(cfg, tmp_path, photos):
    from tests.submit.cli import tree

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    out = tmp_path / "empty"
    out.mkdir()
    cfg.export.formats = ["keras", "tflite"]
    assert export.run(cfg, run_name=str(run_dir.path), out=str(out)) == out  # an empty folder is fine
    (out / "README.md").write_text("how our app loads it\n")  # the user's, beside the export
    (out / "app").mkdir()
    (out / "app" / "main.py").write_text("print('hi')\n")
    theirs = {name: data for name, data in tree(out).items() if name.startswith(("README", "app"))}
    first = json.loads((out / "export.json").read_text())["created"]
    cfg.export.formats = ["keras", "saved_model"]
    export.run(cfg, run_name=str(run_dir.path), out=str(out))
    after = tree(out)
    assert {name: data for name, data in after.items() if name.startswith(("README", "app"))} == theirs
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app", "export.json", "labels.txt", "model.keras",
                                                     "saved_model"]  # model.tflite was the earlier export's
    assert set(json.loads((out / "export.json").read_text())["formats"]) == {"keras", "saved_model"}
    assert json.loads((out / "export.json").read_text())["created"] >= first
    export.run(cfg, run_name=str(run_dir.path), out=str(out))  # a folder replaced by a folder (saved_model/)
    assert {name: data for name, data in tree(out).items() if name.startswith(("README", "app"))} == theirs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("how", ["zeroed", "truncated", "empty"])
def test_a_damaged_checkpoint_is_one_line_and_keeps_the_earlier_export(cfg, tmp_path, photos, how):
    from tests.submit.cli import tree
    from tests.submit.test_predict import damage

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    cfg.export.formats = ["keras"]
    export.run(cfg, run_name=str(run_dir.path))
    damage(run_dir, how)
    before = tree(tmp_path)
    with pytest.raises(KitError) as error:
        export.run(cfg, run_name=str(run_dir.path))
    message = str(error.value)
    assert message.startswith(f"the checkpoint {run_dir.best_model} of run binary is damaged (") and "\n" not in message
    assert tree(tmp_path) == before


def test_command_line_process_refuses_an_out_file_in_one_line(tmp_path, photos):
    from tests.submit.cli import one_error_line, overrides, run_kit, tree

    run_dir = make_run(tmp_path / "runs", "binary", ["cat", "dog"], size=32, val_images=photos)
    (tmp_path / "notes.txt").write_text("mine\n")
    before = tree(tmp_path)
    done = run_kit(tmp_path, "export", "--run", str(run_dir.path), "--out", "notes.txt", *overrides(tmp_path))
    assert one_error_line(done.returncode, done.stderr) == (
        "--out notes.txt is a file, not a folder: give a new folder (or an earlier export) to write into")
    assert tree(tmp_path) == before
