"""train.distribute on two CPU devices, on both backends: TensorFlow's MirroredStrategy (two logical CPUs) and
JAX's keras.distribution.DataParallel (two host devices) match one device, keep the layer-group rates, resume
after a kill, train the head on features; `auto` on one CPU is one device.

Two devices must be configured before the backend initialises them, which the other tests have done long
before (or on another backend): so the distributed checks run in ONE subprocess per backend (SCRIPT below)
that prints JSON. JAX's: KERAS_BACKEND=jax, XLA_FLAGS=--xla_force_host_platform_device_count=2, and a last
batch of 9 rows that the 2 devices cannot split (padded at sample weight 0: kit/model/device.py).
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import SMALL_MODEL, output_paths

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path

    import tensorflow as tf

    import keras

    CHOICE = "data_parallel" if keras.backend.backend() == "jax" else "mirrored"
    if CHOICE == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np
    import pandas as pd

    from kit.config import load_config
    from kit.model import device
    from kit.model.optim import make_optimizer
    from kit.train.recipe import compile_model

    tmp, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
    out = {}
    out["auto_distributed"] = device.is_distributed(device.strategy(load_config(None, [])))
    mirrored = device.strategy(load_config(None, [f"train.distribute={CHOICE}"]))
    out["replicas"] = mirrored.num_replicas_in_sync
    out["describe"] = device.describe(mirrored)
    out["batch_line"] = device.batch_line(16, mirrored)

    rng = np.random.default_rng(0)
    cfg = load_config(None, [])

    def train(choice, low_ratio, steps=4):
        """`steps` steps of 16 (global), from the same initial weights, and on JAX one more of 9 rows;
        (initial weights, final weights, last loss)."""
        strategy = device.strategy(load_config(None, [f"train.distribute={choice}"]))
        rows = 16 * steps + (9 if CHOICE == "data_parallel" else 0)
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="low"),
                                      keras.layers.Dense(1, activation="sigmoid", name="top")])
            multipliers = {v.path: low_ratio for v in model.get_layer("low").trainable_variables}
            compile_model(model, make_optimizer("adam", 0.05, multipliers), cfg, 2)
        before = [w.copy() for w in model.get_weights()]
        ds = device.for_strategy(tf.data.Dataset.from_tensor_slices((x[:rows], y[:rows])).batch(16), strategy)
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return before, model.get_weights(), (history.history["loss"][-1], history.history["log_loss"][-1])

    x = rng.normal(size=(73, 8)).astype("float32")
    y = (x[:, :1] + 0.5 * x[:, 1:2] > 0).astype("float32")
    start_1, single, loss_1 = train("none", 0.3)  # on JAX: also clears the distribution set above
    start_2, mirror, loss_2 = train(CHOICE, 0.3)
    out["same_start"] = all(np.array_equal(a, b) for a, b in zip(start_1, start_2))
    out["max_weight_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirror))
    out["moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(single, start_1))
    out["loss_diff"] = abs(loss_1[0] - loss_2[0])
    out["log_loss_diff"] = abs(loss_1[1] - loss_2[1])

    start, end, _ = train(CHOICE, 0.0)
    out["frozen_group_moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(start[:2], end[:2]))
    out["top_group_moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(start[2:], end[2:]))

    # A mirrored run of the whole train stage, killed after epoch 2 is backed up, then resumed.
    from kit.data import download, index
    from kit.data.synthetic import make_competition_zip
    from kit.train import fit as train_stage

    class Killed(KeyboardInterrupt):
        pass

    source = make_competition_zip(tmp / "c.zip", train_per_class=24, n_test=9, size=32, seed=5)
    overrides = overrides + ["data.workers=1"]  # no process pool: its children would run this script again
    run_cfg = load_config(None, overrides + [f"train.distribute={CHOICE}", "data.image_size=32", "data.batch_size=8",
                                             "data.val_fraction=0.25", "train.head_epochs=1", "train.finetune_epochs=3",
                                             "train.cycle_epochs=1", "train.group_lr_ratios=[0.3, 1.0]"])
    run_cfg.name = "small"
    download.run(run_cfg, source=str(source))
    index.run(run_cfg)
    original = keras.callbacks.BackupAndRestore.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 2:
            raise Killed()
    keras.callbacks.BackupAndRestore.on_epoch_end = on_epoch_end
    try:
        train_stage.run(run_cfg)
        out["killed"] = False
    except Killed:
        out["killed"] = True
    keras.callbacks.BackupAndRestore.on_epoch_end = original
    (run,) = Path(run_cfg.paths.runs_dir).iterdir()
    out["epochs_before_resume"] = list(map(int, pd.read_csv(run / "metrics.csv")["epoch"]))
    out["resumed_same_run"] = train_stage.run(run_cfg) == run
    out["epochs_after_resume"] = list(map(int, pd.read_csv(run / "metrics.csv")["epoch"]))
    out["lr_steps"] = len(pd.read_csv(run / "lr.csv"))
    summary = json.loads((run / "summary.json").read_text())
    out["optimizer_iterations"] = summary["optimizer_iterations"]
    out["best_epoch"] = summary["best_epoch"]
    keras.saving.load_model(run / "best.keras", compile=False)

    # The head on cached features under the strategy: trains, and leaves a best model.
    head_cfg = load_config(None, overrides + [f"train.distribute={CHOICE}", "data.image_size=32", "data.batch_size=8",
                                              "data.val_fraction=0.25", "train.head=features", "train.head_epochs=3",
                                              "train.finetune_epochs=0", "train.resume=false"])
    head_cfg.name = "small"
    head_summary = json.loads((train_stage.run(head_cfg) / "summary.json").read_text())
    out["head_val_log_loss"] = head_summary["val_log_loss"]

    # Fold heads, then submit, under the strategy (on JAX prediction too is split over the devices: 9 test images)
    from kit.submit import submit as submit_stage

    folds_cfg = load_config(None, overrides + [f"train.distribute={CHOICE}", "data.image_size=32", "data.batch_size=8",
                                               "data.val_fraction=0.25", "train.head=features", "train.head_epochs=3",
                                               "train.folds=3", "train.finetune_epochs=0", "train.resume=false",
                                               "train.refit_all=false"])
    folds_cfg.name = "small"
    train_stage.run(folds_cfg)
    submit_stage.run(folds_cfg)
    submitted = pd.read_csv(folds_cfg.paths.submission)
    out["submitted"] = [len(submitted), bool(submitted["label"].between(0, 1).all())]
    print("RESULT " + json.dumps(out))
''')


BACKENDS = {"tensorflow": {"CUDA_VISIBLE_DEVICES": ""},
            "jax": {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}}


def run_on_two_devices(tmp: Path, backend: str) -> dict:
    """The subprocess's JSON results on `backend` with two CPU devices."""
    overrides = output_paths(tmp) + SMALL_MODEL
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend, **BACKENDS[backend]}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), json.dumps(overrides)], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(result, indent=1))  # the largest distributed-vs-single difference, for the record (pytest -s)
    return result


