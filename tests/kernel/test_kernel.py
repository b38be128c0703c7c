"""`kit kernel push | status | output` against a fake Kaggle client: datasets uploaded once per digest, the
kernel pushed with what it needs, status polled until it ends, outputs put in place only when they are whole."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kit.config import load_config
from kit.data import kaggle_api
from kit.errors import KitError
from kit.kernel import kernel
from tests.conftest import output_paths
from tests.data.test_kaggle_api import http_error
from tests.kernel.fake_kaggle import FakeKaggle
from tests.submit.cli import ROOT, tree

DEMO = str(ROOT / "configs" / "demo.yaml")
LOG = json.dumps([{"stream_name": "stdout", "time": 1.0, "data": "kit kernel: train\n"},
                  {"stream_name": "stderr", "time": 2.0, "data": "error: out of memory: lower data.batch_size\n"}])


class Clock:
    """time.monotonic and time.sleep for a test: sleeping moves the clock."""
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def cfg(tmp_path):
    return load_config(DEMO, [*output_paths(tmp_path), "kernel.poll_seconds=20"])


def push(cfg, api, clock=None, **options):
    clock = clock or Clock()
    return kernel.run(cfg, "push", api=api, sleep=clock.sleep, clock=clock, **options)


def test_push_creates_the_datasets_then_pushes_the_kernel_and_records_it(cfg, tmp_path):
    api = FakeKaggle(dataset_states=("pending", "ready"))
    own = tmp_path / "own.h5"
    own.write_bytes(b"weights")
    cfg.model.weights = str(own)
    clock = Clock()
    folder = push(cfg, api, clock)
    created = [c for c in api.calls if c[0] == "dataset_create_new"]
    assert [(c[1], c[2], c[3]["dir_mode"], c[3]["public"]) for c in created] == [
        ("alice/kit-code", ["kit-0.1.0-py3-none-any.whl"], "zip", False),
        ("alice/kit-weights", ["own.h5"], "zip", False)]
    assert clock.sleeps == [5.0]  # the code dataset was "pending" once: waited before pushing the kernel
    (_, meta, script), = [c for c in api.calls if c[0] == "kernels_push"]
    assert meta["id"] == "alice/kit-demo" and meta["enable_internet"] is False
    assert meta["dataset_sources"] == ["alice/kit-code", "alice/kit-weights"] and "SETTINGS: dict = {" in script
    record = json.loads((folder.parent / "push.json").read_text())
    assert record["kernel"] == "alice/kit-demo" and record["version"] == 1 and record["url"].endswith("kit-demo")
    digests = json.loads((tmp_path / "kernels" / "datasets.json").read_text())
    assert set(digests) == {"alice/kit-code", "alice/kit-weights"}


def test_a_second_push_reuses_unchanged_datasets_and_versions_changed_ones(cfg, tmp_path, capsys):
    api = FakeKaggle()
    own = tmp_path / "own.h5"
    own.write_bytes(b"weights")
    cfg.model.weights = str(own)
    push(cfg, api)
    api.calls.clear()
    push(cfg, api)
    assert not [c for c in api.calls if c[0].startswith("dataset_create")]
    assert "dataset alice/kit-weights: unchanged, reused" in capsys.readouterr().out
    own.write_bytes(b"other weights")
    push(cfg, api)
    versions = [c for c in api.calls if c[0] == "dataset_create_version"]
    assert [c[1] for c in versions] == ["alice/kit-weights"] and versions[0][3]["dir_mode"] == "zip"
    assert sum(1 for c in api.calls if c[0] == "kernels_push") == 2  # since the calls were cleared


def test_a_refused_kernel_is_one_line_and_leaves_the_last_push_record(cfg, tmp_path):
    push(cfg, FakeKaggle())
    record = tmp_path / "kernels" / "kit-demo" / "push.json"
    before = record.read_bytes()
    api = FakeKaggle(push_answer={"invalid_dataset_sources": ["alice/kit-code"]})
    with pytest.raises(KitError, match="Kaggle refused the kernel .*invalid_dataset_sources: alice/kit-code"):
        push(cfg, api)
    assert record.read_bytes() == before


def test_rate_limits_are_waited_out_and_a_403_says_accept_the_rules(cfg, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    api = FakeKaggle()
    api.failures["kernels_push"] = [http_error(429), http_error(503)]
    push(cfg, api)
    assert sum(1 for c in api.calls if c[0] == "kernels_push") == 1
    api.failures["kernels_push"] = [http_error(403)]
    with pytest.raises(KitError, match="accepted the competition rules"):
        push(cfg, api)


def test_the_owner_comes_from_the_credentials_unless_the_config_names_one(cfg):
    push(cfg, FakeKaggle(user="bob"))
    assert json.loads((Path(cfg.paths.kernels_dir) / "kit-demo" / "push.json").read_text())["kernel"] == "bob/kit-demo"
    cfg.kernel.owner = "team-x"
    api = FakeKaggle(user="bob")
    push(cfg, api)
    assert [c[1]["id"] for c in api.calls if c[0] == "kernels_push"] == ["team-x/kit-demo"]


def test_a_dry_run_never_signs_in(cfg, monkeypatch):
    monkeypatch.setattr(kaggle_api, "connect", lambda: pytest.fail("a dry run must not sign in"))
    monkeypatch.setenv("KAGGLE_USERNAME", "carol")
    folder = kernel.run(cfg, "push", dry_run=True)
    assert json.loads((folder / "kernel" / "kernel-metadata.json").read_text())["id"] == "carol/kit-demo"


@pytest.mark.parametrize("dicts", [False, True], ids=["kaggle-2.x", "kaggle-1.6"])
def test_status_polls_with_growing_pauses_until_complete(cfg, capsys, dicts):
    push(cfg, FakeKaggle())
    api = FakeKaggle(statuses=("QUEUED", "RUNNING", "RUNNING", "RUNNING", "RUNNING", "COMPLETE"), dicts=dicts)
    clock = Clock()
    assert kernel.run(cfg, "status", api=api, sleep=clock.sleep, clock=clock) == "COMPLETE"
    assert clock.sleeps == [5.0, 10.0, 20.0, 20.0, 20.0]  # doubling up to kernel.poll_seconds
    out = capsys.readouterr().out
    assert "kernel alice/kit-demo: RUNNING (polled for 0.2 min" in out and "min since the push" in out
    assert "`kit kernel output`" in out


def test_status_of_a_failed_kernel_shows_the_failure_and_the_logs_tail(cfg, capsys):
    push(cfg, FakeKaggle())
    api = FakeKaggle(statuses=("RUNNING", "ERROR"), log=LOG)
    clock = Clock()
    with pytest.raises(KitError, match="ended ERROR: Your notebook tried to allocate more memory"):
        kernel.run(cfg, "status", api=api, sleep=clock.sleep, clock=clock)
    out = capsys.readouterr().out
    assert "kit kernel: train\nerror: out of memory: lower data.batch_size\n---" in out


def test_status_stops_at_its_time_limit_and_no_wait_asks_once(cfg):
    push(cfg, FakeKaggle())
    cfg.kernel.wait_minutes = 1
    api, clock = FakeKaggle(statuses=("RUNNING",)), Clock()
    with pytest.raises(KitError, match="still RUNNING after 1 min of polling"):
        kernel.run(cfg, "status", api=api, sleep=clock.sleep, clock=clock)
    api = FakeKaggle(statuses=("RUNNING",))
    assert kernel.run(cfg, "status", wait=False, api=api) == "RUNNING"
    assert sum(1 for c in api.calls if c[0] == "kernels_status") == 1


def test_status_without_a_push_names_the_command_and_a_missing_kernel_is_named(cfg):
    with pytest.raises(KitError, match="no kernel pushed for config 'demo'.*kit kernel push"):
        kernel.run(cfg, "status", api=FakeKaggle())
    api = FakeKaggle()
    api.failures["kernels_status"] = [http_error(404)]
    with pytest.raises(KitError, match="kernel alice/gone not found on Kaggle"):
        kernel.run(cfg, "status", kernel="alice/gone", api=api)


def kernel_output(tmp_path: Path, sample: pd.DataFrame, label: float = 0.7, status: str = "complete") -> Path:
    """A kernel's /kaggle/working as kit leaves it: a run, an archived submission, submission.csv, the summary."""
    out = tmp_path / "kaggle-output"
    run = out / "runs" / "demo-20261202-0100"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: demo\n")
    (run / "best.keras").write_bytes(b"model")
    sub = sample.assign(label=label)
    (out / "submissions").mkdir()
    sub.to_csv(out / "submissions" / "demo-20261202-0100-0130.csv", index=False)
    sub.to_csv(out / "submission.csv", index=False)
    (out / "submission.csv.json").write_text(json.dumps({"run": run.name, "val_log_loss": 0.2}))
    (out / "kit-kernel.json").write_text(json.dumps({"status": status, "stages": {"train": {"seconds": 61.0}}}))
    return out


