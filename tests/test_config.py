"""Config: defaults, YAML, --set overrides, and the errors that name the key."""
from pathlib import Path

import pytest
import yaml

from kit.config import Config, load_config, parse_overrides, save_provenance
from kit.errors import KitError

CONFIGS = sorted(Path(__file__).resolve().parent.parent.glob("configs/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.data.image_size > 0


def test_yaml_then_set_override_in_that_order(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  image_size: 128\n  batch_size: 8\n")
    cfg = load_config(path, ["data.image_size=160", "submit.tta=original,hflip,zoom", "train.lr=1"])
    assert (cfg.data.image_size, cfg.data.batch_size) == (160, 8)
    assert cfg.submit.tta == ["original", "hflip", "zoom"]
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert load_config(None, ["lr_find.start_lr=1e-6"]).lr_find.start_lr == 1e-6  # YAML 1.1 reads it as text
    assert Config().data.image_size == 224  # defaults untouched


def test_make_style_set_string_splits_into_items():
    assert parse_overrides(["data.image_size=160 train.lr=0.01", "a.b=1"]) == \
        ["data.image_size=160", "train.lr=0.01", "a.b=1"]


@pytest.mark.parametrize("override, words", [
    ("data.imge_size=1", ["unknown config key 'data.imge_size'", "image_size"]),
    ("dta.image_size=1", ["unknown config section 'dta'"]),
    ("data.image_size=big", ["'data.image_size'", "integer", "'big'"]),
    ("data.image_size=1.5", ["'data.image_size'", "integer"]),
    ("augment.flip=3", ["'augment.flip'", "true or false"]),
    ("train.lr=fast", ["'train.lr'", "number"]),
    ("submit.tta=[1, 2]", ["'submit.tta[0]'", "string"]),
    ("data.image_size", ["section.key=value"]),
])
def test_bad_override_names_the_key(override, words):
    with pytest.raises(KitError) as error:
        load_config(None, [override])
    assert all(w in str(error.value) for w in words), str(error.value)
    assert "\n" not in str(error.value)


def test_bad_yaml_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbon: resnet50\n")
    with pytest.raises(KitError, match=r"unknown config key 'model.backbon' \(.*bad.yaml\)"):
        load_config(path)
    path.write_text("model: resnet50\n")
    with pytest.raises(KitError, match="section 'model'.*mapping"):
        load_config(path)
    with pytest.raises(KitError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_provenance_saved_beside_outputs(tmp_path):
    cfg = load_config(None, ["data.image_size=96"])
    save_provenance(cfg, tmp_path / "out")
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["data"]["image_size"] == 96
    versions = (tmp_path / "out" / "versions.json").read_text()
    assert '"tensorflow": "2.21.0"' in versions and "git_commit" in versions


def test_folder_layout_without_a_folder_is_refused_not_the_working_directory(cfg):
    from kit import data
    cfg.competition.layout = "folder"
    with pytest.raises(KitError, match="competition.folder is empty"):
        data.run(cfg)
    cfg.competition.layout = "flat"
    with pytest.raises(KitError, match="competition.layout' must be one of kaggle-flat, folder"):
        data.run(cfg)
