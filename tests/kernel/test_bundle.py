"""The bundle `kit kernel push` uploads: a wheel pip installs offline, the datasets and the kernel's metadata, the
config embedded without the keys Notebook mode sets, and `--dry-run` pushing nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import yaml

from kit.config import load_config
from kit.errors import KitError
from kit.kernel import bundle
from kit.kernel.wheel import build_wheel, package_files
from kit.kernel.weights import weight_files
from tests.conftest import output_paths
from tests.submit.cli import ROOT, one_error_line, overrides, run_kit, tree

DEMO = str(ROOT / "configs" / "demo.yaml")


def test_the_wheel_holds_every_kit_module_and_installs_offline(tmp_path):
    wheel = build_wheel(tmp_path / "a")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"kit/{p.relative_to(ROOT / 'kit').as_posix()}" for p in package_files()} <= set(names)
    assert "kit/kernel/script.py" in names and not any("__pycache__" in n for n in names)
    assert build_wheel(tmp_path / "b").read_bytes() == wheel.read_bytes()  # same code, same bytes, same digest
    target = tmp_path / "lib"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    found = subprocess.run([sys.executable, "-c", "import kit.kernel.script, kit; print(kit.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert found == str(target / "kit" / "__init__.py")
    assert (target / "bin" / "kit").is_file()  # the console script, from entry_points.txt


def demo_config(tmp_path, *more: str):
    return load_config(DEMO, [*output_paths(tmp_path), "kernel.owner=alice", *more])


def test_bundle_metadata_sets_every_switch_and_embeds_the_config(tmp_path):
    cfg = demo_config(tmp_path, "train.finetune_epochs=2")
    built = bundle.build(cfg, "alice", "gpu", [], tmp_path / "kernels")
    assert built.folder == tmp_path / "kernels" / "kit-demo" / "bundle"
    meta = json.loads((built.kernel_folder / "kernel-metadata.json").read_text())
    assert meta == {"id": "alice/kit-demo", "title": "kit-demo", "code_file": "kit_kernel.py", "language": "python",
                    "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_tpu": False,
                    "enable_internet": False, "dataset_sources": ["alice/kit-code"],
                    "competition_sources": ["dogs-vs-cats-redux-kernels-edition"], "kernel_sources": [],
                    "model_sources": [], "machine_shape": "NvidiaTeslaT4"}
    code = json.loads((built.folder / "code" / "dataset-metadata.json").read_text())
    assert code["id"] == "alice/kit-code" and len(code["licenses"]) == 1
    assert not (built.folder / "weights").exists()  # model.weights=none: no weights dataset
    namespace: dict = {}
    exec(compile((built.kernel_folder / "kit_kernel.py").read_text(), "kit_kernel.py", "exec"), namespace)
    settings = namespace["SETTINGS"]
    assert settings["config_name"] == "demo" and settings["stages"] == ["download", "train", "submit"]
    data = yaml.safe_load(settings["config_yaml"])
    assert "paths" not in data and "kaggle_input" not in data["competition"]  # Notebook mode sets those
    (tmp_path / "demo.yaml").write_text(settings["config_yaml"])
    embedded = load_config(tmp_path / "demo.yaml")  # a config kit loads, with the pushed values
    assert embedded.train.finetune_epochs == 2 and embedded.model.backbone == "small_cnn"
    assert embedded.paths.runs_dir == "runs" and embedded.competition.kaggle_input == "/kaggle/input"
    assert settings["keras_backend"] == "tensorflow"
    cpu = bundle.build(cfg, "alice", "cpu", [], tmp_path / "kernels")
    meta = json.loads((cpu.kernel_folder / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is False and "machine_shape" not in meta


def test_a_tpu_bundle_asks_for_the_v5e_8_and_runs_its_stages_on_jax(tmp_path):
    built = bundle.build(demo_config(tmp_path), "alice", "tpu", [], tmp_path / "kernels")
    meta = json.loads((built.kernel_folder / "kernel-metadata.json").read_text())
    assert meta["enable_tpu"] is True and meta["enable_gpu"] is False and meta["machine_shape"] == "TpuV5E8"
    namespace: dict = {}
    exec(compile((built.kernel_folder / "kit_kernel.py").read_text(), "kit_kernel.py", "exec"), namespace)
    assert namespace["SETTINGS"]["keras_backend"] == "jax"  # the script's stages get KERAS_BACKEND=jax


def test_a_weights_file_of_ones_own_is_attached_and_found_by_name(tmp_path):
    own = tmp_path / "my-weights.h5"
    own.write_bytes(b"weights")
    cfg = demo_config(tmp_path, f"model.weights={own}")
    built = bundle.build(cfg, "alice", "gpu", weight_files(cfg), tmp_path / "kernels")
    assert (built.folder / "weights" / "my-weights.h5").read_bytes() == b"weights"
    meta = json.loads((built.kernel_folder / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == ["alice/kit-code", "alice/kit-weights"]
    text = (built.kernel_folder / "kit_kernel.py").read_text()
    assert '"weights_file": "my-weights.h5"' in text and str(tmp_path) not in text  # no local path leaks in


@pytest.mark.real
def test_imagenet_weights_are_the_files_keras_loads_at_every_size(keras_home, tmp_path):
    cfg = load_config(str(ROOT / "configs" / "dogs-vs-cats-redux.yaml"), output_paths(tmp_path))
    assert cfg.train.feature_image_size == 256 and cfg.data.image_size == 224
    files = weight_files(cfg)  # 224 and 256 px: MobileNetV2 loads its 224 px file for both
    assert [f.name for f in files] == ["mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"]
    assert files[0].parent == keras_home / "models"
    with pytest.raises(KitError, match="no ImageNet weights"):
        weight_files(load_config(None, [*output_paths(tmp_path), "model.backbone=small_cnn"]))


def test_a_slug_kaggle_would_refuse_and_a_folder_dataset_are_one_line_errors(tmp_path):
    with pytest.raises(KitError, match="not a Kaggle slug"):
        bundle.build(demo_config(tmp_path, "kernel.slug=Kit_Demo"), "alice", "gpu", [], tmp_path / "k")
    folder = demo_config(tmp_path, "competition.layout=folder", f"competition.folder={tmp_path}")
    with pytest.raises(KitError, match="runs a Kaggle competition"):
        bundle.build(folder, "alice", "gpu", [], tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_a_failed_build_leaves_the_previous_bundle_whole(tmp_path, monkeypatch):
    cfg = demo_config(tmp_path)
    built = bundle.build(cfg, "alice", "gpu", [], tmp_path / "kernels")
    before = tree(built.folder.parent)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle, "build_wheel", broken)
    with pytest.raises(OSError):
        bundle.build(cfg, "alice", "gpu", [], tmp_path / "kernels")
    assert tree(built.folder.parent) == before


def test_dry_run_from_the_command_line_writes_the_bundle(tmp_path):
    result = run_kit(tmp_path, "kernel", "push", "--dry-run", "--tpu", "--config", DEMO, *overrides(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing pushed" in result.stdout and "kernel bundle" in result.stdout
    assert "(TpuV5E8)" in result.stdout
    meta = json.loads((tmp_path / "kernels" / "kit-demo" / "bundle" / "kernel" / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is False and meta["enable_tpu"] is True and meta["enable_internet"] is False
    assert not (tmp_path / "kernels" / "kit-demo" / "push.json").exists()


def test_gpu_and_cpu_together_are_refused(tmp_path):
    result = run_kit(tmp_path, "kernel", "push", "--gpu", "--cpu", "--dry-run", "--config", DEMO)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    assert not (tmp_path / "kernels").exists()


def test_status_options_on_push_only(tmp_path):
    result = run_kit(tmp_path, "kernel", "status", "--gpu", "--config", DEMO, *overrides(tmp_path))
    assert "for `kit kernel push`" in one_error_line(result.returncode, result.stderr)
