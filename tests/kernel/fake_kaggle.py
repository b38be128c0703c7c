"""A fake kaggle client for `kit kernel`, answering in the shapes kaggle 2.x returns (objects whose fields are
snake_case attributes, status as an enum) or, with `dicts=True`, kaggle 1.6's (dicts with camelCase keys)."""
from __future__ import annotations

import enum
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from tests.data.test_kaggle_api import http_error


class KernelWorkerStatus(enum.Enum):  # kagglesdk.kernels.types.kernels_enums.KernelWorkerStatus
    QUEUED = 0
    RUNNING = 1
    COMPLETE = 2
    ERROR = 3


class FakeKaggle:
    def __init__(self, user: str = "alice", statuses=("COMPLETE",), dataset_states=("ready",),
                 output: Path | None = None, log: str = "", dicts: bool = False, push_answer: dict | None = None):
        self.config_values = {"username": user}
        self.datasets: dict[str, int] = {}  # ref -> versions uploaded
        self.calls: list[tuple] = []
        self.statuses, self.dataset_states = list(statuses), list(dataset_states)
        self.output, self.log, self.dicts = output, log, dicts
        self.push_answer = push_answer or {}
        self.failures: dict[str, list[BaseException]] = {}  # method -> exceptions raised first, in order

    def _fail(self, method: str) -> None:
        if self.failures.get(method):
            raise self.failures[method].pop(0)

    def _answer(self, **fields):
        if self.dicts:
            return {k.split("_")[0] + "".join(p.title() for p in k.split("_")[1:]): v for k, v in fields.items()}
        return SimpleNamespace(**fields)

    def dataset_status(self, ref):
        self._fail("dataset_status")
        self.calls.append(("dataset_status", ref))
        if ref not in self.datasets:
            raise http_error(404)
        return self.dataset_states.pop(0) if len(self.dataset_states) > 1 else self.dataset_states[0]

    def _uploaded(self, method, folder, **options):
        self._fail(method)
        meta = json.loads((Path(folder) / "dataset-metadata.json").read_text())
        files = sorted(p.name for p in Path(folder).iterdir() if p.name != "dataset-metadata.json")
        self.calls.append((method, meta["id"], files, options))
        self.datasets[meta["id"]] = self.datasets.get(meta["id"], 0) + 1
        return self._answer(ref=meta["id"], url=f"https://www.kaggle.com/datasets/{meta['id']}", status="ok", error=None)

    def dataset_create_new(self, folder, public=False, quiet=False, convert_to_csv=True, dir_mode="skip"):
        return self._uploaded("dataset_create_new", folder, public=public, dir_mode=dir_mode)

    def dataset_create_version(self, folder, version_notes, quiet=False, convert_to_csv=True,
                               delete_old_versions=False, dir_mode="skip"):
        return self._uploaded("dataset_create_version", folder, notes=version_notes, dir_mode=dir_mode)

    def kernels_push(self, folder, timeout=None, acc=None):
        self._fail("kernels_push")
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        self.calls.append(("kernels_push", meta, (Path(folder) / meta["code_file"]).read_text()))
        fields = dict(ref=f"/code/{meta['id']}", url=f"https://www.kaggle.com/code/{meta['id']}",
                      version_number=sum(1 for c in self.calls if c[0] == "kernels_push"), error=None,
                      invalid_tags=[], invalid_dataset_sources=[], invalid_competition_sources=[],
                      invalid_kernel_sources=[], invalid_model_sources=[])
        fields.update(self.push_answer)
        return self._answer(**fields)

    def kernels_status(self, ref):
        self._fail("kernels_status")
        self.calls.append(("kernels_status", ref))
        name = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        message = "Your notebook tried to allocate more memory than is available." if name == "ERROR" else None
        if self.dicts:
            return {"status": name.lower(), "failureMessage": message}
        return SimpleNamespace(status=KernelWorkerStatus[name], failure_message=message)

    def kernels_logs(self, ref):
        self.calls.append(("kernels_logs", ref))
        return self.log

    def kernels_output(self, ref, path, file_pattern=None, force=False, quiet=True, page_token=None, page_size=20):
        self._fail("kernels_output")
        self.calls.append(("kernels_output", ref, path))
        written = []
        if self.output is not None:
            for source in sorted(self.output.rglob("*")):
                if source.is_file():
                    target = Path(path) / source.relative_to(self.output)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                    written.append(str(target))
        log = Path(path) / f"{ref.split('/')[-1]}.log"
        log.write_text(self.log)
        return written + [str(log)], None
