"""kit.data.listing: listing both layouts, labels, and a stratified split written once and reused."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kit.config import Config
from kit.errors import KitError
from kit.data.listing import list_dataset, load_or_make_split, make_split, split_file
from tests.fixtures import image_bytes, write


def flat_raw(root: Path, cats: int = 3, dogs: int = 2, test_ids=(10, 2, 1)) -> Path:
    for i in range(cats):
        write(root / "train" / f"cat.{i}.jpg", image_bytes(seed=i))
    for i in range(dogs):
        write(root / "train" / f"dog.{i}.jpg", image_bytes(seed=100 + i))
    for i in test_ids:
        write(root / "test" / f"{i}.jpg", image_bytes(seed=200 + i))
    return root


def folder_cfg(cfg: Config, folder: Path) -> Config:
    cfg.competition.layout, cfg.competition.folder = "folder", str(folder)
    return cfg


def test_kaggle_flat_labels_follow_the_class_list_and_test_ids_sort_numerically(cfg: Config, tmp_path: Path) -> None:
    raw = flat_raw(tmp_path / "raw")
    write(raw / "train" / "horse.1.jpg", image_bytes())
    write(raw / "train" / ".DS_Store", b"junk")
    listing = list_dataset(cfg, raw)
    assert listing.classes == ["cat", "dog"]
    assert listing.train.groupby("class_name")["label"].unique().to_dict() == {"cat": [0], "dog": [1]}
    assert listing.train["rel"].tolist()[:1] == ["train/cat.0.jpg"] and len(listing.train) == 5
    assert listing.unlabelled["path"].tolist() == [str(raw / "train" / "horse.1.jpg")]
    assert "does not start with a known class (cat, dog)" in listing.unlabelled["reason"][0]
    assert listing.ignored == [str(raw / "train" / ".DS_Store")]
    assert listing.test["id"].tolist() == [1, 2, 10]
    assert listing.test["path"].iloc[2] == str(raw / "test" / "10.jpg")


def test_kaggle_flat_custom_class_order_changes_labels(cfg: Config, tmp_path: Path) -> None:
    cfg.competition.classes = ["dog", "cat"]
    listing = list_dataset(cfg, flat_raw(tmp_path / "raw"))
    assert listing.train.groupby("class_name")["label"].first().to_dict() == {"cat": 1, "dog": 0}


@pytest.mark.parametrize("problem, message", [
    ("no-raw", "run `make download` first"),
    ("no-train", "train not found"),
    ("bad-test-name", "is not named <id>.jpg with an integer id"),
    ("duplicate-test-id", "test files share an id"),
    ("no-known-class", "no training images found"),
])
def test_kaggle_flat_problems_are_clear_errors(cfg: Config, tmp_path: Path, problem: str, message: str) -> None:
    raw = tmp_path / "raw"
    if problem == "no-train":
        write(raw / "test" / "1.jpg", image_bytes())
    elif problem == "bad-test-name":
        write(flat_raw(raw) / "test" / "cover.jpg", image_bytes())
    elif problem == "duplicate-test-id":
        write(flat_raw(raw) / "test" / "01.jpg", image_bytes())
    elif problem == "no-known-class":
        write(raw / "train" / "horse.1.jpg", image_bytes())
    with pytest.raises(KitError, match=message) as error:
        list_dataset(cfg, raw)
    assert "\n" not in str(error.value)


def test_folder_layout_classes_are_sorted_subfolders_and_other_files_are_ignored(cfg: Config, tmp_path: Path) -> None:
    folder = tmp_path / "breeds"
    for name, count in {"siamese": 2, "bengal": 3, "persian": 1}.items():
        for i in range(count):
            write(folder / name / f"img{i}.JPG", image_bytes(seed=i))
    write(folder / "bengal" / "nested" / "deep.png", image_bytes(fmt="PNG"))
    write(folder / "bengal" / "notes.txt", b"not an image")
    write(folder / "README.md", b"hello")
    write(folder / "empty-class" / "list.csv", b"a,b")
    write(folder / "test" / "b.jpg", image_bytes())
    write(folder / "test" / "a.jpg", image_bytes())
    listing = list_dataset(folder_cfg(cfg, folder), folder)
    assert listing.classes == ["bengal", "persian", "siamese"]
    assert listing.train["class_name"].value_counts().to_dict() == {"bengal": 4, "siamese": 2, "persian": 1}
    assert listing.train.set_index("rel").loc["bengal/nested/deep.png", "label"] == 0
    assert sorted(Path(p).name for p in listing.ignored) == ["README.md", "list.csv", "notes.txt"]
    assert listing.test["id"].tolist() == ["a", "b"]


def test_folder_layout_without_images_is_a_clear_error(cfg: Config, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    write(folder / "cats" / "readme.txt", b"nothing here")
    with pytest.raises(KitError, match="no training images found"):
        list_dataset(folder_cfg(cfg, folder), folder)
    with pytest.raises(KitError, match="set competition.folder"):
        list_dataset(folder_cfg(cfg, tmp_path / "nowhere"), tmp_path / "nowhere")


def labelled(counts: dict[int, int]) -> pd.DataFrame:
    return pd.DataFrame([{"rel": f"train/c{label}.{i}.jpg", "label": label}
                         for label, n in counts.items() for i in range(n)])


def test_split_is_stratified_seeded_and_deterministic() -> None:
    train = labelled({0: 100, 1: 30, 2: 7})
    split = make_split(train, seed=1, val_fraction=0.2)
    merged = train.merge(split.rename(columns={"path": "rel"}), on="rel")
    assert merged[merged["split"] == "val"]["label"].value_counts().to_dict() == {0: 20, 1: 6, 2: 1}
    assert split.equals(make_split(train, seed=1, val_fraction=0.2))
    assert not split.equals(make_split(train, seed=2, val_fraction=0.2))
    tiny = make_split(labelled({0: 2, 1: 1}), seed=0, val_fraction=0.1)
    assert tiny["split"].tolist().count("val") == 1  # a class of 2 still gets one val image; of 1, none
    assert (make_split(train, 0, 0.0)["split"] == "train").all()
    with pytest.raises(KitError, match="val_fraction is 1.0"):
        make_split(train, 0, 1.0)


def test_split_is_written_once_reused_and_checked_against_the_files(tmp_path: Path) -> None:
    train = labelled({0: 10, 1: 10})
    first, path = load_or_make_split(train, tmp_path, seed=3, val_fraction=0.25)
    assert path == split_file(tmp_path, 3, 0.25) and path.name == "split-seed3-val0.25.csv"
    stored = path.read_bytes()
    # reused even if the split function would now decide differently: the file is the truth
    path.write_text(path.read_text().replace(",val", ",VAL").replace(",train", ",val").replace(",VAL", ",train"))
    flipped = path.read_bytes()
    second, _ = load_or_make_split(train, tmp_path, seed=3, val_fraction=0.25)
    assert (second["split"] != first["split"]).all() and path.read_bytes() == flipped
    path.write_bytes(stored)

    grown = pd.concat([train, labelled({2: 3})], ignore_index=True)
    with pytest.raises(KitError, match=r"changed since .*split-seed3-val0.25.csv was written \(3 added, 0 removed\)"
                                       r".*delete that file to split again"):
        load_or_make_split(grown, tmp_path, seed=3, val_fraction=0.25)
    assert path.read_bytes() == stored
    path.write_text("nonsense\n1\n")
    with pytest.raises(KitError, match="damaged"):
        load_or_make_split(train, tmp_path, seed=3, val_fraction=0.25)