def test_output_puts_the_run_and_the_submission_in_place(indexed, competition_zip, tmp_path, capsys):
    cfg = indexed(competition_zip, config=DEMO)
    push(cfg, FakeKaggle())
    sample = pd.read_csv(tmp_path / "data" / cfg.competition.slug / "raw" / "sample_submission.csv")
    api = FakeKaggle(output=kernel_output(tmp_path, sample), log=LOG)
    kernel.run(cfg, "output", api=api)
    assert (tmp_path / "runs" / "demo-20261202-0100" / "best.keras").read_bytes() == b"model"
    assert (tmp_path / "submissions" / "demo-20261202-0100-0130.csv").is_file()
    placed = pd.read_csv(tmp_path / "submission.csv")
    assert list(placed["id"]) == list(sample["id"]) and (placed["label"] == 0.7).all()
    assert json.loads((tmp_path / "submission.csv.json").read_text())["run"] == "demo-20261202-0100"
    assert (tmp_path / "kernels" / "kit-demo" / "output" / "kit-demo.log").read_text() == LOG
    assert "next: `make upload`" in capsys.readouterr().out
    local_run = tmp_path / "runs" / "demo-20261202-0100"
    (local_run / "best.keras").write_bytes(b"retrained here")  # a second output keeps what is already here
    kernel.run(cfg, "output", api=api)
    assert (local_run / "best.keras").read_bytes() == b"retrained here"


