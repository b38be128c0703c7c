"""submissions/ledger.csv: one row per submission, appended; Kaggle's columns filled by upload; a broken ledger kept."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest

from kit.config import config_dict, load_config
from kit.submit import ledger
from kit.submit.ledger import COLUMNS

COMPETITION = Path(__file__).resolve().parents[2] / "configs" / "dogs-vs-cats-redux.yaml"


def row(n: int) -> dict:
    return {"time": f"2026-12-02T10:0{n}:00", "file": f"run{n}-stamp.csv", "sha256": f"{n:064x}", "run": f"run{n}",
            "val_log_loss": 0.03 + n / 1000, "tta": ["original", "hflip"], "calibration": {"method": "none"}}


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_rows_are_appended_and_earlier_bytes_never_change(tmp_path):
    path = ledger.append(tmp_path, row(1))
    first = path.read_bytes()
    assert path == tmp_path / "ledger.csv" and first.decode().splitlines()[0] == ",".join(COLUMNS)
    assert ledger.append(tmp_path, row(2)) == path
    assert path.read_bytes().startswith(first)  # appended, not rewritten
    got = rows(path)
    assert [r["run"] for r in got] == ["run1", "run2"] and got[1]["val_log_loss"] == "0.032"
    assert json.loads(got[0]["tta"]) == ["original", "hflip"] and got[0]["public_score"] == ""
    assert not [p for p in tmp_path.iterdir() if p.name != "ledger.csv"]  # no temporary left


BROKEN = {
    "another header": "when,what\n1,2\n",
    "a ragged row": ",".join(COLUMNS) + "\n" + "a,b,c\n",
    "a cut-off last line": ",".join(COLUMNS) + "\n" + ",".join(["x"] * len(COLUMNS)),
    "not text": None,
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_a_broken_ledger_is_reported_kept_and_a_new_one_started_beside_it(tmp_path, how, capsys):
    broken = tmp_path / "ledger.csv"
    broken.write_bytes(BROKEN[how].encode() if BROKEN[how] is not None else b"\xff\xfe\x00garbage")
    before = broken.read_bytes()
    path = ledger.append(tmp_path, row(1))
    assert path == tmp_path / "ledger-2.csv" and [r["run"] for r in rows(path)] == ["run1"]
    assert broken.read_bytes() == before  # left exactly as it was
    out = capsys.readouterr().out
    assert "ledger.csv" in out and "left as it is" in out and "ledger-2.csv" in out
    assert ledger.append(tmp_path, row(2)) == path and len(rows(path)) == 2  # the new one goes on
    assert [r["run"] for r in ledger.read(tmp_path)] == ["run1", "run2"]


def test_upload_fills_kaggles_columns_of_its_row_only(tmp_path):
    for n in (1, 2, 3):
        path = ledger.append(tmp_path, row(n))
    lines = path.read_text().splitlines()
    assert ledger.update(tmp_path, f"{2:064x}", {"message": "kit run run2", "kaggle_ref": "12345"}) == path
    after = path.read_text().splitlines()
    assert after[:2] == lines[:2] and after[3] == lines[3]  # every other row byte for byte
    got = rows(path)[1]
    assert got["message"] == "kit run run2" and got["kaggle_ref"] == "12345" and got["run"] == "run2"
    assert ledger.update(tmp_path, "f" * 64, {"message": "x"}) is None and path.read_text().splitlines() == after


def test_config_changes_are_the_keys_that_differ_from_the_competition_config():
    base = config_dict(load_config(COMPETITION))
    digest, changes = ledger.config_changes(base, "dogs-vs-cats-redux-kernels-edition")
    assert changes == {}
    changed = config_dict(load_config(COMPETITION, ["train.finetune_epochs=0", "paths.runs_dir=/elsewhere"]))
    other, changes = ledger.config_changes(changed, "dogs-vs-cats-redux-kernels-edition")
    assert changes == {"train.finetune_epochs": 0} and other != digest  # where files go is not a change


def test_submission_row_from_the_metadata_submit_writes():
    meta = {"run": "r", "file": "/x/subs/r-20261202-1000.csv", "sha256": hashlib.sha256(b"x").hexdigest(),
            "created": "2026-12-02T10:00:00", "competition": "dogs-vs-cats-redux-kernels-edition", "git_commit": "abc",
            "val_log_loss": 0.0314, "val_log_loss_raw": 0.0316, "val_log_loss_interval": [0.017, 0.051],
            "calibration": {"method": "temperature", "params": {"temperature": 0.8}}, "tta": ["original"],
            "snapshots": {"name": "last_2", "epochs": [3, 7]}, "members": [{}, {}], "refit": {"run": "refit"}}
    got = ledger.submission_row(meta, config_dict(load_config(COMPETITION)))
    assert got["file"] == "r-20261202-1000.csv" and got["members"] == 2 and got["refit"] is True
    assert got["calibration"] == {"method": "temperature", "temperature": 0.8}
    assert got["snapshots"] == {"name": "last_2", "epochs": [3, 7]} and got["config_changes"] == {}


# --- scores back from Kaggle (kit/submit/scores.py), the client faked with both generations' shapes ------------

def v2(ref, status, public="", private="", file_name="submission.csv", description="kit run r1"):
    """kaggle 2.x: kagglesdk's own ApiSubmission (snake_case, scores as strings, status a SubmissionStatus enum)."""
    ApiSubmission = pytest.importorskip("kagglesdk.competitions.types.competition_api_service").ApiSubmission
    SubmissionStatus = pytest.importorskip("kagglesdk.competitions.types.submission_status").SubmissionStatus
    entry = ApiSubmission()
    entry.ref, entry.file_name, entry.description, entry.status = ref, file_name, description, getattr(
        SubmissionStatus, status)
    entry.public_score, entry.private_score = public, private
    return entry


