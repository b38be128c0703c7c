"""`make upload`: the submission file found, a message from its metadata, Kaggle's answer or a clear error."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from kit import paths
from kit.submit import upload
from kit.errors import KitError
from tests.data.test_kaggle_api import FakeApi, http_error

SLUG = "dogs-vs-cats-redux-kernels-edition"


@pytest.fixture
def submission(cfg):
    """submissions/submission.csv and the metadata the submit stage writes beside it."""
    folder = paths.submissions_dir(cfg)
    folder.mkdir(parents=True)
    csv = folder / "submission.csv"
    csv.write_text("id,label\n1,0.9\n2,0.1\n")
    meta = {"run": "dvc-20261121-2030", "val_log_loss": 0.041234, "git_commit": "abc1234def5678+dirty"}
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


def test_a_file_given_by_path(cfg, tmp_path):
    other = tmp_path / "elsewhere.csv"
    other.write_text("id,label\n1,0.5\n")
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
