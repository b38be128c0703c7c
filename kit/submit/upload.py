"""Submit a submission file to the Kaggle competition.

    make upload                                        # python -m kit upload
    python -m kit upload --file submissions/submission.csv --message "my note"

The default message comes from `<file>.json`, which the submit stage writes beside the file
(`{"run": ..., "val_log_loss": ..., "git_commit": ...}`), e.g.
"kit run dvc-20261121-2030 | val log loss 0.0412 | commit abc1234". Kaggle's answer is printed and
the submitted file's path returned; a refused or failed upload is a KitError.

Before anything goes over the network the file gets the submit stage's checks against the competition's
sample_submission.csv (header, exactly its ids, probabilities in [0, 1], no NaN, rows summing to 1): each
upload costs one of the day's Kaggle submissions. A file whose bytes no longer match the sha256 in its
.json was edited after `make submit`: the run and score there do not describe it, so it is uploaded only
with a message of your own (--message or submit.message).
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from kit.data import kaggle_api
from kit import paths as kit_paths
from kit.config import Config
from kit.data.dataset import SAMPLE_SUBMISSION
from kit.provenance import git_commit
from kit.errors import KitError
from kit.submit.submission import check_submission, meta_path, read_sample


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


def check_file(cfg: Config, submission: Path, data: bytes) -> None:
    """The submit stage's checks on the file's bytes `data`, against the competition's sample submission."""
    sample_path = kit_paths.raw_dir(cfg) / SAMPLE_SUBMISSION
    if not sample_path.is_file():
        raise KitError(f"cannot check {submission} before uploading it: no sample submission at {sample_path}; "
                       "download the competition first with `make download`")
    sample = read_sample(sample_path)
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, OSError) as error:  # pandas' ParserError and EmptyDataError too
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:100]
        raise KitError(f"{submission} is not a CSV submission ({first}): upload the file `make submit` "
                       "wrote (submission.csv)") from None
    try:
        check_submission(frame, sample)
    except KitError as error:
        raise KitError(f"{submission} was not uploaded: {error}") from None


def read_meta(submission: Path) -> dict:
    """<file>.json as written by the submit stage ({} when missing or unreadable, with a note)."""
    path = meta_path(submission)
    meta: dict = {}
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"note: cannot read {path} ({type(exc).__name__}); the message is built without it")
    return meta if isinstance(meta, dict) else {}


def edited_after_submit(data: bytes, meta: dict) -> bool:
    """Whether the file's bytes `data` differ from the sha256 the submit stage recorded for it."""
    recorded = meta.get("sha256")
    return isinstance(recorded, str) and hashlib.sha256(data).hexdigest() != recorded


def default_message(submission: Path, meta: dict) -> str:
    """'kit run <run> | val log loss <x> | commit <sha>' from <file>.json (`meta`), with what is known."""
    parts = [f"kit run {meta['run']}" if meta.get("run") else f"kit {submission.name}"]
    loss = meta.get("val_log_loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        parts.append(f"val log loss {loss:.4f}")
    commit = meta.get("git_commit") or git_commit()
    if commit:
        parts.append(f"commit {_short_commit(commit)}")
    return " | ".join(parts)


def run(cfg: Config, file: str = "submission.csv", message: str | None = None, api: Any = None,
        wait: bool = False, timeout: float = 600) -> Path:
    """Submit `file` to cfg.competition.slug, print Kaggle's answer; return the submitted file's path.

    `wait`: poll Kaggle until it has scored the file (at most `timeout` s), print the score beside the
    validation score and keep it in the ledger. `api`: a KaggleApi (tests)."""
    submission = find_submission(cfg, file)
    data = submission.read_bytes()  # read once: the bytes checked are the bytes hashed
    check_file(cfg, submission, data)
    meta, own = read_meta(submission), message or cfg.submit.message
    if edited_after_submit(data, meta):
        if not own:
            raise KitError(f"{submission} was edited after `make submit` wrote it (its sha256 is not the one in "
                           f"{meta_path(submission).name}), so the run and score there would not describe it: "
                           "run `make submit` again, or upload it with a message of your own (--message \"...\")")
        print(f"note: {submission} was edited after `make submit` wrote it; {meta_path(submission).name} "
              "does not describe it, your message is used")
    text = own or default_message(submission, meta)
    slug = cfg.competition.slug
    print(f"submitting {submission} to {slug} with message: {text}", flush=True)
    answer, ref = kaggle_api.submit_file(slug, submission, text, api=api)
    print(f"Kaggle: {answer}", flush=True)
    sha256 = hashlib.sha256(data).hexdigest()
    recorded = record_upload(cfg, sha256, {"message": text, "kaggle_ref": ref, "kaggle_status": "submitted"})
    if wait:
        from kit.submit import scores

        found = scores.wait(slug, ref, submission.name, text, timeout, api=api)
        if found:
            print(f"upload: {scores.score_line(meta, found)}")
            if recorded:
                record_upload(cfg, sha256, scores.kaggle_values(found))
    return submission


def record_upload(cfg: Config, sha256: str, values: dict) -> bool:
    """`values` (the message, Kaggle's ref, status, scores) into the ledger row of the file whose bytes hash to
    `sha256` (kit/submit/ledger.py); whether a row had it. A file no row describes (edited, or written by hand)
    gets a note."""
    from kit.submit import ledger

    folder = kit_paths.submissions_dir(cfg)
    try:
        path = ledger.update(folder, sha256, values)
    except OSError as error:
        print(f"note: the upload could not be recorded in the ledger ({error})")
        return False
    if path:
        ledger.redraw(folder)
    print(f"recorded in {path}" if path else f"note: no row of {folder / ledger.LEDGER} describes this file (not "
          "written by `make submit`, or edited since), so the upload is not recorded")
    return path is not None
