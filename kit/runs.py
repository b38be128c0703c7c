"""A training run's folder: every file name under runs/<run>/ and what can be asked of it. Nothing else names them.

    from kit.runs import RunDir
    run_dir = RunDir.find(cfg)                    # submit.run, else the newest run with a best model
    model, classes = run_dir.load_model()

    runs/<run>/config.yaml, versions.json    the resolved config and library versions (kit/provenance.py)
               classes.json                  class names, label order
               split.csv                     its validation images (path, label): submit scores on these
               train.lock                    while a process trains it: that process's pid
               metrics.csv, lr.csv           per epoch; per step
               best.keras                    the epoch with the lowest validation log loss
               head-stage.npz                the weights after stage 1, so a resumed run skips it
               backup/<stage>/               Keras' BackupAndRestore state of an unfinished stage
               val_predictions.csv           the best model's TTA-averaged validation probabilities
               plan.json, timings.json       each step's estimate (kit plan) and what it took (kit/timings.py)
               submit.json                   the newest submit's validation scores: snapshots, calibration, members
               summary.json                  written last: its presence means the run is finished
               snapshots/, refit/, members/  cycle-end weights; train.refit_all's run; train.members' runs
               tensorboard/, plots/, report.html, export/, predictions/ (`make predict`)

A run folder without summary.json is unfinished: `make train` with the same config continues the newest
one (`for_training`), and refuses, naming the keys, when a key that matters for resuming changed
(declared on each config field, kit/config.py).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from kit import paths
from kit.config import Config, changed_for_resume
from kit.errors import KitError
from kit.fsutil import atomic_path, write_text_atomic
from kit.lock import PidLock, busy_error
from kit.provenance import save_provenance


@dataclass(unsafe_hash=True)
class RunDir:
    """One run folder (it may not exist yet). Properties name its files; methods read and write them."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    name = property(lambda self: self.path.name)
    config_file = property(lambda self: self.path / "config.yaml")
    classes_file = property(lambda self: self.path / "classes.json")
    metrics = property(lambda self: self.path / "metrics.csv")
    lr = property(lambda self: self.path / "lr.csv")
    best_model = property(lambda self: self.path / "best.keras")
    head_done = property(lambda self: self.path / "head-stage.npz")
    summary_file = property(lambda self: self.path / "summary.json")
    val_predictions = property(lambda self: self.path / "val_predictions.csv")
    tensorboard = property(lambda self: self.path / "tensorboard")
    plots = property(lambda self: self.path / "plots")
    report = property(lambda self: self.path / "report.html")
    export = property(lambda self: self.path / "export")
    predictions_dir = property(lambda self: self.path / "predictions")  # `make predict`'s CSVs
    split_file = property(lambda self: self.path / "split.csv")  # the validation images this run was chosen on
    lock = property(lambda self: PidLock(self.path / "train.lock"))  # held by the process training it
    versions_file = property(lambda self: self.path / "versions.json")
    plan_file = property(lambda self: self.path / "plan.json")  # the steps' estimates at the start of training
    timings_file = property(lambda self: self.path / "timings.json")  # what each step took
    oof_predictions = property(lambda self: self.path / "oof_predictions.csv")  # train.folds: held-fold probabilities
    submit_scores = property(lambda self: self.path / "submit.json")  # the newest submit's validation table (report)

    snapshots_dir = property(lambda self: self.path / "snapshots")  # fine-tuning's weights at each SGDR cycle end
    refit = property(lambda self: RunDir(self.path / "refit"))  # train.refit_all: a run folder of its own
    members_dir = property(lambda self: self.path / "members")  # train.members: m1, m2, ..., run folders too
    member = lambda self, number: RunDir(self.members_dir / f"m{number}")  # noqa: E731

    def snapshot(self, epoch: int) -> Path:
        """The weights after `epoch` (counted from 1, head epochs included), saved at a cycle end."""
        return self.snapshots_dir / f"epoch-{epoch:03d}.weights.h5"

    def snapshots(self) -> list[tuple[int, Path]]:
        """(epoch, weights file) of every snapshot kept, oldest first."""
        found = []
        for path in self.snapshots_dir.glob("epoch-*.weights.h5") if self.snapshots_dir.is_dir() else []:
            try:
                found.append((int(path.name.split("-")[1].split(".")[0]), path))
            except ValueError:
                continue
        return sorted(found)

    def backup(self, stage: str) -> Path:
        """BackupAndRestore's folder for one stage ("head" or "finetune")."""
        return self.path / "backup" / stage

    # ---- finding runs --------------------------------------------------------------------------------

    @classmethod
    def named(cls, cfg: Config, name: str) -> "RunDir":
        """`name` as a folder if it is one, else a name under paths.runs_dir."""
        path = Path(name)
        return RunDir(path if path.is_dir() else paths.runs_dir(cfg) / name)

    @classmethod
    def find(cls, cfg: Config, name: str | None = None, needs: str = "best_model") -> "RunDir":
        """The run `name` (else submit.run, else the newest) that holds the file `needs` names."""
        name = name or cfg.submit.run
        what = "trained model" if needs == "best_model" else getattr(RunDir("."), needs).name
        if name:
            run_dir = cls.named(cfg, name)
            if not getattr(run_dir, needs).is_file():
                raise KitError(f"no {what} in {run_dir.path}: check the run's name (--run or submit.run), "
                               f"or train one with `make train`")
            return run_dir
        found = [RunDir(p) for p in paths.runs_dir(cfg).iterdir() if p.is_dir()] if paths.runs_dir(cfg).is_dir() else []
        found = [r for r in found if getattr(r, needs).is_file() and (r.is_finished() or r.lock.holder() is None)]
        if not found:
            raise KitError(f"no run with a {what} in {paths.runs_dir(cfg)}: train one first with `make train`")
        return max(found, key=lambda r: getattr(r, needs).stat().st_mtime)

    @classmethod
    def unfinished(cls, cfg: Config) -> "RunDir | None":
        """The newest unfinished run of this config (or the one named by train.run_name), if any."""
        runs = paths.runs_dir(cfg)
        if cfg.train.run_name:
            run_dir = RunDir(runs / cfg.train.run_name)
            return run_dir if run_dir.config_file.is_file() and not run_dir.is_done() else None
        candidates = [RunDir(p.parent) for p in runs.glob(f"{cfg.name}-*/config.yaml")]
        candidates = [r for r in candidates if not r.is_done()]
        return max(candidates, key=lambda r: r.path.stat().st_mtime) if candidates else None

    @classmethod
    def for_training(cls, cfg: Config) -> tuple["RunDir", bool]:
        """(run folder, resuming?): an unfinished run of this config to continue, or a folder to start (anew).

        Writes nothing: the caller locks the folder first (`lock.held`), then starts or resumes it."""
        run_dir = cls.unfinished(cfg) if cfg.train.resume else None
        holder = run_dir.lock.holder() if run_dir is not None else None
        if holder is not None:
            raise busy_error(f"run {run_dir.name}", holder)
        if run_dir is not None and not run_dir.has_progress():  # e.g. it crashed on a bad value: start it anew
            print(f"train: run {run_dir.name} never completed an epoch; starting it again with this config")
            return run_dir, False
        if run_dir is not None:
            changed = changed_for_resume(run_dir.saved_config(), cfg)
            if changed:
                raise KitError(f"cannot resume run {run_dir.name}: the config changed ({', '.join(changed)}); "
                               f"restore those values, or start a new run with --set train.resume=false")
            return run_dir, True
        name = cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = RunDir(paths.runs_dir(cfg) / name)
        if run_dir.is_finished():
            raise KitError(f"run {run_dir.path} is already finished: choose another train.run_name")
        if run_dir.path.exists() and any(run_dir.path.iterdir()):  # never train over files that are not ours
            why = "resume it with train.resume=true" if not cfg.train.resume and run_dir.config_file.is_file() \
                else "it is not an unfinished kit run (no config.yaml)"
            raise KitError(f"run folder {run_dir.path} already exists: choose another train.run_name, or {why}")
        return run_dir, False

    def is_finished(self) -> bool:
        return self.summary_file.is_file()

    def is_done(self) -> bool:
        """Finished, and so are its refit (train.refit_all) and members (summary.json): nothing left for `make train`."""
        owed = [self.refit] * bool((summary := self.summary()).get("refit")) + list(map(self.member, summary.get("members") or []))
        return self.is_finished() and all(run.is_done() for run in owed)

    def saved_config(self) -> dict:
        """config.yaml as plain data ({} when missing or unreadable); parsed once per version of the file."""
        try:
            stamp = self.config_file.stat().st_mtime_ns
            if getattr(self, "_saved", (None,))[0] != stamp:
                data = yaml.safe_load(self.config_file.read_text())
                self._saved = (stamp, data if isinstance(data, dict) else {})
        except (OSError, yaml.YAMLError):
            return {}
        return self._saved[1]

    def classes(self) -> list[str]:
        if not self.classes_file.is_file():
            raise KitError(f"run {self.name} has no classes.json: retrain it with `make train`")
        return [str(c) for c in json.loads(self.classes_file.read_text())]

    def load_model(self):
        """(model, classes), the model loaded without its optimizer: prediction does not need it."""
        import keras

        import kit.model.backbones  # noqa: F401  registers the custom layers a saved model refers to

        if not self.best_model.is_file():
            raise KitError(f"run {self.name} has no best.keras: train it with `make train`, or pick another run")
        try:
            model = keras.saving.load_model(self.best_model, compile=False)
        except Exception as error:  # noqa: BLE001 — Keras raises zipfile, OSError, ValueError alike for a bad file
            # Keras' own words mislead here ("File not found" for a truncated file): name the kind of failure only.
            raise KitError(f"the checkpoint {self.best_model} of run {self.name} is damaged (not a readable .keras "
                           f"file: {type(error).__name__}): retrain with `make train SET=train.resume=false`, or "
                           f"pick another run with submit.run / --run") from None
        return model, self.classes()

    def image_size(self, model) -> int:
        """The image size the run's model takes: its input layer's, else config.yaml's data.image_size."""
        height, width = model.input_shape[1:3]
        if height is not None and height == width:
            return int(height)
        size = (self.saved_config().get("data") or {}).get("image_size")
        if not isinstance(size, int):
            raise KitError(f"cannot tell the image size of run {self.name} (no data.image_size in its config.yaml): "
                           "retrain it with `make train`")
        return size

    def is_head_only_on_features(self) -> bool:
        """Whether the model is a head trained on cached features alone (its submission reuses them)."""
        train = self.saved_config().get("train") or {}
        if "precompute" in train:  # a run saved before the stage-1 keys were collapsed
            return bool(train["precompute"])
        return train.get("head") == "features" and train.get("finetune_epochs") == 0

    def has_progress(self) -> bool:
        """Whether an unfinished run kept anything worth resuming: a completed epoch or a best model."""
        return self.best_model.exists() or self.head_done.exists() or any(
            (self.backup(stage) / "training_metadata.json").exists() for stage in ("head", "finetune"))

    def discard(self) -> None:
        """Remove the files of a run that never completed an epoch (kit's own names only), keeping the folder."""
        for path in (self.config_file, self.versions_file, self.classes_file, self.split_file, self.metrics, self.lr):
            path.unlink(missing_ok=True)
        for folder in (self.path / "backup", self.tensorboard):
            shutil.rmtree(folder, ignore_errors=True)

    def summary(self) -> dict:
        try:
            return json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return {}

    def earlier_best(self) -> dict:
        """The best validation log loss already logged in an interrupted run (resuming must not lose it)."""
        if not self.metrics.exists() or not self.best_model.exists():
            return {}
        frame = pd.read_csv(self.metrics)
        if frame.empty or "val_log_loss" not in frame:
            return {}
        row = frame["val_log_loss"].idxmin()
        return {"best": float(frame.loc[row, "val_log_loss"]), "best_epoch": int(frame.loc[row, "epoch"]) + 1}

    def completed_epochs(self, head_epochs: int) -> int:
        """Epochs an interrupted run finished, from BackupAndRestore's metadata (0 for a new run)."""
        for stage in ("finetune", "head"):
            meta = self.backup(stage) / "training_metadata.json"
            if meta.exists():
                return int(json.loads(meta.read_text())["epoch"])
        return head_epochs if self.head_done.exists() else 0

    # ---- writing -------------------------------------------------------------------------------------

    def start(self, cfg: Config, classes: list[str], val: pd.DataFrame) -> None:
        """A new run: its config, versions, classes and validation split, written before anything is trained."""
        save_provenance(cfg, self.path)
        write_text_atomic(self.classes_file, json.dumps(list(classes)) + "\n")
        with atomic_path(self.split_file) as tmp:
            val[["path", "label"]].to_csv(tmp, index=False)

    def validation_split(self) -> pd.DataFrame | None:
        """The run's validation images (path, label), or None for a run saved before runs kept them."""
        if not self.split_file.is_file():
            return None
        return pd.read_csv(self.split_file, dtype={"path": str})

    def trim_logs(self, epochs: int) -> None:
        """Drop log rows of epochs after the restore point: an epoch cut short is done again."""
        for path in (self.metrics, self.lr):
            if path.exists():
                frame = pd.read_csv(path)
                with atomic_path(path) as tmp:
                    frame[frame["epoch"] < epochs].to_csv(tmp, index=False)

    def save_model(self, model) -> None:
        with atomic_path(self.best_model, suffix=".keras") as tmp:
            model.save(tmp)

    def new_predictions_csv(self) -> Path:
        """predictions/predict-<YYYYmmdd-HHMMSS>.csv, with -2, -3... rather than replace an earlier one."""
        stem = f"predict-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = self.predictions_dir / f"{stem}.csv", 2
        while path.exists():
            path, n = self.predictions_dir / f"{stem}-{n}.csv", n + 1
        return path

    def write_val_predictions(self, frame: pd.DataFrame) -> None:
        with atomic_path(self.val_predictions) as tmp:
            frame.to_csv(tmp, index=False)

    def finish(self, summary: dict) -> None:
        """summary.json, written last: from now on the run is finished."""
        write_text_atomic(self.summary_file, json.dumps(summary, indent=2) + "\n")
