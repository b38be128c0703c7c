"""The generated kernel script, run here as Kaggle would run it: on a fake /kaggle tree (the competition mounted
read only, kit's wheel attached as a dataset, no kit importable until the script installs it), with the demo
config. What it leaves in working/ is then brought back with `kit kernel output`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from kit.config import load_config
from kit.data import download
from kit.data.synthetic import make_competition_zip
from kit.kernel import bundle, kernel
from tests.conftest import output_paths
from tests.data.test_kaggle_env import mount, tree_hash
from tests.kernel.fake_kaggle import FakeKaggle
from tests.submit.cli import ROOT

SLUG = "dogs-vs-cats-redux-kernels-edition"


@pytest.mark.slow
@pytest.mark.parametrize("machine", ["gpu", pytest.param("tpu", marks=pytest.mark.jax)])
def test_the_kernel_script_runs_the_chain_on_a_fake_kaggle_and_output_brings_it_back(tmp_path, competition_zip, machine):
    """gpu: the stages on TensorFlow; tpu: on JAX (KERAS_BACKEND=jax, as on Kaggle's TPU image), here on the CPU."""
    if machine == "tpu" and not os.environ.get("KIT_NEED_JAX"):
        pytest.importorskip("jax", reason="JAX is not installed (pip install jax): its CI job installs it")
    # 32 training photos for 3 epochs keep the TensorFlow run short; on JAX (other random numbers) that stayed at
    # chance and submit rightly refused it: the TPU bundle gets the demo's 300 photos and its 15 epochs (1+2+4+8)
    epochs = 3 if machine == "gpu" else 15
    if machine == "tpu":
        competition_zip = make_competition_zip(tmp_path / "bigger" / f"{SLUG}.zip", train_per_class=150, n_test=20,
                                               size=64, seed=1)
    cfg = load_config(str(ROOT / "configs" / "demo.yaml"), [*output_paths(tmp_path), f"train.finetune_epochs={epochs}"])
    built = bundle.build(cfg, "alice", machine, [], tmp_path / "kernels")
    root = tmp_path / "kaggle"
    mount(competition_zip, root / "input" / "competitions" / SLUG, "files")
    attached = root / "input" / "datasets" / "alice" / "kit-code"
    shutil.copytree(built.folder / "code", attached)
    before = tree_hash(root / "input")
    cwd = tmp_path / "kernel-cwd"  # not the checkout: kit is importable only once the script installed it
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KAGGLE_KERNEL_RUN_TYPE", "KERAS_BACKEND")}
    env.update(KIT_KAGGLE_ROOT=str(root), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(built.kernel_folder / bundle.SCRIPT_NAME)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "kit kernel: installing kit-0.1.0-py3-none-any.whl" in result.stdout
    backend = {"gpu": "tensorflow", "tpu": "jax"}[machine]
    assert f"Keras backend {backend}" in result.stdout
    working = root / "working"
    summary = json.loads((working / "kit-kernel.json").read_text())
    assert summary["status"] == "complete" and list(summary["stages"]) == ["download", "train", "submit"]
    sample = pd.read_csv(root / "input" / "competitions" / SLUG / "sample_submission.csv")
    submission = pd.read_csv(working / "submission.csv")
    assert list(submission["id"]) == list(sample["id"]) and submission["label"].between(0, 1).all()
    (run,) = (working / "runs").iterdir()
    assert run.name.startswith("demo-") and (working / "submissions").is_dir()
    script: dict = {"__name__": "kit_kernel"}  # its SETTINGS, without running it
    exec((built.kernel_folder / bundle.SCRIPT_NAME).read_text(), script)
    settings = script["SETTINGS"]
    versions = json.loads((run / "versions.json").read_text())  # from the wheel, not this checkout's git
    assert versions["git_commit"] == settings["commit"] and versions["kit"] == "0.1.0"
    assert versions["keras_backend"] == backend  # the stages ran on it
    # What Kaggle keeps is the output: no extracted photos, no caches, no links to weights in it.
    assert sorted(p.name for p in working.iterdir()) == ["kit-kernel.json", "runs", "submission.csv",
                                                        "submission.csv.json", "submissions"]
    assert tree_hash(root / "input") == before  # the mounted competition and datasets are read only
    assert not list(cwd.iterdir())  # nothing written where it was started

    here = load_config(str(ROOT / "configs" / "demo.yaml"), output_paths(tmp_path / "local"))
    download.run(here, source=str(competition_zip))  # so the returned submission is checked against the sample
    (tmp_path / "local" / "kernels" / "kit-demo").mkdir(parents=True)
    (tmp_path / "local" / "kernels" / "kit-demo" / "push.json").write_text(json.dumps({"kernel": "alice/kit-demo"}))
    kernel.run(here, "output", api=FakeKaggle(output=working, log=result.stdout))
    assert (tmp_path / "local" / "runs" / run.name / "config.yaml").is_file()
    assert (tmp_path / "local" / "submission.csv").read_bytes() == (working / "submission.csv").read_bytes()