def test_output_of_a_bad_submission_or_a_failed_kernel_changes_nothing_here(indexed, competition_zip, tmp_path):
    cfg = indexed(competition_zip, config=DEMO)
    push(cfg, FakeKaggle())
    sample = pd.read_csv(tmp_path / "data" / cfg.competition.slug / "raw" / "sample_submission.csv")
    (tmp_path / "submission.csv").write_text("mine\n")
    mine = tree(tmp_path / "runs"), (tmp_path / "submission.csv").read_bytes()
    bad = kernel_output(tmp_path, sample, label=1.5)
    with pytest.raises(KitError, match=r"fails the submission checks.*submission.csv is unchanged"):
        kernel.run(cfg, "output", api=FakeKaggle(output=bad))
    assert (tree(tmp_path / "runs"), (tmp_path / "submission.csv").read_bytes()) == mine
    shutil.rmtree(bad)
    failed = kernel_output(tmp_path, sample, status="train failed")
    with pytest.raises(KitError, match="ended ERROR .*nothing was put into runs/"):
        kernel.run(cfg, "output", api=FakeKaggle(statuses=("ERROR",), output=failed, log=LOG))
    assert (tree(tmp_path / "runs"), (tmp_path / "submission.csv").read_bytes()) == mine
    assert (tmp_path / "kernels" / "kit-demo" / "output" / "kit-demo.log").read_text() == LOG  # kept, to read
    with pytest.raises(KitError, match="is RUNNING: wait for it with `kit kernel status`"):
        kernel.run(cfg, "output", api=FakeKaggle(statuses=("RUNNING",)))


def test_a_download_that_fails_keeps_the_earlier_output_whole(cfg, tmp_path):
    push(cfg, FakeKaggle())
    api = FakeKaggle(log=LOG)
    with pytest.raises(KitError):  # no kit-kernel.json in this output: kit did not finish
        kernel.run(cfg, "output", api=api)
    earlier = tree(tmp_path / "kernels" / "kit-demo" / "output")
    api.failures["kernels_output"] = [ConnectionError("reset by peer")]
    with pytest.raises(KitError, match="cannot reach kaggle.com"):
        kernel.run(cfg, "output", api=api)
    assert tree(tmp_path / "kernels" / "kit-demo" / "output") == earlier
