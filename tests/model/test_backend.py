"""The JAX backend (KERAS_BACKEND=jax): the demo chain end to end, TensorFlow-only features refused in one line
with nothing written, and runs read across backends (a TensorFlow run killed and resumed on JAX; a JAX run
submitted on TensorFlow gives the same probabilities).

JAX runs in a subprocess (this process's Keras is on TensorFlow): SCRIPT calls kit's CLI once per line of
COMMANDS and prints each exit code. Marked `jax` (make test-jax, its own CI job).
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config import load_config
from kit.model import backend, engine
from tests.conftest import SMALL_MODEL, output_paths
from tests.train.test_resume import killed_run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent('''
    import contextlib, io, json, sys
    from kit.__main__ import main

    for name, argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv)
        print(f"STDERR {name} " + json.dumps(err.getvalue()[-3000:]))
        print(f"RC {name} {rc}", flush=True)
''')
DEMO = ["--config", "configs/demo.yaml"]


def small_overrides(tmp: Path) -> list[str]:
    return output_paths(tmp / "small") + SMALL_MODEL + [
        "data.image_size=32", "data.batch_size=8", "data.val_fraction=0.25", "train.head_epochs=1",
        "train.finetune_epochs=3", "train.cycle_epochs=1", "train.group_lr_ratios=[0.3, 1.0]", "data.workers=1"]


def commands(small: list[str]) -> list:
    demo_img = "demo/data/dogs-vs-cats-redux-kernels-edition/raw/test/1.jpg"
    return [
        ["demo", ["demo", *DEMO, "--set", "data.workers=1"]],
        ["lr_find", ["lr-find", *DEMO, "--set", "data.workers=1"]],
        ["report", ["report", *DEMO]],
        ["predict", ["predict", *DEMO, demo_img, "--tta"]],
        ["export_tf_formats", ["export", *DEMO]],
        ["export_keras", ["export", *DEMO, "--set", "export.formats=[keras]"]],
        ["tflite_engine", ["train", *DEMO, "--set", "train.feature_engine=tflite train.run_name=refused"]],
        ["mirrored", ["train", *DEMO, "--set", "train.distribute=mirrored train.run_name=refused2"]],
        ["resume_small", ["train", "--set", " ".join(small)]],
    ]


@pytest.fixture(scope="module")
def on_jax(tmp_path_factory):
    """(folder, {command: exit code}, {command: stderr}, stdout): a TensorFlow run killed here, then the
    commands on JAX in one subprocess."""
    if not os.environ.get("KIT_NEED_JAX"):
        pytest.importorskip("jax", reason="JAX is not installed (pip install jax): its CI job installs it")
    tmp = tmp_path_factory.mktemp("jax")
    shutil.copytree(ROOT / "configs", tmp / "configs")
    small = small_overrides(tmp)
    from kit.data import download, index
    from kit.data.synthetic import make_competition_zip

    cfg = load_config(None, small)
    download.run(cfg, source=str(make_competition_zip(tmp / "c.zip", train_per_class=24, n_test=8, size=32, seed=5)))
    index.run(cfg)
    monkeypatch = pytest.MonkeyPatch()
    killed_run(cfg, monkeypatch, epoch=2)  # on TensorFlow, after its 2nd epoch: JAX continues it
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "KIT_KAGGLE_ROOT": "off",
           "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands(small))], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    codes = {line.split()[1]: int(line.split()[2]) for line in done.stdout.splitlines() if line.startswith("RC ")}
    errors = {line.split()[1]: json.loads(line.split(" ", 2)[2]) for line in done.stdout.splitlines()
              if line.startswith("STDERR ")}
    return tmp, codes, errors, done.stdout


def demo_run(tmp: Path) -> Path:
    (run,) = [p for p in (tmp / "demo" / "runs").iterdir() if (p / "summary.json").is_file()]
    return run


@pytest.mark.jax
def test_the_demo_chain_runs_on_jax(on_jax):
    tmp, codes, errors, out = on_jax
    assert codes["demo"] == 0, errors["demo"]
    assert "backend jax (1 cpu device)" in out and "XLA on" in out  # un-jitted JAX would run op by op
    run = demo_run(tmp)
    assert json.loads((run / "versions.json").read_text())["keras_backend"] == "jax"
    assert len(pd.read_csv(tmp / "demo" / "submission.csv")) == 100
    assert json.loads((run / "summary.json").read_text())["val_log_loss"] < 0.5  # it learned
    for name in ("lr_find", "report", "predict", "export_keras"):
        assert codes[name] == 0, (name, errors[name])
    assert (run / "export" / "model.keras").is_file() and (run / "report.html").is_file()


@pytest.mark.jax
def test_tensorflow_only_features_are_refused_in_one_line_and_write_nothing(on_jax):
    tmp, codes, errors, _ = on_jax
    assert codes["export_tf_formats"] == 2
    (line,) = errors["export_tf_formats"].strip().splitlines()
    assert "saved_model" in line and "needs the TensorFlow backend" in line and "KERAS_BACKEND=tensorflow" in line
    assert codes["tflite_engine"] == 2 and "train.feature_engine=tflite needs the TensorFlow backend" in errors["tflite_engine"]
    assert codes["mirrored"] == 2 and "train.distribute=data_parallel" in errors["mirrored"]
    runs = {p.name for p in (tmp / "demo" / "runs").iterdir()}
    assert not runs & {"refused", "refused2"}  # refused before a run folder exists


@pytest.mark.jax
def test_a_tensorflow_run_killed_midway_is_resumed_on_jax(on_jax):
    tmp, codes, errors, out = on_jax
    assert codes["resume_small"] == 0, errors["resume_small"]
    assert "started on the tensorflow backend and continues on jax" in out
    (run,) = (tmp / "small" / "runs").iterdir()
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1, 2, 3]
    steps = -(-18 * 2 // 8)  # 36 training images, batches of 8: as if never interrupted
    assert json.loads((run / "summary.json").read_text())["optimizer_iterations"] == 3 * steps


@pytest.mark.jax
def test_a_jax_run_submits_the_same_probabilities_on_tensorflow(on_jax):
    from kit.submit import submit

    tmp, codes, _, _ = on_jax
    assert codes["demo"] == 0
    on_jax_file = pd.read_csv(tmp / "demo" / "submission.csv")
    os.chdir(tmp)  # configs/demo.yaml's paths are relative
    try:
        cfg = load_config("configs/demo.yaml", ["train.plan=false"])
        submit.run(cfg)
    finally:
        os.chdir(ROOT)
    on_tf = pd.read_csv(tmp / "demo" / "submission.csv")
    assert list(on_tf["id"]) == list(on_jax_file["id"])
    assert np.max(np.abs(on_tf["label"] - on_jax_file["label"])) < 1e-3


def test_tensorflow_keeps_its_own_engine_and_allows_every_feature(cfg):
    backend.require_tensorflow("anything")  # no error on TensorFlow
    assert engine.engine_name(cfg) == ("tflite" if backend.accelerator() is None else "keras")
