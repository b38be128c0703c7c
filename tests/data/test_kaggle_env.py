"""Kaggle Notebook mode on a fake /kaggle tree: the mounted competition is found (every layout) and read only,
outputs default under working/ (an explicit key wins), attached Keras weights become visible under KERAS_HOME."""
from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kit import kaggle_env, paths
from kit.config import load_config
from kit.data import download
from kit.errors import KitError
from tests.conftest import SMALL_MODEL
from tests.data.test_download import TEST, TRAIN, assert_complete, extract_outer, members
from tests.data.test_kaggle_api import FakeApi

SLUG = "dogs-vs-cats-redux-kernels-edition"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
NO_API = FakeApi(error=AssertionError("must not download inside a Kaggle Notebook"))


def tree_hash(folder: Path) -> str:
    """Every path, link target, size, mtime and file content under `folder`: any write shows."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(folder)}|{info.st_mode}|{info.st_size}|{info.st_mtime_ns}".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def mount(competition_zip: Path, folder: Path, form: str) -> Path:
    """The competition as a notebook mounts it: the three files, one outer zip, or extracted folders."""
    folder.mkdir(parents=True)
    if form == "files":
        extract_outer(competition_zip, folder / "x")
        for item in (folder / "x").iterdir():
            item.rename(folder / item.name)
        (folder / "x").rmdir()
    elif form == "outer-zip":
        (folder / f"{SLUG}.zip").write_bytes(competition_zip.read_bytes())
    else:  # extracted, or extracted-nested: train/train/... as unpacking a zip with its folder gives
        files = members(competition_zip)
        (folder / "sample_submission.csv").write_bytes(files["sample_submission.csv"])
        for name in ("train", "test"):  # members are train/cat.0.jpg, ...
            target = folder / name if form == "extracted-nested" else folder
            target.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(io.BytesIO(files[f"{name}.zip"])) as inner:
                inner.extractall(target)
    return folder


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    """An empty fake /kaggle (input/, working/), notebook mode on, run from working/ as a kernel is."""
    root = tmp_path / "kaggle"
    (root / "input").mkdir(parents=True)
    (root / "working").mkdir()
    for name in ("KAGGLE_DATA_PROXY_URL", "KAGGLE_URL_BASE", "KERAS_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.chdir(root / "working")
    keras_config = sys.modules.get("keras.src.backend.config")
    if keras_config is not None:  # restored after the test, whatever prepare_keras_home sets
        monkeypatch.setattr(keras_config, "_KERAS_DIR", keras_config._KERAS_DIR)
    return root


def notebook_config(*overrides: str, config: str | None = None):
    cfg = load_config(config, list(overrides))
    kaggle_env.apply_notebook_defaults(cfg, kaggle_env.explicit_keys(config, overrides))
    return cfg


def test_a_kernel_is_detected_by_its_environment(monkeypatch, tmp_path):
    for name in ("KIT_KAGGLE_ROOT", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_DATA_PROXY_URL", "KAGGLE_URL_BASE"):
        monkeypatch.delenv(name, raising=False)
    assert kaggle_env.kaggle_root() is None
    cfg = load_config(None, [])
    assert kaggle_env.apply_notebook_defaults(cfg) == {} and cfg.paths.data_dir == "data"
    assert kaggle_env.prepare_keras_home(tmp_path / "keras") is None
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert kaggle_env.kaggle_root() == Path("/kaggle")
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(tmp_path))
    assert kaggle_env.kaggle_root() == tmp_path
    monkeypatch.setenv("KIT_KAGGLE_ROOT", "off")
    assert kaggle_env.kaggle_root() is None


def test_outputs_default_under_working_and_explicit_keys_win(kaggle, tmp_path, capsys):
    working = kaggle / "working"
    cfg = notebook_config()
    assert Path(cfg.paths.data_dir) == working / "data" and Path(cfg.paths.cache_dir) == working / "cache"
    assert Path(cfg.paths.runs_dir) == working / "runs" and Path(cfg.paths.submissions_dir) == working / "submissions"
    assert paths.latest_submission(cfg) == working / "submission.csv"
    assert Path(cfg.competition.kaggle_input) == kaggle / "input"
    assert f"outputs under {working}" in capsys.readouterr().out
    config = tmp_path / "mine.yaml"
    config.write_text("paths:\n  runs_dir: /elsewhere/runs\n")
    cfg = notebook_config("paths.cache_dir=/kaggle/tmp/cache", config=str(config))
    assert cfg.paths.cache_dir == "/kaggle/tmp/cache" and cfg.paths.runs_dir == "/elsewhere/runs"  # --set, file
    assert Path(cfg.paths.data_dir) == working / "data"  # the rest still default under working
    assert "paths.cache_dir, paths.runs_dir kept" in capsys.readouterr().out


WHERE = {"competitions": f"competitions/{SLUG}", "legacy": SLUG, "dataset": f"datasets/someone/{SLUG}"}
LAYOUTS = [("competitions", "files"), ("legacy", "files"), ("competitions", "outer-zip"), ("legacy", "outer-zip"),
           ("competitions", "extracted"), ("legacy", "extracted-nested"), ("dataset", "files")]


@pytest.mark.parametrize("where, form", LAYOUTS, ids=[f"{w}-{f}" for w, f in LAYOUTS])
def test_the_mounted_competition_is_found_and_read_only(kaggle, competition_zip, where, form, capsys):
    folder = kaggle / "input" / WHERE[where]
    mount(competition_zip, folder, form)
    (kaggle / "input" / "some-other-dataset").mkdir()
    before = tree_hash(kaggle / "input")
    cfg = notebook_config()
    raw = download.run(cfg, api=NO_API)
    assert raw == kaggle / "working" / "data" / SLUG / "raw" and NO_API.calls == []
    assert "Kaggle Notebook, read only" in capsys.readouterr().out
    assert_complete(raw, TRAIN, TEST)
    linked = form.startswith("extracted")
    assert (raw / "train").is_symlink() == linked and (raw / "test").is_symlink() == linked
    if linked:  # read in place: raw/ points into the mount, nothing copied
        assert (raw / "train").resolve() == (folder / "train" / ("train" if form == "extracted-nested" else "")).resolve()
    download.run(cfg, api=NO_API)
    assert "nothing to do" in capsys.readouterr().out
    from kit.data import index
    index.run(cfg)
    assert tree_hash(kaggle / "input") == before  # nothing written under input/, by download or the data stage


def test_a_mount_with_only_the_sample_csv_is_one_clear_error(kaggle, competition_zip):
    folder = kaggle / "input" / "competitions" / SLUG
    folder.mkdir(parents=True)
    (folder / "sample_submission.csv").write_bytes(members(competition_zip)["sample_submission.csv"])
    with pytest.raises(KitError, match="neither train.zip and test.zip nor train/ and test/"):
        download.run(notebook_config(), api=NO_API)


def test_extracted_folders_whose_ids_differ_are_refused(kaggle, competition_zip):
    folder = mount(competition_zip, kaggle / "input" / SLUG, "extracted")
    (folder / "test" / "1.jpg").unlink()
    cfg = notebook_config()
    with pytest.raises(KitError, match="test/ holds 11 images"):
        download.run(cfg, api=NO_API)
    assert not paths.raw_dir(cfg).exists()


def test_attached_keras_weights_become_visible_under_keras_home(kaggle, competition_zip):
    mount(competition_zip, kaggle / "input" / SLUG, "files")
    dataset = kaggle / "input" / "datasets" / "someone" / "keras-pretrained" / "weights"
    dataset.mkdir(parents=True)
    (dataset / WEIGHTS).write_bytes(b"fake weights")
    (dataset / "efficientnetb0_notop.h5").write_bytes(b"other")
    (dataset / "notes.h5").write_bytes(b"not a keras cache name")
    before = tree_hash(kaggle / "input")
    home = kaggle_env.prepare_keras_home(kaggle / "working" / "cache" / "keras")
    assert home == kaggle / "working" / "cache" / "keras" and os.environ["KERAS_HOME"] == str(home)
    models = home / "models"
    assert sorted(p.name for p in models.iterdir()) == ["efficientnetb0_notop.h5", WEIGHTS]
    assert (models / WEIGHTS).read_bytes() == b"fake weights"
    assert kaggle_env.prepare_keras_home(home) == home  # a second call: nothing to do, no error
    assert tree_hash(kaggle / "input") == before
    import keras  # Keras' own cache lookup finds the file there, without any network

    found = keras.utils.get_file(WEIGHTS, origin="http://invalid.invalid/" + WEIGHTS, cache_subdir="models")
    assert Path(found) == models / WEIGHTS


def test_a_keras_home_the_user_set_is_left_alone(kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "mine"))
    assert kaggle_env.prepare_keras_home(kaggle / "k") == tmp_path / "mine" and not (kaggle / "k").exists()


@pytest.mark.slow
def test_a_notebook_run_ends_with_working_submission_csv(kaggle, competition_zip):
    from kit.data import index
    from kit.submit import submit
    from kit.train import fit

    mount(competition_zip, kaggle / "input" / "competitions" / SLUG, "extracted")
    before = tree_hash(kaggle / "input")
    cfg = notebook_config(*SMALL_MODEL, "data.image_size=64", "train.head_epochs=1", "train.finetune_epochs=15",
                          "train.lr=0.01", "data.val_fraction=0.25", "train.group_lr_ratios=[0.3, 1.0]")
    download.run(cfg, api=NO_API)
    index.run(cfg)
    run_dir = fit.run(cfg)
    submit.run(cfg)
    working = kaggle / "working"
    assert run_dir.parent == working / "runs" and (working / "cache").is_dir()
    sub = pd.read_csv(working / "submission.csv")
    assert len(sub) == TEST and list(sub.columns) == ["id", "label"]
    assert tree_hash(kaggle / "input") == before


def test_the_command_line_in_a_notebook_finds_the_mount_and_writes_under_working(kaggle, competition_zip, capsys):
    from kit.__main__ import main

    mount(competition_zip, kaggle / "input" / "competitions" / SLUG, "files")
    before = tree_hash(kaggle / "input")
    assert main(["download"]) == 0 and main(["data", "--set", "data.seed=3"]) == 0
    out = capsys.readouterr().out
    assert f"outputs under {kaggle / 'working'}" in out
    assert (kaggle / "working" / "data" / SLUG / "raw" / "sample_submission.csv").is_file()
    assert (kaggle / "working" / "data" / SLUG / "index" / "split-seed3-val0.2.csv").is_file()
    assert tree_hash(kaggle / "input") == before  # the read-only mount untouched
