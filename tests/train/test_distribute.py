"""train.distribute: MirroredStrategy on two logical CPU devices matches one device, keeps the layer-group rates,
resumes after a kill; `auto` on one CPU is the default strategy.

Two logical CPUs must be configured before TensorFlow initialises its devices, which the other tests have done
long before: so the distributed checks run in ONE subprocess (SCRIPT below) that prints JSON.
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

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import pandas as pd

    from kit.config import load_config
    from kit.model import device
    from kit.model.optim import make_optimizer
    from kit.train.recipe import compile_model

    tmp, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
    out = {}
    mirrored = device.strategy(load_config(None, ["train.distribute=mirrored"]))
    out["auto_is_default_on_cpus"] = not device.is_distributed(device.strategy(load_config(None, [])))
    out["replicas"] = mirrored.num_replicas_in_sync
    out["describe"] = device.describe(mirrored)
    out["batch_line"] = device.batch_line(16, mirrored)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, :1] + 0.5 * x[:, 1:2] > 0).astype("float32")
    cfg = load_config(None, [])

    def train(strategy, low_ratio, steps=4):
        """`steps` steps of 16 (global), from the same initial weights; (initial weights, final weights)."""
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="low"),
                                      keras.layers.Dense(1, activation="sigmoid", name="top")])
            multipliers = {v.path: low_ratio for v in model.get_layer("low").trainable_variables}
            compile_model(model, make_optimizer("adam", 0.05, multipliers), cfg, 2)
        before = [w.copy() for w in model.get_weights()]
        ds = device.for_strategy(tf.data.Dataset.from_tensor_slices((x[:16 * steps], y[:16 * steps])).batch(16), strategy)
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return before, model.get_weights(), history.history["loss"][-1]

    start_1, single, loss_1 = train(tf.distribute.get_strategy(), 0.3)
    start_2, mirror, loss_2 = train(mirrored, 0.3)
    out["same_start"] = all(np.array_equal(a, b) for a, b in zip(start_1, start_2))
    out["max_weight_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirror))
    out["moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(single, start_1))
    out["loss_diff"] = abs(loss_1 - loss_2)

    start, end, _ = train(mirrored, 0.0)
    out["frozen_group_moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(start[:2], end[:2]))
    out["top_group_moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(start[2:], end[2:]))

    # A mirrored run of the whole train stage, killed after epoch 2 is backed up, then resumed.
    from kit.data import download, index
    from kit.data.synthetic import make_competition_zip
    from kit.train import fit as train_stage

    class Killed(KeyboardInterrupt):
        pass

    source = make_competition_zip(tmp / "c.zip", train_per_class=24, n_test=8, size=32, seed=5)
    overrides = overrides + ["data.workers=1"]  # no process pool: its children would run this script again
    run_cfg = load_config(None, overrides + ["train.distribute=mirrored", "data.image_size=32", "data.batch_size=8",
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
    head_cfg = load_config(None, overrides + ["train.distribute=mirrored", "data.image_size=32", "data.batch_size=8",
                                              "data.val_fraction=0.25", "train.head=features", "train.head_epochs=3",
                                              "train.finetune_epochs=0", "train.resume=false"])
    head_cfg.name = "small"
    head_summary = json.loads((train_stage.run(head_cfg) / "summary.json").read_text())
    out["head_val_log_loss"] = head_summary["val_log_loss"]
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """The subprocess's JSON results (two logical CPUs, train.distribute=mirrored)."""
    tmp = tmp_path_factory.mktemp("distribute")
    overrides = output_paths(tmp) + SMALL_MODEL
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), json.dumps(overrides)], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(result, indent=1))  # the largest mirrored-vs-single difference, for the record (pytest -s)
    return result


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


def test_mirrored_runs_on_two_replicas_and_auto_stays_default_without_gpus(mirrored):
    assert mirrored["replicas"] == 2 and mirrored["auto_is_default_on_cpus"]
    assert "MirroredStrategy x 2 replicas" in mirrored["describe"]
    assert mirrored["batch_line"].startswith("batch 8 per replica x 2 replicas = 16 global")


def test_mirrored_steps_match_one_device_on_the_same_global_batch(mirrored):
    assert mirrored["same_start"] and mirrored["moved"] > 1e-2  # the 4 steps did train
    assert mirrored["max_weight_diff"] < 1e-5, mirrored
    assert mirrored["loss_diff"] < 1e-5


def test_layer_group_rates_apply_under_the_strategy(mirrored):
    assert mirrored["frozen_group_moved"] == 0.0  # ratio 0: not a single bit moved
    assert mirrored["top_group_moved"] > 1e-2


def test_a_killed_mirrored_run_resumes_and_keeps_its_best_checkpoint(mirrored):
    assert mirrored["killed"] and mirrored["epochs_before_resume"] == [0, 1, 2]
    assert mirrored["resumed_same_run"] and mirrored["epochs_after_resume"] == [0, 1, 2, 3]
    steps = -(-18 * 2 // 8)  # 36 training images, global batches of 8
    assert mirrored["optimizer_iterations"] == 3 * steps and mirrored["lr_steps"] == 4 * steps
    assert mirrored["best_epoch"] is not None


def test_the_head_on_features_trains_under_the_strategy(mirrored):
    assert 0.0 < mirrored["head_val_log_loss"] < 5.0
