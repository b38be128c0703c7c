"""Kaggle's scores back into the ledger: `kit upload --wait` for one submission, `kit submissions` for all.

    python -m kit upload --wait [--timeout 600]     # upload, then poll until Kaggle has scored it
    python -m kit submissions                        # refresh every ledger row from Kaggle, print the table

Kaggle's client lists a competition's submissions (`competition_submissions`); kaggle 2.x gives objects
with `ref`, `file_name`, `date`, `description`, `status` (an enum: PENDING, COMPLETE, ERROR),
`public_score` and `private_score` as strings, kaggle 1.6 gave camelCase (`fileName`, `publicScore`, ...):
`submission_fields` reads both. A ledger row is matched by its Kaggle ref, else by file name and
description (the upload message). Network failures end in the client's one-line messages
(kit/data/kaggle_api.py); a wait stops at its time limit with what it knows.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from kit import paths as kit_paths
from kit.config import Config
from kit.data import kaggle_api
from kit.errors import KitError
from kit.report.ledger_page import number, kaggle_score
from kit.submit import ledger

FIELDS = {"ref": ("ref",), "file_name": ("file_name", "fileName"), "date": ("date",),
          "description": ("description",), "status": ("status",),
          "public_score": ("public_score", "publicScore"), "private_score": ("private_score", "privateScore")}
FINAL = ("COMPLETE", "ERROR")
DISAGREE = 0.5  # a leaderboard score this much worse (relative) than validation deserves a look


def submission_fields(entry: Any) -> dict:
    """One submission of either client generation (object or dict) as plain strings; status upper case."""
    def get(names):
        for name in names:
            value = entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)
            if value not in (None, ""):
                return value
        return None
    out = {key: get(names) for key, names in FIELDS.items()}
    status = out["status"]
    status = getattr(status, "name", status)  # kaggle 2.x: SubmissionStatus.COMPLETE
    out["status"] = str(status or "").upper().rpartition(".")[2] or "PENDING"
    return {k: ("" if v is None else str(v)) for k, v in out.items()}


def list_submissions(slug: str, api: Any = None) -> list[dict]:
    """The competition's submissions, newest first, as submission_fields dicts."""
    api = api if api is not None else kaggle_api.connect()
    entries = kaggle_api.call_kaggle(lambda: api.competition_submissions(slug), what="listing submissions", slug=slug)
    return [submission_fields(e) for e in entries or [] if e is not None]


def find(submissions: list[dict], ref: str | None = None, file_name: str = "", message: str = "") -> dict | None:
    """The submission with Kaggle ref `ref`, else the newest with this description (the upload's message; kit's
    name the run and commit), else the newest with this file name and no other message."""
    for hit in ((s for s in submissions if ref and s["ref"] == str(ref)),
                (s for s in submissions if message and s["description"] == message),
                (s for s in submissions if file_name and s["file_name"] == file_name and not message)):
        found = next(hit, None)
        if found:
            return found
    return None


def wait(slug: str, ref: str | None, file_name: str, message: str, timeout: float = 600, api: Any = None,
         sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None) -> dict | None:
    """Poll until the submission is COMPLETE or ERROR, or `timeout` seconds pass; return what is known."""
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    start, delay, known = clock(), 5.0, None
    while True:
        known = find(list_submissions(slug, api), ref, file_name, message) or known
        status = known["status"] if known else "not listed yet"
        if known and status in FINAL:
            return known
        left = timeout - (clock() - start)
        if left <= 0:
            print(f"upload: stopped waiting after {timeout:.0f} s; Kaggle's status: {status} "
                  "(run `kit submissions` later for the score)")
            return known
        print(f"upload: Kaggle's status {status}: asking again in {min(delay, left):.0f} s", flush=True)
        sleep(min(delay, left))
        delay = min(delay * 2, 60.0)  # bounded back-off


def kaggle_values(found: dict) -> dict:
    return {"kaggle_ref": found["ref"], "kaggle_status": found["status"], "public_score": found["public_score"],
            "private_score": found["private_score"]}


def score_line(row: dict, found: dict) -> str:
    """'public 0.0412, private 0.0398 (validation 0.0314)' — or Kaggle's status while it has no score."""
    if found["status"] != "COMPLETE":
        return f"Kaggle's status: {found['status']}"
    parts = [f"{name} {found[f'{name}_score']}" for name in ("public", "private") if found[f"{name}_score"]]
    return ", ".join(parts) + f" (validation {row.get('val_log_loss') or 'unknown'})"


def disagrees(row: dict) -> bool:
    """Whether the leaderboard score is much worse than the validation score predicted."""
    board, val = kaggle_score(row), number(row.get("val_log_loss"))
    return board is not None and val is not None and board > val * (1 + DISAGREE) + 0.005


def run(cfg: Config, api: Any = None) -> Path:
    """`kit submissions`: every ledger row refreshed from Kaggle, the table printed best first; the ledger."""
    folder = kit_paths.submissions_dir(cfg)
    try:
        listed = list_submissions(cfg.competition.slug, api)
    except KitError:
        print("submissions: Kaggle could not be asked (below); the ledger as it is:")
        print_table(ledger.read(folder))
        raise
    changes = {}
    for row in ledger.read(folder):
        found = find(listed, row.get("kaggle_ref"), row.get("file"), row.get("message", ""))
        if found:
            changes[row["sha256"]] = kaggle_values(found)
    ledger.update_many(folder, changes)  # each ledger file rewritten once
    rows = ledger.read(folder)
    print_table(rows)
    ledger.redraw(folder, rows)
    print(f"submissions: {folder / 'index.html'}")
    return folder / ledger.LEDGER


def _sort_key(row: dict):
    score = kaggle_score(row)
    return (1, 0.0) if score is None else (0, score)


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("submissions: the ledger is empty: `make submit` adds a row")
        return
    print(f"{'time':19}  {'run':28}  {'val':>7}  {'public':>7}  {'private':>7}  status")
    for row in sorted(rows, key=_sort_key):
        flag = "  <- leaderboard much worse than validation" if disagrees(row) else ""
        val = row.get("val_log_loss") or "-"
        print(f"{row.get('time', '')[:19]:19}  {row.get('run', '')[:28]:28}  {val[:7]:>7}  "
              f"{(row.get('public_score') or '-')[:7]:>7}  {(row.get('private_score') or '-')[:7]:>7}  "
              f"{row.get('kaggle_status') or 'not uploaded'}{flag}")
