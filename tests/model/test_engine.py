"""The feature engine: TFLite gives Keras' numbers on batches of any length; the choice is checked and keyed."""
import keras
import numpy as np
import pytest

from kit.config import load_config
from kit.model import engine
from kit.errors import KitError
from kit.model.backbones import small_cnn


@pytest.fixture
def extractor():
    keras.utils.set_random_seed(0)
    return small_cnn(input_shape=(32, 32, 3))


@pytest.mark.parametrize("n", [1, 8, 13])  # under, exactly and over one interpreter batch (padded tail)
def test_tflite_features_equal_keras_features(extractor, n):
    images = np.random.default_rng(n).uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)
    expected = extractor.predict_on_batch(images)
    runner = engine.TFLiteRunner(engine.to_tflite(extractor), threads=2)
    got = runner(images)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(runner(images[:0]), np.zeros((0, *expected.shape[1:]), np.float32))


def test_a_runner_refuses_images_of_another_size(extractor):
    runner = engine.TFLiteRunner(engine.to_tflite(extractor), threads=1)
    with pytest.raises(KitError, match=r"takes images of shape \[32, 32, 3\], got \[48, 48, 3\]"):
        runner(np.zeros((2, 48, 48, 3), np.float32))


def test_engine_choice(cfg):
    assert engine.engine_name(cfg) == "tflite"  # auto on a machine without a GPU/TPU (this one, and CI)
    assert engine.engine_name(load_config(None, ["train.feature_engine=keras"])) == "keras"
    with pytest.raises(KitError, match="'train.feature_engine' must be one of auto, tflite, keras, got 'onnx'"):
        load_config(None, ["train.feature_engine=onnx"])  # refused at load, before anything runs


def test_the_converted_copy_is_kept_between_processes_and_a_damaged_one_replaced(cfg, extractor, tmp_path,
                                                                                 monkeypatch):
    saved = tmp_path / "engine-x.tflite"
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    first = engine.model_function(cfg, extractor, saved)(images)
    assert saved.is_file() and saved.stat().st_size > 0 and not list(tmp_path.glob(".*"))
    engine._COPIES.clear()  # as in a new process: only the file is left
    monkeypatch.setattr(engine, "to_tflite", lambda model: pytest.fail("converted again"))
    np.testing.assert_array_equal(engine.model_function(cfg, extractor, saved)(images), first)  # read back
    monkeypatch.undo()
    saved.write_bytes(b"not a flatbuffer")
    engine._COPIES.clear()
    np.testing.assert_array_equal(engine.model_function(cfg, extractor, saved)(images), first)
    assert saved.stat().st_size > 1000  # replaced by a good copy
