"""bench/rehearsal.py, small: Kaggle's exact shape, every file a distinct real JPEG, the answer key right,
the same bytes from the same seed, and kit's download stage accepting it."""
from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
from PIL import Image

from bench import rehearsal
from kit.config import load_config
from kit.data import download
from tests.conftest import output_paths


def inner(zip_path, name: str) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as outer, zipfile.ZipFile(io.BytesIO(outer.read(name))) as member:
        return {n: member.read(n) for n in member.namelist()}


def test_a_small_rehearsal_has_kaggles_shape_and_distinct_files(tmp_path, competition_zip):
    out = rehearsal.build(tmp_path / "a", competition_zip, n_train=300, n_test=150, seed=3, workers=2)
    with zipfile.ZipFile(out) as outer:
        assert outer.namelist() == ["train.zip", "test.zip", "sample_submission.csv"]
        sample = pd.read_csv(io.BytesIO(outer.read("sample_submission.csv")))
    train, test = inner(out, "train.zip"), inner(out, "test.zip")
    assert set(train) == {f"train/{c}.{n}.jpg" for c in ("cat", "dog") for n in range(150)}
    assert set(test) == {f"test/{i}.jpg" for i in range(1, 151)}
    assert list(sample.columns) == ["id", "label"] and list(sample["id"]) == list(range(1, 151))
    everything = [*train.values(), *test.values()]
    assert len({hashlib.sha256(b).digest() for b in everything}) == len(everything)  # 40 photos, 450 files
    assert all(Image.open(io.BytesIO(b)).format == "JPEG" for b in everything[::37])
    key = pd.read_csv(out.with_name(out.name + ".test_labels.csv"))
    assert list(key["id"]) == list(range(1, 151)) and set(key["label"]) == {0, 1}
    again = rehearsal.build(tmp_path / "b", competition_zip, n_train=300, n_test=150, seed=3, workers=1)
    assert again.read_bytes() == out.read_bytes()  # the same seed, any number of workers: the same zip
    other = rehearsal.build(tmp_path / "c", competition_zip, n_train=300, n_test=150, seed=4, workers=2)
    assert inner(other, "train.zip")["train/cat.0.jpg"] != train["train/cat.0.jpg"]
    cfg = load_config(None, output_paths(tmp_path))
    raw = download.run(cfg, source=str(out))
    assert len(list((raw / "train").iterdir())) == 300 and len(list((raw / "test").iterdir())) == 150


def test_test_files_come_from_photos_no_train_file_uses_and_keep_their_label():
    labels = np.array([0] * 50 + [1] * 50)
    train, test, test_labels = rehearsal.assign(labels, 1000, 400, seed=0)
    train_sources = {source for _, source in train}
    assert not train_sources & set(test) and len(train_sources) == 80 and len(set(test)) == 20
    assert all(labels[s] == (name.startswith("train/dog")) for name, s in train)
    assert list(test_labels) == [labels[s] for s in test]