@pytest.fixture(scope="module", params=["tensorflow", pytest.param("jax", marks=pytest.mark.jax)])
def mirrored(request, tmp_path_factory):
    """(backend, results): MirroredStrategy on TensorFlow, DataParallel on JAX, two CPU devices each."""
    if request.param == "jax" and not os.environ.get("KIT_NEED_JAX"):
        pytest.importorskip("jax", reason="JAX is not installed (pip install jax): its CI job installs it")
    return request.param, run_on_two_devices(tmp_path_factory.mktemp(f"distribute-{request.param}"), request.param)


def test_auto_on_one_cpu_is_the_default_strategy(cfg):
    import tensorflow as tf

    from kit.model import device

    assert cfg.train.distribute == "auto"
    chosen = device.strategy(cfg)
    assert chosen is tf.distribute.get_strategy() and not device.is_distributed(chosen)
    assert chosen.num_replicas_in_sync == 1
    assert device.batch_line(32, chosen).startswith("batch 32 per replica x 1 replica = 32 global")
    cfg.train.distribute = "none"
    assert not device.is_distributed(device.strategy(cfg))


def test_two_devices_run_two_replicas_and_auto_picks_by_backend(mirrored):
    backend, result = mirrored
    assert result["replicas"] == 2
    if backend == "jax":  # JAX's auto: DataParallel whenever there are 2+ devices (a TPU's cores)
        assert result["auto_distributed"] and "DataParallel x 2 devices (cpu:0, cpu:1)" in result["describe"]
    else:  # TensorFlow's auto: MirroredStrategy on 2+ GPUs only
        assert not result["auto_distributed"] and "MirroredStrategy x 2 replicas" in result["describe"]
    assert result["batch_line"].startswith("batch 8 per replica x 2 replicas = 16 global")


def test_distributed_steps_match_one_device_on_the_same_global_batch(mirrored):
    backend, result = mirrored
    assert result["same_start"] and result["moved"] > 1e-2  # the steps did train
    assert result["max_weight_diff"] < 1e-5, result  # JAX: the padded 9-row batch too
    assert result["log_loss_diff"] < 1e-5  # the metric: weighted, so the padding's rows count for nothing
    # Keras' running "loss" weighs each batch by its rows, padding included (10 for the last 9): only on JAX
    assert result["loss_diff"] < (1e-5 if backend == "tensorflow" else 5e-3)


def test_layer_group_rates_apply_under_the_strategy(mirrored):
    _, result = mirrored
    assert result["frozen_group_moved"] == 0.0  # ratio 0: not a single bit moved
    assert result["top_group_moved"] > 1e-2


def test_a_killed_distributed_run_resumes_and_keeps_its_best_checkpoint(mirrored):
    _, result = mirrored
    assert result["killed"] and result["epochs_before_resume"] == [0, 1, 2]
    assert result["resumed_same_run"] and result["epochs_after_resume"] == [0, 1, 2, 3]
    steps = -(-18 * 2 // 8)  # 36 training images, global batches of 8
    assert result["optimizer_iterations"] == 3 * steps and result["lr_steps"] == 4 * steps
    assert result["best_epoch"] is not None


def test_the_head_on_features_trains_under_the_strategy(mirrored):
    _, result = mirrored
    assert 0.0 < result["head_val_log_loss"] < 5.0


def test_fold_heads_and_submit_run_under_the_strategy(mirrored):
    _, result = mirrored
    assert result["submitted"] == [9, True]  # 9 test images: a last batch the two devices cannot split
