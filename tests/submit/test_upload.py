"""`make upload`: the submission file found and checked, a message from its metadata, Kaggle's answer or a clear error."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from kit import paths
from kit.data import kaggle_api
from kit.submit import ledger, upload
from kit.errors import KitError
from tests.data.test_kaggle_api import FakeApi, http_error
from tests.fixtures import image_bytes
from tests.submit.cli import one_error_line, overrides, refused, run_kit, tree

SLUG = "dogs-vs-cats-redux-kernels-edition"
GOOD = "id,label\n1,0.9\n2,0.1\n"


@pytest.fixture
def sample(cfg):
    """The competition's sample_submission.csv where `make download` puts it: ids 1 and 2."""
    path = paths.raw_dir(cfg) / "sample_submission.csv"
    path.parent.mkdir(parents=True)
    path.write_text("id,label\n1,0.5\n2,0.5\n")
    return path


@pytest.fixture
def submission(cfg, sample):
    """submissions/submission.csv and the metadata the submit stage writes beside it (its sha256 included)."""
    folder = paths.submissions_dir(cfg)
    folder.mkdir(parents=True)
    csv = folder / "submission.csv"
    csv.write_text(GOOD)
    meta = {"run": "dvc-20261121-2030", "val_log_loss": 0.041234, "git_commit": "abc1234def5678+dirty",
            "sha256": hashlib.sha256(GOOD.encode()).hexdigest()}
    (folder / "submission.csv.json").write_text(json.dumps(meta))
    return csv


def test_upload_submits_with_a_message_from_the_metadata(cfg, submission, capsys):
    api = FakeApi()
    before = hashlib.sha256(submission.read_bytes()).hexdigest()
    assert upload.run(cfg, api=api) == submission  # the file submitted, Kaggle's answer printed
    (_, file_name, message, competition), = api.calls
    assert file_name == str(submission) and competition == SLUG
    assert message == "kit run dvc-20261121-2030 | val log loss 0.0412 | commit abc1234+dirty"
    assert f"Kaggle: {api.answer}" in capsys.readouterr().out
    assert hashlib.sha256(submission.read_bytes()).hexdigest() == before


def test_upload_records_its_message_and_ref_in_the_files_ledger_row(cfg, submission, capsys):
    folder = paths.submissions_dir(cfg)
    for sha in ("0" * 64, json.loads((folder / "submission.csv.json").read_text())["sha256"]):
        ledger.append(folder, {"run": "dvc-20261121-2030", "sha256": sha})
    first = (folder / "ledger.csv").read_text().splitlines()[1]
    upload.run(cfg, api=FakeApi())
    other, ours = ledger.read(folder)
    assert ours["kaggle_ref"] == "1" and ours["message"].startswith("kit run dvc-20261121-2030")
    assert (folder / "ledger.csv").read_text().splitlines()[1] == first and other["message"] == ""
    assert "recorded in" in capsys.readouterr().out


def test_upload_wait_prints_kaggles_score_beside_validation_and_keeps_it(cfg, submission, capsys, monkeypatch):
    folder = paths.submissions_dir(cfg)
    ledger.append(folder, {"run": "dvc-20261121-2030", "sha256": json.loads(
        (folder / "submission.csv.json").read_text())["sha256"]})

    class ScoringApi(FakeApi):
        def competition_submissions(self, competition):
            self.calls.append(("list", competition))
            status = "COMPLETE" if len(self.calls) > 2 else "PENDING"
            return [{"ref": 1, "fileName": "submission.csv", "description": "x", "status": status,
                     "publicScore": "0.0450", "privateScore": "0.0440"}]
    slept = []
    monkeypatch.setattr("kit.submit.scores.time.sleep", slept.append)
    upload.run(cfg, api=ScoringApi(), wait=True, timeout=100)
    assert slept == [5.0]
    assert "public 0.0450, private 0.0440 (validation 0.041234)" in capsys.readouterr().out
    entry, = ledger.read(folder)
    assert entry["public_score"] == "0.0450" and entry["kaggle_status"] == "COMPLETE" and entry["kaggle_ref"] == "1"


def test_an_upload_no_ledger_row_describes_is_noted(cfg, submission, capsys):
    upload.run(cfg, api=FakeApi())
    assert "not recorded" in capsys.readouterr().out and not (paths.submissions_dir(cfg) / "ledger.csv").exists()


