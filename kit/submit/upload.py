"""Submit a submission file to the Kaggle competition.

    make upload                                        # python -m kit upload
    python -m kit upload --file submissions/submission.csv --message "my note"

The default message comes from `<file>.json`, which the submit stage writes beside the file
(`{"run": ..., "val_log_loss": ..., "git_commit": ...}`), e.g.
"kit run dvc-20261121-2030 | val log loss 0.0412 | commit abc1234". Kaggle's answer is printed and
the submitted file's path returned; a refused or failed upload is a KitError.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kit.data import kaggle_api
from kit import paths as kit_paths
from kit.config import Config
from kit.provenance import git_commit
from kit.errors import KitError


def find_submission(cfg: Config, file: str | Path) -> Path:
    """`file` as given if absolute, else in the submissions folder, else relative to the working folder."""
    file = Path(file)
    candidates = [file] if file.is_absolute() else [kit_paths.submissions_dir(cfg) / file, file]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in dict.fromkeys(candidates))
    raise KitError(f"submission file {tried} not found: run `make submit` first (or pass --file)")


def _short_commit(commit: str) -> str:
    head, plus, rest = str(commit).partition("+")  # keep the "+dirty" mark
    return head[:7] + plus + rest


def default_message(submission: Path) -> str:
    """'kit run <run> | val log loss <x> | commit <sha>' from <file>.json, with what is known."""
    meta_path = submission.with_name(submission.name + ".json")
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            print(f"note: cannot read {meta_path} ({type(exc).__name__}); the message is built without it")
        if not isinstance(meta, dict):
            meta = {}
    parts = [f"kit run {meta['run']}" if meta.get("run") else f"kit {submission.name}"]
    loss = meta.get("val_log_loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        parts.append(f"val log loss {loss:.4f}")
    commit = meta.get("git_commit") or git_commit()
    if commit:
        parts.append(f"commit {_short_commit(commit)}")
    return " | ".join(parts)


def run(cfg: Config, file: str = "submission.csv", message: str | None = None, api: Any = None) -> Path:
    """Submit `file` to cfg.competition.slug, print Kaggle's answer; return the submitted file's path.

    `api`: a KaggleApi (tests)."""
    submission = find_submission(cfg, file)
    text = message or cfg.submit.message or default_message(submission)
    slug = cfg.competition.slug
    print(f"submitting {submission} to {slug} with message: {text}", flush=True)
    answer = kaggle_api.submit_file(slug, submission, text, api=api)
    print(f"Kaggle: {answer}", flush=True)
    return submission
