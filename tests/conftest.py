"""Shared fixtures: quiet TensorFlow, a tiny synthetic competition, real data when CI provides it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from kit.config import Config, load_config  # noqa: E402
from kit.data.synthetic import make_competition_zip  # noqa: E402


def output_paths(tmp_path: Path) -> list[str]:
    """Overrides that put every output folder inside `tmp_path` (and never pick up a real /kaggle/input)."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.runs_dir={tmp_path / 'runs'}", f"paths.submissions_dir={tmp_path / 'submissions'}",
            f"paths.submission={tmp_path / 'submission.csv'}", f"paths.kernels_dir={tmp_path / 'kernels'}",
            f"competition.kaggle_input={tmp_path / 'no-kaggle-input'}",
            "train.plan=false"]  # the timed probe is tested in tests/plan/, not paid by every training test


# A from-scratch CNN small enough to train in seconds: what every "indexed synthetic competition" trains.
SMALL_MODEL = ["model.backbone=small_cnn", "model.weights=none", "data.batch_size=16"]


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Defaults with every output folder inside the test's temporary folder."""
    return load_config(None, output_paths(tmp_path))


@pytest.fixture
def indexed(tmp_path: Path):
    """The one factory for "an indexed synthetic competition": `indexed(source, *overrides)` loads the config
    (through load_config, so overrides are checked as a user's are), downloads `source` (a competition zip or
    a folder-per-class dataset with competition.layout=folder), runs the data stage and returns the config.
    Every output folder is inside the test's temporary folder; the model is SMALL_MODEL unless overridden."""
    from kit.data import download, index

    def make(source: Path | None, *overrides: str, config: str | None = None) -> Config:
        built = load_config(config, [*output_paths(tmp_path), *SMALL_MODEL, *overrides])
        if source is not None and built.competition.layout == "kaggle-flat":
            download.run(built, source=str(source))
        index.run(built)
        return built
    return make


@pytest.fixture(scope="session")
def competition_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic competition zip in Kaggle's exact shape: 2 x 20 train, 12 test, 48 px. Read only."""
    out = tmp_path_factory.mktemp("synthetic") / "dogs-vs-cats-redux-kernels-edition.zip"
    return make_competition_zip(out, train_per_class=20, n_test=12, size=48, seed=1)


def real_path(variable: str, exists, what: str) -> Path:
    """The path the environment variable names when `exists(path)`, else skip the test saying what to set."""
    path = os.environ.get(variable)
    if not path or not exists(Path(path)):
        pytest.skip(f"set {variable} to {what} to run this")
    return Path(path)


@pytest.fixture(scope="session")
def real_competition_zip() -> Path:
    """The real mini competition zip named by KIT_REAL_COMPETITION, or skip."""
    return real_path("KIT_REAL_COMPETITION", Path.is_file, "the real mini competition zip")


@pytest.fixture(scope="session")
def real_folder() -> Path:
    """The real folder-per-class dataset named by KIT_REAL_FOLDER (../shared/data/flowers-mini), or skip."""
    return real_path("KIT_REAL_FOLDER", Path.is_dir, "a folder-per-class photo dataset (e.g. flowers-mini)")


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