def test_explicit_message_wins(cfg, submission):
    api = FakeApi()
    upload.run(cfg, message="my own note", api=api)
    assert api.calls[0][2] == "my own note"


def test_without_metadata_the_message_uses_what_is_known(cfg, submission, monkeypatch):
    submission.with_name("submission.csv.json").unlink()
    monkeypatch.setattr(upload, "git_commit", lambda: "0123456789abcdef")
    api = FakeApi()
    upload.run(cfg, api=api)
    assert api.calls[0][2] == "kit submission.csv | commit 0123456"


def test_unreadable_metadata_is_noted_not_fatal(cfg, submission, monkeypatch, capsys):
    submission.with_name("submission.csv.json").write_text("{broken")
    monkeypatch.setattr(upload, "git_commit", lambda: None)
    api = FakeApi()
    upload.run(cfg, api=api)
    assert api.calls[0][2] == "kit submission.csv" and "cannot read" in capsys.readouterr().out


def test_a_file_given_by_path(cfg, tmp_path, sample):
    other = tmp_path / "elsewhere.csv"
    other.write_text("id,label\n1,0.5\n2,0.5\n")
    api = FakeApi()
    assert upload.run(cfg, file=str(other), api=api) == other
    assert api.calls[0][1] == str(other)


def test_missing_submission_says_run_make_submit(cfg):
    api = FakeApi()
    with pytest.raises(KitError, match="not found: run `make submit` first"):
        upload.run(cfg, api=api)
    assert api.calls == []


def test_rules_not_accepted(cfg, submission):
    with pytest.raises(KitError, match=rf"open https://www.kaggle.com/competitions/{SLUG}/rules"):
        upload.run(cfg, api=FakeApi(error=http_error(403)))


def test_rate_limit_is_retried_boundedly(cfg, submission, monkeypatch):
    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)
    api = FakeApi(error=http_error(429))
    with pytest.raises(KitError, match="rate limiting"):
        upload.run(cfg, api=api)
    assert len(api.calls) == 5 and len(waits) == 4


def test_failed_upload_is_an_error(cfg, submission):
    with pytest.raises(KitError, match="did not accept"):
        upload.run(cfg, api=FakeApi(answer="Could not submit to competition"))


# ---- every upload costs one of the day's submissions: a bad file never reaches the network ---------

