"""kit.data.index: the data stage end to end on tiny folders; bad images quarantined, raw data never touched."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import kit.data.images as images
from kit import paths
from kit.data import index as data
from kit.data.dataset import load_index
from kit.config import Config
from kit.errors import KitError
from tests.fixtures import BAD_IMAGES, ODD_BUT_GOOD, image_bytes, write

INDEX_FILES = ["train.csv", "test.csv", "classes.json", "quarantine.csv", "index.json", "config.yaml",
               "versions.json"]


def extract_competition(competition_zip: Path, raw: Path) -> Path:
    """Unpack Kaggle's outer zip the way the download stage does: inner zips extracted, CSVs copied."""
    raw.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(competition_zip) as outer:
        for name in outer.namelist():
            if name.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(outer.read(name))) as inner:
                    inner.extractall(raw)
            else:
                (raw / name).write_bytes(outer.read(name))
    return raw


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(cfg: Config, competition_zip: Path) -> Path:
    """The synthetic competition (2 x 20 train, 12 test) extracted where the download stage puts it."""
    return extract_competition(competition_zip, paths.raw_dir(cfg))


def test_bad_train_images_are_quarantined_and_raw_data_is_untouched(cfg: Config, raw: Path, capsys) -> None:
    for name, (payload, _) in BAD_IMAGES.items():
        write(raw / "train" / f"cat.bad-{name}.jpg", payload)
    for name, payload in ODD_BUT_GOOD.items():
        write(raw / "train" / f"dog.odd-{name}.jpg", payload)
    write(raw / "train" / "wolf.1.jpg", image_bytes())
    before = tree_hash(raw)

    out = data.run(cfg)
    assert out == paths.index_dir(cfg) and tree_hash(raw) == before
    assert all((out / name).is_file() for name in INDEX_FILES + ["split-seed42-val0.2.csv", "checks.csv"])
    quarantine = pd.read_csv(out / "quarantine.csv").set_index("path")
    assert len(quarantine) == len(BAD_IMAGES) + 1
    for name, (_, reason) in BAD_IMAGES.items():
        assert reason in quarantine.loc[str(raw / "train" / f"cat.bad-{name}.jpg"), "reason"]
    assert "known class" in quarantine.loc[str(raw / "train" / "wolf.1.jpg"), "reason"]

    train = pd.read_csv(out / "train.csv")
    assert list(train.columns) == ["path", "label", "class_name", "split"] and len(train) == 40 + len(ODD_BUT_GOOD)
    assert json.loads((out / "classes.json").read_text()) == ["cat", "dog"]
    import tensorflow as tf
    for name in ODD_BUT_GOOD:
        row = train[train["path"] == str(raw / "train" / f"dog.odd-{name}.jpg")]
        assert row["label"].tolist() == [1]
        decoded = tf.io.decode_image(tf.io.read_file(row["path"].iloc[0]), channels=3, expand_animations=False)
        assert decoded.shape[-1] == 3

    printed = capsys.readouterr().out
    assert f"quarantined 4 of {44 + len(ODD_BUT_GOOD)} train images (" in printed
    assert "1 empty file" in printed and "1 truncated" in printed and "1 unknown class name" in printed
    assert f"{out / 'quarantine.csv'} — left out of training, not deleted" in printed
    assert "test: 12 images" in printed


def test_quarantine_csv_is_written_even_when_empty_and_test_ids_are_in_order(cfg: Config, raw: Path) -> None:
    out = data.run(cfg)
    assert pd.read_csv(out / "quarantine.csv").columns.tolist() == ["path", "reason"]
    assert pd.read_csv(out / "quarantine.csv").empty
    test = pd.read_csv(out / "test.csv")
    assert test["id"].tolist() == list(range(1, 13))
    assert test["path"].iloc[9] == str(raw / "test" / "10.jpg")
    assert yaml_seed(out) == 42


def yaml_seed(out: Path) -> int:
    import yaml
    return yaml.safe_load((out / "config.yaml").read_text())["data"]["seed"]


def test_split_is_stratified_written_once_and_a_new_seed_gets_its_own_file(cfg: Config, raw: Path) -> None:
    out = data.run(cfg)
    split_path = out / "split-seed42-val0.2.csv"
    first, stored = pd.read_csv(out / "train.csv"), split_path.read_bytes()
    assert first.groupby(["class_name", "split"]).size().to_dict() == {
        ("cat", "train"): 16, ("cat", "val"): 4, ("dog", "train"): 16, ("dog", "val"): 4}
    split_path.touch()
    mtime = split_path.stat().st_mtime_ns
    data.run(cfg)
    assert split_path.read_bytes() == stored and split_path.stat().st_mtime_ns == mtime
    assert pd.read_csv(out / "train.csv").equals(first)

    cfg.data.seed = 7
    data.run(cfg)
    other = pd.read_csv(out / "train.csv")
    assert (out / "split-seed7-val0.2.csv").is_file() and split_path.read_bytes() == stored
    assert not other["split"].equals(first["split"])
    assert (other["split"] == "val").sum() == 8


