"""Shared fixtures: quiet TensorFlow, a tiny synthetic competition, real data when CI provides it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from kit.config import Config, load_config  # noqa: E402
from kit.synthetic import make_competition_zip  # noqa: E402


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Defaults with every output folder inside the test's temporary folder."""
    config = load_config(None, [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}",
                                f"paths.runs_dir={tmp_path / 'runs'}",
                                f"paths.submissions_dir={tmp_path / 'submissions'}",
                                f"paths.submission={tmp_path / 'submission.csv'}",
                                f"competition.kaggle_input={tmp_path / 'no-kaggle-input'}"])
    return config


@pytest.fixture(scope="session")
def competition_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic competition zip in Kaggle's exact shape: 2 x 20 train, 12 test, 48 px. Read only."""
    out = tmp_path_factory.mktemp("synthetic") / "dogs-vs-cats-redux-kernels-edition.zip"
    return make_competition_zip(out, train_per_class=20, n_test=12, size=48, seed=1)


@pytest.fixture(scope="session")
def real_competition_zip() -> Path:
    """The real mini competition zip named by KIT_REAL_COMPETITION, or skip."""
    path = os.environ.get("KIT_REAL_COMPETITION")
    if not path or not Path(path).is_file():
        pytest.skip("set KIT_REAL_COMPETITION to the real mini competition zip to run this")
    return Path(path)


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary KERAS_HOME filled from KIT_KERAS_WEIGHTS (a folder of Keras cache files), or skip."""
    source = os.environ.get("KIT_KERAS_WEIGHTS")
    if not source or not Path(source).is_dir():
        pytest.skip("set KIT_KERAS_WEIGHTS to a folder of Keras ImageNet weight files to run this")
    home = tmp_path / "keras-home"
    shutil.copytree(source, home / "models")
    monkeypatch.setenv("KERAS_HOME", str(home))
    # Keras reads KERAS_HOME once, at import; an already imported Keras is pointed there too.
    import keras.src.backend.config as keras_config
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    return home
