"""kit.data.images: every bad image kind gets its reason, odd ones load, results are cached, originals untouched."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import kit.data.images as images
from kit.data.images import check_images
from tests.fixtures import BAD_IMAGES, ODD_BUT_GOOD, image_bytes, write


def decode_rgb(path: str):
    import tensorflow as tf

    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records which files each check_images call really checked (not answered from the cache)."""
    calls: list[list[str]] = []
    real = images._check_all

    def recording(todo, workers, converted_dir):
        calls.append([key[0] for key in todo])
        return real(todo, workers, converted_dir)

    monkeypatch.setattr(images, "_check_all", recording)
    return calls


def test_bad_images_get_their_reason_and_odd_ones_load(tmp_path: Path) -> None:
    bad = {name: write(tmp_path / "in" / f"{name}.jpg", data) for name, (data, _) in BAD_IMAGES.items()}
    odd = {name: write(tmp_path / "in" / f"{name}.jpg", data) for name, data in ODD_BUT_GOOD.items()}
    result = check_images(list(bad.values()) + list(odd.values()), 1, tmp_path / "checks.csv", tmp_path / "conv")
    by_path = result.set_index("path")
    assert list(result.columns) == ["path", "ok", "reason", "load_path"]
    for name, (_, reason) in BAD_IMAGES.items():
        row = by_path.loc[str(bad[name])]
        assert not row["ok"] and reason in row["reason"] and row["load_path"] == "", name
    assert by_path.loc[str(bad["zero-byte"]), "reason"] == "empty file (0 bytes)"
    for name, path in odd.items():
        row = by_path.loc[str(path)]
        assert row["ok"] and row["reason"] == "", name
        assert row["load_path"] == str(path)  # TF reads these by content: no copy needed
        assert decode_rgb(row["load_path"]).shape == (32, 32, 3), name
    assert not (tmp_path / "conv").exists()


def test_formats_tensorflow_cannot_read_get_a_png_copy_and_originals_stay(tmp_path: Path) -> None:
    sources = {"photo.webp": image_bytes(fmt="WEBP"), "scan.tif": image_bytes(fmt="TIFF"),
               "webp-named.jpg": image_bytes(fmt="WEBP", seed=1), "mono.bmp": image_bytes("1", fmt="BMP")}
    files = {name: write(tmp_path / "in" / name, data) for name, data in sources.items()}
    result = check_images(list(files.values()), 1, tmp_path / "checks.csv", tmp_path / "conv")
    assert result["ok"].all(), result
    for (name, data), load_path in zip(sources.items(), result["load_path"]):
        assert Path(load_path).parent == tmp_path / "conv" and load_path.endswith(".png"), name
        assert decode_rgb(load_path).shape == (32, 32, 3), name
        assert files[name].read_bytes() == data  # never modified
    assert not list((tmp_path / "conv").glob(".*"))  # no temporary files left behind


def test_a_rerun_checks_only_new_and_changed_files(tmp_path: Path, spy: list[list[str]]) -> None:
    files = [write(tmp_path / "in" / f"{i}.jpg", image_bytes(seed=i)) for i in range(4)]
    cache = tmp_path / "checks.csv"
    first = check_images(files, 1, cache, tmp_path / "conv")
    assert first["ok"].all() and len(spy[0]) == 4 and cache.is_file()

    again = check_images(files, 1, cache, tmp_path / "conv")
    assert spy[1:] == [[]] and again.equals(first)

    write(files[2], BAD_IMAGES["truncated"][0])  # changed: new size and mtime
    os.utime(files[2], ns=(1, 1))
    added = write(tmp_path / "in" / "new.jpg", image_bytes(seed=9))
    third = check_images(files + [added], 1, cache, tmp_path / "conv")
    assert spy[2] == [str(files[2]), str(added)]
    assert third.set_index("path").loc[str(files[2]), "reason"] == "truncated image data"
    assert third["ok"].tolist() == [True, True, False, True, True]


def test_the_cache_keeps_entries_of_other_calls_and_survives_damage(tmp_path: Path, spy: list[list[str]]) -> None:
    train = [write(tmp_path / "train" / f"{i}.jpg", image_bytes(seed=i)) for i in range(2)]
    test = [write(tmp_path / "test" / f"{i}.jpg", image_bytes(seed=i)) for i in range(2)]
    cache = tmp_path / "checks.csv"
    check_images(train, 1, cache, tmp_path / "conv")
    check_images(test, 1, cache, tmp_path / "conv")
    check_images(train + test, 1, cache, tmp_path / "conv")
    assert [len(c) for c in spy] == [2, 2, 0]
    assert len(pd.read_csv(cache)) == 4

    cache.write_text("this is not,the cache\n\x00garbage")
    result = check_images(train, 1, cache, tmp_path / "conv")
    assert result["ok"].all() and len(spy[-1]) == 2


def test_a_pool_of_workers_gives_the_same_answers(tmp_path: Path) -> None:
    files = [write(tmp_path / "in" / f"{i}.jpg", image_bytes(size=16, seed=i)) for i in range(40)]
    files += [write(tmp_path / "in" / f"{name}.jpg", data) for name, (data, _) in BAD_IMAGES.items()]
    serial = check_images(files, 1, tmp_path / "serial.csv", tmp_path / "conv")
    pooled = check_images(files, 2, tmp_path / "pooled.csv", tmp_path / "conv")
    assert pooled.equals(serial)
    assert pooled["ok"].sum() == 40


def test_a_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    result = check_images([tmp_path / "gone.jpg"], 1, tmp_path / "checks.csv", tmp_path / "conv")
    assert not result["ok"][0] and "FileNotFoundError" in result["reason"][0]