def v16(ref, status, public="", private="", file_name="submission.csv", description="kit run r1"):
    """kaggle 1.6's Submission: the JSON's camelCase keys set as attributes, status a lower-case string."""
    import types
    return types.SimpleNamespace(ref=ref, fileName=file_name, date="2026-12-02T10:00:00.000Z",
                                 description=description, status=status.lower(), publicScore=public,
                                 privateScore=private, totalBytes=100, errorDescription=None)


def as_dict(ref, status, public="", private="", file_name="submission.csv", description="kit run r1"):
    """The same as a plain dict (a JSON answer)."""
    return {"ref": ref, "fileName": file_name, "description": description, "status": status,
            "publicScore": public, "privateScore": private}


class SubmissionsApi:
    """competition_submissions answering from a script of lists, one per call (the last repeats)."""
    def __init__(self, *answers, error=None):
        self.answers, self.error, self.calls = list(answers), error, 0

    def competition_submissions(self, competition):
        self.calls += 1
        if self.error:
            raise self.error
        return self.answers[min(self.calls, len(self.answers)) - 1]


@pytest.mark.parametrize("shape", [v2, v16, as_dict])
def test_both_client_generations_read_the_same(shape):
    from kit.submit import scores
    got = scores.submission_fields(shape(7, "COMPLETE", "0.0412", "0.0398"))
    assert got == {"ref": "7", "file_name": "submission.csv", "date": got["date"], "description": "kit run r1",
                   "status": "COMPLETE", "public_score": "0.0412", "private_score": "0.0398"}


@pytest.mark.parametrize("shape", [v2, v16])
def test_wait_polls_with_a_growing_delay_until_scored(shape):
    from kit.submit import scores
    api = SubmissionsApi([shape(7, "PENDING")], [shape(7, "PENDING")], [shape(8, "COMPLETE", "0.5"),
                                                                         shape(7, "COMPLETE", "0.04", "0.039")])
    slept = []
    found = scores.wait("slug", "7", "submission.csv", "kit run r1", timeout=600, api=api, sleep=slept.append,
                        clock=lambda: sum(slept))
    assert found["public_score"] == "0.04" and found["private_score"] == "0.039" and api.calls == 3
    assert slept == [5.0, 10.0]


def test_wait_stops_at_its_time_limit_with_what_it_knows(capsys):
    from kit.submit import scores
    api, slept = SubmissionsApi([v2(7, "PENDING")]), []
    found = scores.wait("slug", "7", "submission.csv", "m", timeout=30, api=api, sleep=slept.append,
                        clock=lambda: sum(slept))
    assert found["status"] == "PENDING" and sum(slept) == 30  # never past the limit
    assert "stopped waiting after 30 s" in capsys.readouterr().out


def test_submissions_refreshes_every_row_and_flags_a_disagreement(tmp_path, capsys):
    from kit.submit import scores
    cfg = load_config(COMPETITION, [f"paths.submissions_dir={tmp_path}"])
    ledger.append(tmp_path, {**row(1), "message": "kit run r1", "kaggle_ref": "7"})
    ledger.append(tmp_path, {**row(2), "message": "kit run r2"})  # no ref: found by its description
    ledger.append(tmp_path, row(3))  # never uploaded
    api = SubmissionsApi([v16(9, "COMPLETE", "0.2", "0.21", description="kit run r2"),
                          v16(7, "COMPLETE", "0.035", "0.034", description="kit run r1")])
    scores.run(cfg, api=api)
    got = {r["run"]: r for r in ledger.read(tmp_path)}
    assert got["run1"]["private_score"] == "0.034" and got["run2"]["kaggle_ref"] == "9"
    assert got["run3"]["public_score"] == ""
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:4]] == ["run1", "run2", "run3"]  # best first, unscored last
    assert "much worse than validation" in lines[2] and "much worse" not in lines[1]


def test_a_kaggle_error_while_listing_is_the_clients_one_line_message(tmp_path, capsys):
    from kit.errors import KitError
    from kit.submit import scores
    from tests.data.test_kaggle_api import http_error
    ledger.append(tmp_path, row(1))
    before = (tmp_path / "ledger.csv").read_bytes()
    cfg = load_config(COMPETITION, [f"paths.submissions_dir={tmp_path}"])
    with pytest.raises(KitError, match="I Understand and Accept") as error:
        scores.run(cfg, api=SubmissionsApi(error=http_error(403)))
    assert "\n" not in str(error.value) and (tmp_path / "ledger.csv").read_bytes() == before
    assert "run1" in capsys.readouterr().out  # the local table is still shown