BAD_FILES = {
    # name -> (bytes, what the one-line error says)
    "garbage": (b"hello\nthis is not, a submission\n", "submission is missing column(s) 'id', 'label'"),
    "a JPEG": (image_bytes(), "is not a CSV submission"),
    "empty": (b"", "is not a CSV submission"),
    "wrong ids": (b"id,label\n1,0.9\n3,0.1\n", "1 missing (e.g. 2), 1 extra (e.g. 3)"),
    "a missing row": (b"id,label\n1,0.9\n", "1 missing (e.g. 2)"),
    "NaN": (b"id,label\n1,0.9\n2,\n", "1 NaN probabilities (first at id 2)"),
    "above one": (b"id,label\n1,1.5\n2,0.1\n", "probabilities outside [0, 1], worst 1.5"),
    "P(cat) header": (b"id,cat\n1,0.9\n2,0.1\n", "missing column(s) 'label'"),
    "file names as ids": (b"id,label\n1.jpg,0.9\n2.jpg,0.1\n", "must be integers like the sample's"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_refused_before_any_network_call(cfg, submission, tmp_path, case):
    data, reason = BAD_FILES[case]
    submission.write_bytes(data)
    submission.with_name("submission.csv.json").unlink()  # no metadata: the checks alone refuse it
    before = tree(tmp_path)
    api = FakeApi()
    with pytest.raises(KitError) as error:
        upload.run(cfg, api=api)
    message = str(error.value)
    assert reason in message and str(submission) in message and "\n" not in message, message
    assert api.calls == []  # Kaggle never saw it
    assert tree(tmp_path) == before


def test_rows_of_a_multiclass_file_must_sum_to_one(cfg, tmp_path):
    sample = paths.raw_dir(cfg) / "sample_submission.csv"
    sample.parent.mkdir(parents=True)
    sample.write_text("id,a,b,c\n7,0.3,0.3,0.4\n8,0.3,0.3,0.4\n")
    mine = tmp_path / "mine.csv"
    mine.write_text("id,a,b,c\n7,0.2,0.3,0.5\n8,0.6,0.3,0.5\n")
    api = FakeApi()
    with pytest.raises(KitError, match=r"was not uploaded: 1 submission rows don't sum to 1 .* e.g. id 8 sums to 1.4"):
        upload.run(cfg, file=str(mine), api=api)
    assert api.calls == []
    mine.write_text("id,a,b,c\n7,0.2,0.3,0.5\n8,0.1,0.3,0.6\n")
    upload.run(cfg, file=str(mine), message="three classes", api=api)
    assert len(api.calls) == 1


def test_without_the_sample_submission_nothing_is_checked_or_sent(cfg, submission, sample, tmp_path):
    sample.unlink()
    before = tree(tmp_path)
    api = FakeApi()
    with pytest.raises(KitError, match=r"cannot check .*submission.csv before uploading it: no sample submission at "
                                       r".*sample_submission.csv; download the competition first with `make download`"):
        upload.run(cfg, api=api)
    assert api.calls == [] and tree(tmp_path) == before


def test_a_file_edited_after_submit_needs_a_message_of_its_own(cfg, submission, tmp_path, capsys):
    submission.write_text("id,label\n1,0.8\n2,0.2\n")  # still a valid file, but not the one submit scored
    before = tree(tmp_path)
    api = FakeApi()
    with pytest.raises(KitError) as error:
        upload.run(cfg, api=api)
    message = str(error.value)
    assert message.startswith(f"{submission} was edited after `make submit` wrote it")
    assert "--message" in message and "dvc-20261121-2030" not in message and "0.0412" not in message
    assert api.calls == [] and tree(tmp_path) == before
    upload.run(cfg, message="hand-tuned labels", api=api)
    (_, file_name, sent, _), = api.calls
    assert file_name == str(submission) and sent == "hand-tuned labels"  # not the stale run and score
    assert "was edited after `make submit`" in capsys.readouterr().out
    assert tree(tmp_path) == before


def test_metadata_without_a_checksum_still_gives_the_message(cfg, submission):
    meta_file = submission.with_name("submission.csv.json")
    meta = json.loads(meta_file.read_text())
    del meta["sha256"]  # written by an older kit: nothing to compare
    meta_file.write_text(json.dumps(meta))
    api = FakeApi()
    upload.run(cfg, api=api)
    assert api.calls[0][2].startswith("kit run dvc-20261121-2030 | val log loss 0.0412")


def test_command_line_refuses_a_bad_file_in_one_line(cfg, submission, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kaggle_api, "connect", lambda: pytest.fail("the Kaggle API was reached"))
    submission.write_bytes(image_bytes())
    before = tree(tmp_path)
    message = refused(capsys, ["upload", *overrides(tmp_path), "--file", str(submission)])
    assert message.startswith(f"{submission} is not a CSV submission")
    assert tree(tmp_path) == before


def test_command_line_process_refuses_a_stale_file_in_one_line(submission, tmp_path):
    """`python -m kit upload` itself: exit status 2, one line, no traceback, nothing sent (no credentials here)."""
    submission.write_text("id,label\n1,0.7\n2,0.3\n")
    before = tree(tmp_path)
    done = run_kit(tmp_path, "upload", *overrides(tmp_path), "--file", "submission.csv")  # in submissions/
    assert one_error_line(done.returncode, done.stderr).startswith(f"{submission} was edited after `make submit` wrote it")
    assert "submitting" not in done.stdout
    assert tree(tmp_path) == before


def test_losing_the_network_while_waiting_is_one_line_and_the_upload_stays_recorded(cfg, submission, monkeypatch):
    import requests
    folder = paths.submissions_dir(cfg)
    ledger.append(folder, {"run": "r", "sha256": json.loads((folder / "submission.csv.json").read_text())["sha256"]})

    class OfflineApi(FakeApi):
        def competition_submissions(self, competition):
            raise requests.exceptions.ConnectionError("Max retries exceeded")
    monkeypatch.setattr("kit.submit.scores.time.sleep", lambda s: None)
    with pytest.raises(KitError, match="cannot reach kaggle.com while listing submissions") as error:
        upload.run(cfg, api=OfflineApi(), wait=True)
    assert "\n" not in str(error.value)
    entry, = ledger.read(folder)
    assert entry["kaggle_ref"] == "1" and entry["kaggle_status"] == "submitted"  # what was known is kept
    assert submission.read_text() == GOOD
