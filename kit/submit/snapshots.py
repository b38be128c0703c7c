"""Which model(s) a submission predicts with: best.keras, or an average of the run's cycle-end snapshots
(kit/model/ensemble.py chooses, out of fold), and their validation and test probabilities.

    python -m kit submit --set submit.snapshots=auto      # best | last_k | auto

A snapshot is a weights file (runs/<run>/snapshots/epoch-NNN.weights.h5) loaded into the run's best.keras
model in turn; the best weights are put back afterwards. Each snapshot's TFLite copy is converted once per
split it predicts. A head-only run, or a run without snapshots, predicts with best.keras alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kit.config import Config
from kit.errors import KitError
from kit.model import ensemble
from kit.model.metrics import clip_probabilities, log_loss, prior_log_loss
from kit.model.inference import predict_split
from kit.runs import RunDir


@dataclass
class Choice:
    name: str  # "best" or "last_k"
    val: np.ndarray  # its validation probabilities
    val_out_of_fold: np.ndarray  # what choosing scores on held folds (= val for "best")
    epochs: list[int] = field(default_factory=list)  # the snapshots averaged (empty: best.keras)
    scores: dict = field(default_factory=dict)  # candidate -> validation log loss
    each: dict = field(default_factory=dict)  # "epoch N" -> that snapshot's validation log loss, alone

    def as_dict(self) -> dict:
        return {"name": self.name, "epochs": self.epochs, "val_log_loss": self.scores, "each": self.each}


def usable(cfg: Config, run_dir: RunDir, from_features: bool) -> list:
    """The run's snapshots a submission may average (none for a head-only run or submit.snapshots=best)."""
    if from_features or cfg.submit.snapshots == "best":
        return []
    kept = run_dir.snapshots()
    # auto averages two or more: one snapshot alone (a run ending mid-cycle, or after one cycle) is the last
    # epoch, which best.keras may beat (the head, for a one-epoch fine-tune): best.keras then.
    return kept if len(kept) >= 2 or cfg.submit.snapshots == "last_k" else []


def predict_each(cfg: Config, model, files: list, paths: list[str], name: str) -> list[np.ndarray]:
    """Probabilities of `paths` from each weights file in turn; the model's own weights put back after."""
    own, out = model.get_weights(), []
    try:
        for path in files:
            try:
                model.load_weights(path)
            except Exception as error:  # noqa: BLE001 — h5py, OSError, ValueError alike for a bad or foreign file
                raise KitError(f"snapshot {path} cannot be loaded into the run's model ({type(error).__name__}): "
                               "submit with --set submit.snapshots=best, or delete the file") from None
            out.append(predict_split(cfg, model, paths, name))
    finally:
        model.set_weights(own)
    return out


def choose(cfg: Config, run_dir: RunDir, model, val_paths: list[str], labels: np.ndarray,
           from_features: bool) -> Choice:
    """Best.keras, or the snapshot average submit.snapshots asks for, with its validation probabilities."""
    snapshots = usable(cfg, run_dir, from_features)
    allowed = (ensemble.wanted(cfg.submit.snapshots, cfg.submit.snapshot_k, len(snapshots))
               if snapshots or cfg.submit.snapshots == "last_k" else None)
    best = predict_split(cfg, model, val_paths, "val", from_features)  # after the refusals: they cost nothing
    if not snapshots:
        return Choice("best", best, best)
    each = predict_each(cfg, model, [path for _, path in snapshots], val_paths, "val")
    cands = ensemble.candidates([(epoch, p) for (epoch, _), p in zip(snapshots, each)])
    cands = {k: v for k, v in cands.items() if allowed is None or k in allowed}
    name, scores, oof = ensemble.choose(labels, cands, cfg.submit.clip, cfg.data.seed)
    k, alone = int(name.split("_")[1]), log_loss(labels, clip_probabilities(best, cfg.submit.clip)[0])
    # auto never takes best.keras over the snapshots, however well it scores here: its epoch was chosen on
    # these very images, so its score flatters it (measured: 0.0254 here for a run whose last 3 snapshots
    # score 0.0308; fine-tuning's epochs swing 0.026-0.061), and the estimate printed must not be one it
    # was selected on (issue 15). submit.snapshots=best submits it.
    print("submit: snapshots (validation log loss): " + ", ".join(
        f"{n}{'*' if n == name else ''} {v:.4f}" for n, v in scores.items()) +
        f"; * = chosen, epochs {[e for e, _ in snapshots[-k:]]} (best.keras alone {alone:.4f}: its epoch was chosen "
        f"on these images, not comparable)")
    each_score = {f"epoch {epoch}": log_loss(labels, clip_probabilities(p, cfg.submit.clip)[0])
                  for (epoch, _), p in zip(snapshots, each)}
    prior = prior_log_loss(labels, best.shape[1] if best.ndim == 2 else 2)
    if cfg.submit.snapshots == "auto" and scores[name] >= prior > alone:
        # Not a choice on merit: no snapshot average learned anything (a tiny demo model), best.keras did.
        print(f"submit: no snapshot average beats a constant prediction ({prior:.4f}): best.keras instead")
        return Choice("best", best, best, [], scores, each_score)
    return Choice(name, cands[name], oof, [e for e, _ in snapshots[-k:]], scores, each_score)


def predict_test(cfg: Config, run_dir: RunDir, model, choice: Choice, paths: list[str], from_features: bool):
    """The test probabilities of the chosen model(s)."""
    if choice.name == "best":
        return predict_split(cfg, model, paths, "test", from_features)
    files = [run_dir.snapshot(epoch) for epoch in choice.epochs]
    return np.mean(predict_each(cfg, model, files, paths, "test"), axis=0)