def test_a_bad_train_image_never_moves_others_between_splits(cfg: Config, raw: Path) -> None:
    first = pd.read_csv(data.run(cfg) / "train.csv").set_index("path")["split"]
    write(raw / "train" / "cat.3.jpg", b"")  # an image breaks after the split was made
    second = pd.read_csv(data.run(cfg) / "train.csv").set_index("path")["split"]
    assert str(raw / "train" / "cat.3.jpg") not in second.index
    assert second.equals(first.drop(str(raw / "train" / "cat.3.jpg")))


def test_an_unreadable_test_image_stops_the_stage_and_keeps_the_old_index(cfg: Config, raw: Path) -> None:
    out = data.run(cfg)
    before = {name: (out / name).read_bytes() for name in INDEX_FILES}
    write(raw / "test" / "5.jpg", BAD_IMAGES["truncated"][0])
    with pytest.raises(KitError) as error:
        data.run(cfg)
    message = str(error.value)
    assert str(raw / "test" / "5.jpg") in message and "truncated" in message and "\n" not in message
    assert {name: (out / name).read_bytes() for name in INDEX_FILES} == before


def test_test_ids_must_match_the_sample_submission(cfg: Config, raw: Path) -> None:
    (raw / "test" / "12.jpg").unlink()
    with pytest.raises(KitError, match=r"1 ids missing from test/ \(e\.g\. 12\), 0 not in it"):
        data.run(cfg)
    assert not (paths.index_dir(cfg) / "train.csv").exists()


