"""`train.members`: more models on the same split, trained after the run and averaged by `make submit`.

    train:
      members:                                          # each: --set style overrides of this config
        - train.finetune_epochs=0                       # + the head on 256 px features (~1 min on a CPU)
        - train.finetune_epochs=0 train.feature_image_size=320

Each member is a run folder of its own under runs/<run>/members/m1, m2, ... (trained by the same stage, so it
resumes, refits with train.refit_all and reports like any run), on the run's validation split: a member may
change train.*, model.* and augment.* keys, never the data, the split or the paths. `make submit` predicts
validation and test with every member (each with its own snapshots and refit) and averages their probabilities
with equal weights in log space (kit/submit/members.py), nothing fitted on validation, before calibrating the
average; submit.members=false uses the run alone. Averaging models that differ (a fine-tuned network and a head
on larger features, or one head at two image sizes) cancels part of each one's mistakes (measured in the
README's "What to expect").
"""
from __future__ import annotations

import copy

from kit.config import Config, check_consistency, config_dict, set_key
from kit.errors import KitError
from kit.runs import RunDir

ALLOWED = ("train.", "model.", "augment.")
OWN = ("train.run_name", "train.members", "train.resume", "train.plan", "train.distribute")  # set by the run


def overrides(spec: str, where: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of one member's spec, refused in one line when a key is not a member's to change."""
    pairs = []
    for item in spec.split():
        key, sep, value = item.partition("=")
        if not sep or not key.startswith(ALLOWED) or key in OWN:
            raise KitError(f"{where} {item!r}: a member overrides train.*, model.* or augment.* keys as key=value "
                           f"(not {', '.join(OWN)}); it shares the run's data, split and paths")
        pairs.append((key, value))
    if not pairs:
        raise KitError(f"{where} is empty: give key=value overrides, e.g. 'train.finetune_epochs=0'")
    return pairs


def with_overrides(cfg: Config, number: int) -> Config:
    """A copy of cfg with member `number`'s overrides (from 1) applied and checked; no members of its own."""
    where = f"train.members[{number - 1}]"
    member = copy.deepcopy(cfg)
    member.train.members = []
    for key, value in overrides(cfg.train.members[number - 1], where):
        set_key(member, key, value, where, text=True)
    check_consistency(member)
    return member


def member_config(cfg: Config, run_dir: RunDir, number: int) -> Config:
    """The config member `number` trains with: under runs/<run>/members/, named m<number>."""
    member = with_overrides(cfg, number)
    member.train.run_name, member.paths.runs_dir = run_dir.member(number).name, str(run_dir.members_dir)
    return member


def check_members(cfg: Config) -> None:
    """Every member's spec, checked when a run starts: a bad one is refused before anything trains."""
    for number in range(1, len(cfg.train.members) + 1):
        with_overrides(cfg, number)


def distinct_members(cfg: Config) -> list[int]:
    """The numbers of the members that would train another model than the run itself (cfg: the run's config):
    one config can then serve both paths, e.g. a member `train.finetune_epochs=0` beside a fine-tuned run is
    the run itself when the run is head-only already, and is skipped (the run's summary.json lists the rest)."""
    from kit.model.features import run_config

    def identity(c: Config) -> dict:
        plain = config_dict(run_config(c))
        plain.pop("paths"), plain.pop("name")
        for key in ("members", *(k.split(".")[1] for k in OWN)):
            plain["train"].pop(key, None)
        return plain

    own = identity(cfg)
    return [n for n in range(1, len(cfg.train.members) + 1) if identity(with_overrides(cfg, n)) != own]


def train_members(cfg: Config, run_dir: RunDir, train_run) -> None:
    """Train (or finish) each distinct member with `train_run` (kit/train/fit.py's run), after the run itself."""
    wanted = run_dir.summary().get("members") or []
    for number in range(1, len(cfg.train.members) + 1):
        member, spec = run_dir.member(number), cfg.train.members[number - 1]
        if number not in wanted:
            print(f"train: member m{number} ({spec}) is this run itself: skipped")
        elif not member.is_done():
            print(f"train: member m{number} of {len(cfg.train.members)} ({spec}) into {member.path}")
            train_run(member_config(cfg, run_dir, number))
