"""Resume after a kill, refusal when the config changed, and a NaN loss that keeps the best checkpoint."""
import json
from pathlib import Path

import keras
import pandas as pd
import pytest

from kit.data.synthetic import make_competition_zip
from kit.errors import KitError
from kit.train import fit as train


class Killed(KeyboardInterrupt):
    """What Ctrl-C or a kill looks like to the training loop."""


@pytest.fixture
def small(indexed, tmp_path):
    source = make_competition_zip(tmp_path / "c.zip", train_per_class=24, n_test=8, size=32, seed=5)
    cfg = indexed(source, "data.image_size=32", "data.batch_size=8", "data.val_fraction=0.25", "train.head_epochs=1",
                  "train.finetune_epochs=3", "train.cycle_epochs=1", "train.group_lr_ratios=[0.3, 1.0]")
    cfg.name = "small"
    return cfg


def kill_after_backup_of_epoch(monkeypatch, epoch_to_kill: int):
    original = keras.callbacks.BackupAndRestore.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == epoch_to_kill:
            raise Killed()
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", on_epoch_end)


def killed_run(cfg, monkeypatch, epoch: int) -> Path:
    """The run folder of a train.run killed right after epoch `epoch` was backed up."""
    kill_after_backup_of_epoch(monkeypatch, epoch_to_kill=epoch)
    with pytest.raises(Killed):
        train.run(cfg)
    monkeypatch.undo()
    (run,) = Path(cfg.paths.runs_dir).iterdir()
    return run


def test_killed_run_resumes_at_the_next_epoch_with_its_optimizer_state(small, monkeypatch):
    run = killed_run(small, monkeypatch, epoch=2)  # during fine-tuning, after its 2nd epoch
    assert not (run / "summary.json").exists()
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1, 2]

    assert train.run(small) == run  # the same run, continued
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1, 2, 3]
    steps = -(-18 * 2 // 8)  # 36 training images (3/4 of 48), batches of 8
    summary = json.loads((run / "summary.json").read_text())
    assert summary["optimizer_iterations"] == 3 * steps  # fine-tuning steps: as if never interrupted
    assert list(pd.read_csv(run / "lr.csv")["step"]) == list(range(4 * steps))


def test_killed_run_refuses_to_resume_with_a_changed_config(small, monkeypatch):
    run = killed_run(small, monkeypatch, epoch=1)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    small.train.lr, small.augment.flip = 0.5, False
    with pytest.raises(KitError, match=r"cannot resume run .*augment\.flip, train\.lr.*train\.resume=false"):
        train.run(small)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    small.train.resume = False  # the way out the message names: a new run beside the old one
    assert train.run(small) != run


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_best_checkpoint(small, monkeypatch):
    from kit.train import trainer

    real_compile = trainer.compile_model

    def nan_in_finetuning(model, optimizer, cfg, n_classes):
        real_compile(model, optimizer, cfg, n_classes)
        if optimizer.lr_multipliers:  # stage 2: the layer groups' rates; stage 1 has none
            model.compile(optimizer=optimizer, loss=lambda y, p: keras.ops.mean(p) * float("nan"))
    monkeypatch.setattr(trainer, "compile_model", nan_in_finetuning)
    with pytest.raises(KitError, match="loss became NaN in stage finetune.*lower train.lr.*best checkpoint"):
        train.run(small)
    (run,) = Path(small.paths.runs_dir).iterdir()
    assert (run / "best.keras").is_file()  # from the head stage, untouched by the NaN epoch
    keras.saving.load_model(run / "best.keras", compile=False)


def test_resume_compares_only_the_keys_that_matter_and_takes_defaults_for_new_keys(small, monkeypatch):
    import yaml

    run = killed_run(small, monkeypatch, epoch=1)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["train"]["feature_engine"], saved["augment"]["engine"]  # as if saved before these keys existed
    saved["train"]["a_key_since_removed"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    small.submit.clip, small.data.workers = 0.01, 1  # declared resume=False on their fields
    assert train.run(small) == run  # resumed: the missing keys compared as their defaults

    (run / "summary.json").unlink()  # unfinished again
    small.augment.engine = "keras_cv"  # not the default the old run is taken to have had: a real change
    with pytest.raises(KitError, match=r"cannot resume run .*\(augment\.engine\)"):
        train.run(small)


def test_a_second_train_of_a_run_in_progress_refuses_and_names_it(small):
    import subprocess
    import sys

    from kit.runs import RunDir

    run = RunDir(Path(small.paths.runs_dir) / "small-live")
    run.start(small, ["cat", "dog"], pd.DataFrame({"path": [], "label": []}))
    (run.path / "metrics.csv").write_text("epoch,val_log_loss\n0,0.5\n")
    (run.backup("head")).mkdir(parents=True)
    (run.backup("head") / "training_metadata.json").write_text('{"epoch": 1}')
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for a live train
    try:
        run.lock.path.write_text(f"{sleeper.pid}\n")
        before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
        with pytest.raises(KitError, match=f"run small-live is being trained right now by process {sleeper.pid}"):
            train.run(small)
        assert {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()} == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_run_that_never_completed_an_epoch_is_started_anew_with_the_fixed_config(small, monkeypatch):
    def crash(self):
        raise RuntimeError("a bad value blew up the first step")
    monkeypatch.setattr(train.Trainer, "train_head", crash)
    with pytest.raises(RuntimeError):
        train.run(small)
    monkeypatch.undo()
    (run,) = Path(small.paths.runs_dir).iterdir()
    assert not (run / "train.lock").exists()  # released although the run crashed
    small.train.lr = 0.002  # the corrected value: a key that matters for resuming
    assert train.run(small) == run  # not "restore those values": nothing was trained that could be lost
    assert "lr: 0.002" in (run / "config.yaml").read_text() and (run / "summary.json").is_file()


def test_submit_without_a_run_named_skips_a_run_still_training(small):
    import subprocess
    import sys

    from kit.runs import RunDir

    finished = RunDir(train.run(small))
    live = RunDir(Path(small.paths.runs_dir) / "small-live")
    live.path.mkdir()
    live.best_model.write_bytes(finished.best_model.read_bytes())  # newer, but its process is still training
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live.lock.path.write_text(f"{sleeper.pid}\n")
        assert RunDir.find(small) == finished
    finally:
        sleeper.kill()
        sleeper.wait()
    assert RunDir.find(small) == live  # once its process is gone, it is a run like any other


def test_a_run_is_not_resumed_on_other_validation_images(small, monkeypatch):
    run = killed_run(small, monkeypatch, epoch=1)
    split = pd.read_csv(run / "split.csv")
    split.iloc[1:].to_csv(run / "split.csv", index=False)  # as if one validation image had been removed since
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(KitError, match=r"cannot resume run .*validation images changed .*1 added, 0 gone"):
        train.run(small)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