def test_a_rerun_uses_the_checks_cache(cfg: Config, raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[int] = []
    real = images._check_all
    monkeypatch.setattr(images, "_check_all", lambda todo, *a: checked.append(len(todo)) or real(todo, *a))
    data.run(cfg)
    write(raw / "train" / "dog.99.jpg", image_bytes(seed=99))
    (paths.index_dir(cfg) / "split-seed42-val0.2.csv").unlink()  # the train images changed: split again
    data.run(cfg)
    data.run(cfg)
    assert checked == [52, 1, 0]


def test_changed_train_files_with_a_stored_split_are_a_clear_error(cfg: Config, raw: Path) -> None:
    data.run(cfg)
    write(raw / "train" / "dog.99.jpg", image_bytes(seed=99))
    with pytest.raises(KitError, match=r"\(1 added, 0 removed\): delete that file to split again"):
        data.run(cfg)


def test_folder_layout_with_three_classes(cfg: Config, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "pets"
    for label, name in enumerate(["abyssinian", "bengal", "birman"]):
        for i in range(10):
            write(folder / name / f"{name}_{i}.jpg", image_bytes(size=16, seed=10 * label + i))
    write(folder / "bengal" / "notes.txt", b"not an image")
    write(folder / "test" / "0001.jpg", image_bytes(size=16))
    cfg.competition.layout, cfg.competition.folder = "folder", str(folder)
    before = tree_hash(folder)

    out = data.run(cfg)
    assert tree_hash(folder) == before
    assert json.loads((out / "classes.json").read_text()) == ["abyssinian", "bengal", "birman"]
    index = load_index(cfg)
    assert index.classes == ["abyssinian", "bengal", "birman"]
    assert index.val["label"].value_counts().sort_index().tolist() == [2, 2, 2]
    assert index.test["id"].tolist() == ["0001"]  # folder ids are strings, leading zeros kept
    assert index.sample_submission is None
    assert "ignored 1 files" in capsys.readouterr().out


def test_load_index_splits_limits_and_explains_a_missing_index(cfg: Config, raw: Path) -> None:
    with pytest.raises(KitError, match=r"no dataset index in .*: run `make data` \(or `make download` first\)"):
        load_index(cfg)
    data.run(cfg)
    index = load_index(cfg)
    assert (len(index.train), len(index.val), len(index.test)) == (32, 8, 12)
    assert set(index.train.columns) >= {"path", "label"} and index.quarantine.empty
    assert index.sample_submission == raw / "sample_submission.csv"
    assert not set(index.train["path"]) & set(index.val["path"])

    cfg.data.limit_per_class = 5
    limited = load_index(cfg)
    assert limited.train["label"].value_counts().to_dict() == {0: 5, 1: 5}
    assert limited.val["label"].value_counts().to_dict() == {0: 2, 1: 2}  # ceil(5 * 0.2 / 0.8)
    assert set(limited.train["path"]) <= set(index.train["path"])
    assert limited.train.equals(load_index(cfg).train)  # deterministic
    cfg.data.seed = 1
    data.run(cfg)
    assert not set(load_index(cfg).train["path"]) == set(limited.train["path"])


def test_a_stale_index_is_an_error_and_the_cli_rebuilds_it_first(cfg: Config, raw: Path, capsys) -> None:
    from kit.__main__ import run_data_stage_first
    from kit.data.dataset import is_current

    data.run(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in paths.index_dir(cfg).iterdir()}
    cfg.data.val_fraction = 0.5
    assert not is_current(cfg)
    with pytest.raises(KitError, match=r"built for seed 42, val_fraction 0.2.*not seed 42, val_fraction 0.5.*make data"):
        load_index(cfg)  # a read never writes
    assert {p.name: p.stat().st_mtime_ns for p in paths.index_dir(cfg).iterdir()} == before
    run_data_stage_first("submit", cfg)  # what `python -m kit submit` does before the stage
    index = load_index(cfg)
    assert (len(index.train), len(index.val)) == (20, 20) and is_current(cfg)
    assert (paths.index_dir(cfg) / "split-seed42-val0.5.csv").is_file()
    capsys.readouterr()
    run_data_stage_first("submit", cfg)  # current: submit does not re-index
    run_data_stage_first("upload", cfg)  # upload never reads the index
    assert "indexed" not in capsys.readouterr().out


def test_the_fix_the_message_names_really_fixes_a_damaged_test_image(cfg: Config, competition_zip: Path,
                                                                        capsys) -> None:
    """Extract, damage a test image: the data stage names `make download`, which re-extracts; then it passes."""
    from kit.data import download

    raw = download.run(cfg, str(competition_zip))
    data.run(cfg)
    damaged = raw / "test" / "7.jpg"
    damaged.write_bytes(damaged.read_bytes()[:400])
    with pytest.raises(KitError, match=r"test image .*7\.jpg cannot be read: truncated image data; every test id "
                                       r"needs a prediction: re-extract the competition with `make download`"):
        data.run(cfg)
    capsys.readouterr()
    download.run(cfg, str(competition_zip))
    assert "test/7.jpg changed" in capsys.readouterr().out
    assert len(load_index(cfg).test) == 12 and data.run(cfg) and len(load_index(cfg).test) == 12


def test_a_folder_datasets_damaged_test_image_names_the_folder_not_make_download(cfg: Config, tmp_path: Path) -> None:
    folder = tmp_path / "pets"
    for name in ("a", "b"):
        for i in range(3):
            write(folder / name / f"{i}.jpg", image_bytes(size=16, seed=i))
    write(folder / "test" / "x.jpg", BAD_IMAGES["truncated"][0])
    cfg.competition.layout, cfg.competition.folder = "folder", str(folder)
    with pytest.raises(KitError, match=rf"needs a prediction: replace or remove it in {folder}; index left"):
        data.run(cfg)


def test_a_folder_dataset_needs_two_classes(cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "only-cats"
    for i in range(6):
        write(folder / "cat" / f"{i}.jpg", image_bytes(size=16, seed=i))
    write(folder / "dog" / "notes.txt", b"no images here")
    cfg.competition.layout, cfg.competition.folder = "folder", str(folder)
    monkeypatch.setattr(images, "_check_all", lambda *a: pytest.fail("refused before checking images"))
    with pytest.raises(KitError) as error:
        data.run(cfg)
    assert str(error.value) == (f"{folder} has one class folder with images (only 'cat'): a dataset needs at least "
                                f"two classes, one sub-folder of images each (e.g. {folder}/cat/, {folder}/dog/)")
    assert not paths.index_dir(cfg).exists()


def test_a_class_whose_images_are_all_bad_names_its_folder(cfg: Config, tmp_path: Path) -> None:
    folder = tmp_path / "pets"
    for i in range(4):
        write(folder / "cat" / f"{i}.jpg", image_bytes(size=16, seed=i))
        write(folder / "dog" / f"{i}.jpg", b"")
    cfg.competition.layout, cfg.competition.folder = "folder", str(folder)
    with pytest.raises(KitError, match=rf"^class 'dog' has no readable training images in {folder / 'dog'}: add "
                                       r"readable images to it \(see quarantine.csv\), or remove the folder$"):
        data.run(cfg)
    before = tree_hash(folder)
    write(folder / "dog" / "0.jpg", image_bytes(size=16, seed=9))
    assert tree_hash(folder) != before and data.run(cfg)  # fixed as the message said: it passes


def test_classes_of_one_image_leave_no_validation_split(cfg: Config, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    for name in ("a", "b"):
        write(folder / name / "0.jpg", image_bytes(size=16))
    cfg.competition.layout, cfg.competition.folder = "folder", str(folder)
    with pytest.raises(KitError, match=r"no readable validation images in .*tiny with data.val_fraction=0.2: each "
                                       r"class needs at least 2 readable images"):
        data.run(cfg)


def test_an_index_folder_that_cannot_be_written_fails_before_the_checks(cfg: Config, raw: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = tree_hash(raw)
    monkeypatch.setattr(paths, "index_dir", lambda c: blocker / "index")
    monkeypatch.setattr(images, "_check_all", lambda *a: pytest.fail("refused before checking images"))
    with pytest.raises(KitError, match=rf"^cannot write {blocker / 'index'}: \[Errno 20\] Not a directory.*: a "
                                       r"part of that path is a file, not a folder: set paths.data_dir to a folder$"):
        data.run(cfg)
    assert blocker.read_text() == "not a folder" and tree_hash(raw) == before


def test_disk_full_while_writing_the_index_keeps_the_old_one(cfg: Config, raw: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = data.run(cfg)
    before = {name: (out / name).read_bytes() for name in INDEX_FILES}
    real = data._write_csv

    def full(final, frame):
        if final.name == "quarantine.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(final, frame)

    monkeypatch.setattr(data, "_write_csv", full)
    cfg.data.seed = 3  # a new split: every index file would change
    with pytest.raises(KitError, match=rf"^cannot write {out}: \[Errno 28\] No space left on device: free space"):
        data.run(cfg)
    assert (out / "index.json").read_bytes() == before["index.json"]  # still the complete index of seed 42
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_disk_full_while_converting_is_not_blamed_on_the_image(cfg: Config, raw: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write(raw / "train" / "cat.webp-1.jpg", image_bytes(fmt="WEBP"))  # needs a PNG copy
    cfg.data.workers = 1  # checked in this process, where the patch applies

    @contextlib.contextmanager
    def full(final, suffix=""):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(images, "atomic_path", full)
    converted = paths.index_dir(cfg) / data.CONVERTED_DIR
    with pytest.raises(KitError, match=rf"^cannot write {converted}: \[Errno 28\] No space left on device: free "
                                       r"space on that disk, or set paths.data_dir"):
        data.run(cfg)
    monkeypatch.undo()
    data.run(cfg)  # nothing was cached as bad: with space, the image is indexed
    train = pd.read_csv(paths.index_dir(cfg) / "train.csv")
    assert train["path"].str.startswith(str(converted)).sum() == 1 and len(train) == 41


def test_a_phone_photo_is_trained_on_upright(cfg: Config, raw: Path) -> None:
    """EXIF orientation 6: the index points at an upright copy, so the pixel cache (and so training) sees it turned."""
    from kit.data import pipeline
    from tests.fixtures import oriented_photo

    photo = write(raw / "train" / "dog.phone.jpg", oriented_photo(6))
    before = tree_hash(raw)
    data.run(cfg)
    index = load_index(cfg)
    everything = pd.concat([index.train, index.val])
    load_path = [p for p in everything["path"] if Path(p).name.startswith("dog.phone")]
    assert len(load_path) == 1 and Path(load_path[0]).parent == paths.index_dir(cfg) / data.CONVERTED_DIR
    cfg.data.image_size = 16
    pixels = pipeline.load_images(cfg, load_path, "train")[0]
    top, bottom = pixels[:6].reshape(-1, 3).mean(0), pixels[10:].reshape(-1, 3).mean(0)
    assert top[0] > 180 > top[2] and bottom[2] > 180 > bottom[0]  # red above blue, as the phone showed it
    assert tree_hash(raw) == before and photo.read_bytes() == oriented_photo(6)


@pytest.mark.real
def test_the_real_mini_competition(cfg: Config, real_competition_zip: Path) -> None:
    raw = extract_competition(real_competition_zip, paths.raw_dir(cfg))
    before = tree_hash(raw)
    data.run(cfg)
    index = load_index(cfg)
    assert len(index.train) + len(index.val) == 3000 and len(index.val) == 600
    assert len(index.test) == 2000 and index.test["id"].tolist() == list(range(1, 2001))
    assert index.quarantine.empty
    assert index.train["label"].value_counts().to_dict() == {0: 1200, 1: 1200}
    assert tree_hash(raw) == before
