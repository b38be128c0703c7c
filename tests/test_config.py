"""Config: defaults, YAML, --set overrides, each value checked for meaning at load, and what resuming compares."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from kit.config import REPLACED, Config, changed_for_resume, config_dict, load_config, resume_keys
from kit.config_values import parse_overrides
from kit.errors import KitError
from kit.provenance import save_provenance

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def refused(*overrides: str, path=None) -> str:
    """The one-line message load_config refuses `overrides` with."""
    with pytest.raises(KitError) as error:
        load_config(path, list(overrides))
    message = str(error.value)
    assert "\n" not in message, message
    return message


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
    assert load_config(None, ["submit.tta=[zoom, hflip]"]).submit.tta == ["zoom", "hflip"]
    assert Config().data.image_size == 224  # defaults untouched


def test_a_string_key_takes_set_text_as_written():
    cfg = load_config(None, ["train.run_name=2024", "submit.message='first try'", "model.weights=none"])
    assert (cfg.train.run_name, cfg.submit.message, cfg.model.weights) == ("2024", "first try", "none")


def test_make_style_set_string_splits_into_items():
    assert parse_overrides(["data.image_size=160 train.lr=0.01", "a.b=1"]) == \
        ["data.image_size=160", "train.lr=0.01", "a.b=1"]


def test_a_set_value_may_hold_spaces(tmp_path):
    items = parse_overrides([f"paths.data_dir={tmp_path}/my data  data.seed=7", "submit.message=first try, flips"])
    assert items == [f"paths.data_dir={tmp_path}/my data", "data.seed=7", "submit.message=first try, flips"]
    cfg = load_config(None, items)
    assert (cfg.paths.data_dir, cfg.data.seed, cfg.submit.message) == (f"{tmp_path}/my data", 7, "first try, flips")


@pytest.mark.parametrize("text, words", [
    (b"data:\n  image_size: [64\n", "not valid YAML at line 3"),
    (b"data:\n  seed: 1\n  cache: disk \xff\n", "not UTF-8 text"),
    (b"data: !!python/object:os.system {}\n", "not valid YAML at line 1 (could not determine a constructor"),
    (b"data:\n\tseed: 1\n", "not valid YAML at line 2"),
])
def test_a_broken_yaml_file_is_one_line_naming_the_file_and_line(text, words, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_bytes(text)
    message = refused(path=path)
    assert words in message and str(path) in message and "\n" not in message, message


def test_a_malformed_set_value_names_the_key():
    assert "'data.image_size' must be an integer, got '[64'" in refused("data.image_size=[64")


# ---- choices: Literal[...] ------------------------------------------------------------------------------

@pytest.mark.parametrize("override, allowed", [
    ("data.cache=memroy", "disk, memory, none"),
    ("augment.engine=fast", "fused, keras_cv"),
    ("train.feature_engine=gpu", "auto, tflite, keras"),
    ("train.head=backbone", "images, features"),
    ("model.backbone=vgg99", "mobilenet_v2"),
    ("model.pooling=median", "avg, max"),
    ("competition.layout=flat", "kaggle-flat, folder"),
    ("lr_find.stage=all", "head, finetune"),
])
def test_a_choice_outside_its_literal_fails_at_load_naming_key_value_and_choices(override, allowed):
    key, value = override.split("=")
    message = refused(override)
    assert f"'{key}'" in message and repr(value) in message and allowed in message, message


def test_a_choice_in_a_list_is_checked_item_by_item(tmp_path):
    assert "'submit.tta[1]'" in refused("submit.tta=original,flip")
    assert "'export.formats[0]'" in refused("export.formats=onnx")
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  cache: true\n")  # a YAML boolean is not the string "true"
    assert "data.cache" in refused(path=path) and "x.yaml" in refused(path=path)


# ---- tri-state keys: bool | "auto" -----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("true", True), ("false", False), ("on", True), ("off", False), ("yes", True), ("no", False),
    ("auto", "auto"), ("True", True), ("AUTO", "auto"),
])
@pytest.mark.parametrize("key", ["train.jit_compile", "train.mixed_precision"])
def test_tri_state_keys_take_true_false_on_off_yes_no_or_auto(key, text, expected, tmp_path):
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [f"{key}={text}"]), section), name) == expected
    path = tmp_path / "x.yaml"
    path.write_text(f"{section}:\n  {name}: {text}\n")  # YAML 1.1 reads on/off/yes/no as booleans itself
    assert getattr(getattr(load_config(path), section), name) == expected


def test_tri_state_keys_refuse_anything_else():
    assert "auto, true or false" in refused("train.jit_compile=maybe")
    assert "'train.mixed_precision'" in refused("train.mixed_precision=1")


# ---- ranges ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, allowed", [
    ("data.image_size=4", "from 8 to 1024"),
    ("data.image_size=0", "from 8 to 1024"),
    ("data.image_size=-5", "from 8 to 1024"),
    ("data.image_size=10000", "from 8 to 1024"),  # was accepted, then failed as "cannot decode image"
    ("data.batch_size=0", "from 1 to"),
    ("data.val_fraction=1", "> 0 and <= 0.9"),
    ("data.val_fraction=-0.1", "> 0 and <= 0.9"),
    ("data.val_fraction=0", "> 0 and <= 0.9"),  # training keeps the best epoch by validation log loss
    ("data.limit_per_class=-1", ">= 0"),
    ("data.workers=-2", ">= 0"),
    ("model.dropout=1.0", ">= 0 and < 1"),
    ("model.dropout=1.5", ">= 0 and < 1"),
    ("train.lr=-1", "> 0"),  # trained to a log loss of 8,070,075 and exited 0
    ("train.label_smoothing=2", "< 1"),
    ("train.lr=0", "> 0"),
    ("train.head_lr=-1e-3", "> 0"),
    ("train.head_epochs=-1", ">= 0"),
    ("train.finetune_epochs=-1", ">= 0"),
    ("train.label_smoothing=1", "< 1"),
    ("train.group_lr_ratios=0.1,-1", ">= 0"),
    ("train.feature_passes=1000", "from 0 to 100"),
    ("augment.zoom=0.5", "from 1 to 4"),
    ("submit.clip=0.5", ">= 0 and < 0.5"),
    ("lr_find.steps=5", "from 10 to"),
    ("train.lr=.nan", "finite number"),
])
def test_an_out_of_range_value_fails_naming_the_range(override, allowed):
    key = override.split("=")[0]
    message = refused(override)
    assert f"'{key}" in message and allowed in message, message


@pytest.mark.parametrize("overrides, words", [
    (["lr_find.start_lr=1", "lr_find.end_lr=0.1"], "must be below lr_find.end_lr"),
    (["train.head_epochs=0", "train.finetune_epochs=0"], "nothing to train"),
    (["train.head=features", "train.head_epochs=0"], "train.head=features"),
    (["train.feature_passes=2"], "set train.head=features"),
    (["train.head=features", "train.feature_passes=1", "augment.enabled=false"], "needs augmentation"),
    (["train.feature_image_size=16"], "feature_image_size' must be 0"),
    (["competition.classes=cat,cat"], "two different classes"),
    (["competition.classes=cat"], "two different classes"),
])
def test_rules_between_keys_fail_at_load(overrides, words):
    assert words in refused(*overrides)


def test_a_head_only_run_is_head_features_with_no_finetune_epochs():
    cfg = load_config(None, ["train.head=features", "train.head_epochs=20", "train.finetune_epochs=0",
                             "train.feature_passes=2", "train.feature_image_size=256"])
    assert (cfg.train.head, cfg.train.finetune_epochs, cfg.train.feature_image_size) == ("features", 0, 256)


# ---- wrong names -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ("data.imge_size=1", ["unknown config key 'data.imge_size'", "image_size"]),
    ("dta.image_size=1", ["unknown config section 'dta'"]),
    ("data.image_size=big", ["'data.image_size'", "integer", "'big'"]),
    ("data.image_size=1.5", ["'data.image_size'", "integer"]),
    ("augment.flip=3", ["'augment.flip'", "true or false"]),
    ("train.lr=fast", ["'train.lr'", "number"]),
    ("data.image_size", ["section.key=value"]),
])
def test_bad_override_names_the_key(override, words):
    message = refused(override)
    assert all(w in message for w in words), message


@pytest.mark.parametrize("old", sorted(REPLACED))
def test_an_old_stage_1_key_names_its_replacement(old, tmp_path):
    message = refused(f"{old}=1")
    assert f"'{old}'" in message and "replaced" in message and "train." in message.split("replaced")[1]
    section, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {key}: 1\n")
    assert "old.yaml" in refused(path=path) and REPLACED[old] in refused(path=path)


def test_replaced_keys_point_at_keys_that_exist():
    known = {f"{s}.{k}" for s, values in config_dict(Config()).items() if isinstance(values, dict) for k in values}
    assert not known & set(REPLACED)
    for old, hint in REPLACED.items():
        named = {word.strip(".,:()").split("=")[0] for word in hint.split() if word.startswith("train.")}
        assert named and named <= known, (old, named - known)


def test_bad_yaml_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbon: resnet50\n")
    with pytest.raises(KitError, match=r"unknown config key 'model.backbon' \(.*bad.yaml\)"):
        load_config(path)
    path.write_text("model: resnet50\n")
    with pytest.raises(KitError, match="section 'model'.*mapping"):
        load_config(path)
    path.write_text("model: [unclosed\n")
    assert "not valid YAML" in refused(path=path)
    with pytest.raises(KitError, match="not found"):
        load_config(tmp_path / "missing.yaml")


# ---- the CLI refuses before touching anything ------------------------------------------------------------

def test_cli_refuses_a_misspelt_choice_with_one_line_and_exit_2_before_touching_anything(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "kit", "train", "--config", str(ROOT / "configs" / "demo.yaml"),
                             "--set", "data.cache=memroy"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'data.cache'" in lines[0] and "memroy" in lines[0]
    assert list(tmp_path.iterdir()) == []  # demo.yaml's relative demo/data, demo/runs, ... were not made


# ---- resuming: which keys are compared -------------------------------------------------------------------

def test_which_keys_matter_for_resuming_is_declared_on_each_field():
    keys = resume_keys()
    assert {"data.image_size", "model.backbone", "train.lr", "train.head", "train.feature_passes"} <= set(keys)
    assert not [k for k in keys if k.split(".")[0] in ("paths", "submit", "lr_find", "export")]
    assert not {"train.run_name", "train.resume", "data.workers", "data.cache"} & set(keys)
    cfg = Config()
    for section in (f.name for f in dataclasses.fields(cfg) if f.name != "name"):
        for f in dataclasses.fields(getattr(cfg, section)):
            assert isinstance(f.metadata.get("resume"), bool), f"{section}.{f.name} declares no resume flag"


def test_a_key_missing_from_a_saved_config_compares_as_its_default():
    saved = config_dict(Config())
    del saved["train"]["head"], saved["train"]["feature_passes"]  # saved before these keys existed
    assert changed_for_resume(saved, Config()) == []
    assert changed_for_resume(saved, load_config(None, ["train.head=features", "train.head_epochs=5"])) == \
        ["train.head", "train.head_epochs"]


def test_old_or_unknown_keys_in_a_saved_config_are_ignored_and_bad_values_count_as_changed():
    saved = config_dict(Config())
    saved["train"]["precompute"] = False  # an old run's key
    saved["gone"] = {"x": 1}
    assert changed_for_resume(saved, Config()) == []
    saved["data"]["image_size"] = "huge"
    assert changed_for_resume(saved, Config()) == ["data.image_size"]


def test_changing_a_key_that_does_not_change_training_is_not_a_change(tmp_path):
    saved = config_dict(Config())
    cfg = load_config(None, ["submit.clip=0.01", f"paths.runs_dir={tmp_path}", "train.resume=false",
                             "data.workers=1", "export.formats=keras", "train.jit_compile=true"])
    assert changed_for_resume(saved, cfg) == []
    assert changed_for_resume(saved, load_config(None, ["data.image_size=160", "train.lr=0.01"])) == \
        ["data.image_size", "train.lr"]


def test_a_saved_config_round_trips_through_yaml_unchanged(tmp_path):
    cfg = load_config(CONFIGS[0], ["train.jit_compile=off"])
    saved = yaml.safe_load(yaml.safe_dump(config_dict(cfg)))
    assert changed_for_resume(saved, cfg) == []


# ---- the registries the Literals mirror -----------------------------------------------------------------

def test_choice_literals_match_the_registries_they_name():
    from kit.config import BACKBONE_NAMES, EXPORT_FORMATS, VIEWS
    from kit.data.augment import TTA_VIEWS
    from kit.model.backbones import BACKBONES
    from kit.submit.export import FORMATS

    assert set(typing.get_args(VIEWS)) == set(TTA_VIEWS)
    assert set(typing.get_args(BACKBONE_NAMES)) == set(BACKBONES)
    assert set(typing.get_args(EXPORT_FORMATS)) == set(FORMATS)


# ---- provenance ------------------------------------------------------------------------------------------

def test_provenance_saved_beside_outputs(tmp_path):
    cfg = load_config(None, ["data.image_size=96"])
    save_provenance(cfg, tmp_path / "out")
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["data"]["image_size"] == 96
    assert changed_for_resume(saved, cfg) == []
    versions = json.loads((tmp_path / "out" / "versions.json").read_text())
    assert versions["tensorflow"] and versions["keras"] and "git_commit" in versions


def test_folder_layout_without_a_folder_is_refused_not_the_working_directory(cfg):
    from kit.data import index as data
    cfg.competition.layout = "folder"
    with pytest.raises(KitError, match="competition.folder is empty"):
        data.run(cfg)
