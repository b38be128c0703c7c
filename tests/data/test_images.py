"""kit.data.images: every bad image kind gets its reason, odd ones load, results are cached, originals untouched."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import kit.data.images as images
from kit.data.images import check_images
from kit.errors import KitError
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


def test_a_copy_that_cannot_be_written_is_an_error_about_the_folder_even_from_a_pool(tmp_path: Path) -> None:
    files = [write(tmp_path / "in" / f"{i}.jpg", image_bytes(size=16, seed=i)) for i in range(40)]
    files.append(write(tmp_path / "in" / "photo.webp", image_bytes(fmt="WEBP")))
    blocker = write(tmp_path / "a-file", b"not a folder")
    with pytest.raises(KitError, match=rf"^cannot write {blocker / 'conv'}: \[Errno 20\] Not a directory.*set "
                                       r"paths.data_dir to a folder$"):
        check_images(files, 2, tmp_path / "checks.csv", blocker / "conv")
    assert not (tmp_path / "checks.csv").exists()  # nothing cached: the webp is not recorded as a bad image


# --- EXIF orientation: TensorFlow ignores it, kit loads the photo upright as PIL.ImageOps.exif_transpose does ---

def upright(path: Path):
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.mark.parametrize("orientation, fmt", [(6, "JPEG"), (8, "JPEG"), (3, "JPEG"), (2, "PNG"), (6, "WEBP")])
def test_an_exif_orientation_is_applied_through_a_copy(tmp_path: Path, orientation: int, fmt: str) -> None:
    import numpy as np

    from tests.fixtures import oriented_photo

    original = write(tmp_path / "in" / f"phone.{fmt.lower()}", oriented_photo(orientation, fmt))
    data = original.read_bytes()
    result = check_images([original], 1, tmp_path / "checks.csv", tmp_path / "conv")
    load_path = Path(result["load_path"][0])
    assert result["ok"][0] and load_path.parent == tmp_path / "conv"
    assert load_path.suffix == (".jpg" if fmt == "JPEG" else ".png")
    loaded, expected = decode_rgb(str(load_path)).numpy(), upright(original)
    assert loaded.shape == expected.shape == ((64, 32, 3) if orientation in (6, 8) else (32, 64, 3))
    assert np.abs(loaded.astype(int) - expected).mean() < 2  # a quality-95 JPEG copy of a JPEG, else exact
    if fmt != "JPEG":
        np.testing.assert_array_equal(loaded, expected)
    assert original.read_bytes() == data  # never modified
    assert not list((tmp_path / "conv").glob(".*"))


def test_photos_without_a_turn_are_read_in_place(tmp_path: Path) -> None:
    from tests.fixtures import oriented_photo

    upright_tag = write(tmp_path / "in" / "tagged-upright.jpg", oriented_photo(1))
    no_exif = write(tmp_path / "in" / "plain.jpg", image_bytes())
    damaged = bytearray(oriented_photo(6))
    start = damaged.index(b"Exif\0\0")
    damaged[start + 6:start + 14] = b"XXXXXXXX"  # the TIFF header of the EXIF block: unparseable
    broken_exif = write(tmp_path / "in" / "broken-exif.jpg", bytes(damaged))
    result = check_images([upright_tag, no_exif, broken_exif], 1, tmp_path / "checks.csv", tmp_path / "conv")
    assert result["ok"].all() and result["load_path"].tolist() == [str(upright_tag), str(no_exif), str(broken_exif)]
    assert not (tmp_path / "conv").exists()


def test_check_results_from_before_orientation_was_read_are_not_reused(tmp_path: Path, spy) -> None:
    from tests.fixtures import oriented_photo

    photo = write(tmp_path / "in" / "phone.jpg", oriented_photo(6))
    stat = photo.stat()
    cache = tmp_path / "checks.csv"
    pd.DataFrame([{"path": str(photo), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ok": True,
                   "reason": "", "load_path": str(photo)}]).to_csv(cache, index=False)  # an older kit's cache
    result = check_images([photo], 1, cache, tmp_path / "conv")
    assert spy == [[str(photo)]] and Path(result["load_path"][0]).parent == tmp_path / "conv"
    assert pd.read_csv(cache)["check_version"].tolist() == [images.CHECK_VERSION]
    rows = pd.read_csv(cache)
    rows["check_version"] = images.CHECK_VERSION - 1  # a row of another version in a current-format file
    rows.to_csv(cache, index=False)
    check_images([photo], 1, cache, tmp_path / "conv")
    assert spy[1] == [str(photo)]


def test_predicting_a_phone_photo_reads_it_upright() -> None:
    import tempfile

    from kit.data.user_images import read_images
    from tests.fixtures import oriented_photo

    with tempfile.TemporaryDirectory() as folder:
        photo = write(Path(folder) / "phone.jpg", oriented_photo(6))
        pixels, reasons = read_images([(str(photo), "")], 16)
    assert reasons == [""] and pixels.shape == (1, 16, 16, 3)
    top, bottom = pixels[0, :6].reshape(-1, 3).mean(0), pixels[0, 10:].reshape(-1, 3).mean(0)
    assert top[0] > 180 > top[2] and bottom[2] > 180 > bottom[0]  # red above blue: turned upright
