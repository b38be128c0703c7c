"""Kaggle's side of `kit kernel`: datasets created or versioned, the kernel pushed, its status, log and output.

    python -m kit kernel push     # ensure_dataset (x2), push_kernel
    python -m kit kernel status   # kernel_state, log_tail
    python -m kit kernel output   # download_output

Every call goes through kit.data.kaggle_api.call_kaggle: rate limits and server errors are retried with a
bounded back-off, and a failure is one line. Responses are read in both client generations' shapes (kaggle 2.x
objects with snake_case attributes, 1.6's dicts with camelCase keys).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from kit.data.kaggle_api import call_kaggle, http_status
from kit.errors import KitError
from kit.kernel.bundle import Dataset

DONE, FAILED = {"COMPLETE"}, {"ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED"}
DATASET_READY_SECONDS = 1800.0  # a new dataset version is processed before a kernel can read it
PUSH_ERRORS = ("invalid_dataset_sources", "invalid_competition_sources", "invalid_kernel_sources",
               "invalid_model_sources", "invalid_tags")


def field(response: Any, name: str) -> Any:
    """`name` (snake_case) from a 2.x response object or a 1.6 dict (camelCase)."""
    if isinstance(response, dict):
        camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
        return response.get(name, response.get(camel))
    return getattr(response, name, None)


def username(api: Any) -> str:
    """The Kaggle user the client signed in as."""
    name = (getattr(api, "config_values", None) or {}).get("username")
    if not name and hasattr(api, "get_config_value"):
        name = api.get_config_value("username")
    if not name:
        raise KitError("Kaggle did not say which user your credentials belong to: set kernel.owner=<your Kaggle "
                       "user name>")
    return str(name)


def dataset_state(api: Any, ref: str) -> str | None:
    """Kaggle's status of dataset `ref` ('ready', 'pending', 'error', ...), or None if it does not exist."""
    def status() -> str | None:
        try:
            return str(api.dataset_status(ref) or "").lower()
        except Exception as exc:
            if http_status(exc) == 404:
                return None
            raise

    return call_kaggle(status, what=f"looking up dataset {ref}", slug="")


def upload_dataset(api: Any, dataset: Dataset, exists: bool, notes: str) -> None:
    """Create `dataset` on Kaggle, or add a version; folders would be zipped (dir_mode)."""
    folder = str(dataset.folder)
    if exists:
        call = lambda: api.dataset_create_version(folder, notes, quiet=False, dir_mode="zip")  # noqa: E731
    else:
        call = lambda: api.dataset_create_new(folder, public=False, quiet=False, dir_mode="zip")  # noqa: E731
    what = f"{'versioning' if exists else 'creating'} dataset {dataset.ref}"
    response = call_kaggle(call, what=what, slug="")
    error = field(response, "error")
    if error or str(field(response, "status") or "").lower() == "error":
        raise KitError(f"Kaggle refused {what}: {error or 'no reason given'}: fix it (kernel.owner, the dataset's "
                       f"title) and push again; the bundle is in {dataset.folder.parent}")


def wait_until_ready(api: Any, ref: str, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
    """Poll until Kaggle has processed dataset `ref`: a kernel started earlier would read the old version."""
    start, delay = clock(), 5.0
    while True:
        state = dataset_state(api, ref)
        if state == "ready":
            return
        if state == "error":
            raise KitError(f"Kaggle could not process dataset {ref} (status error): open "
                           f"https://www.kaggle.com/datasets/{ref} to see why, then push again")
        if clock() - start > DATASET_READY_SECONDS:
            raise KitError(f"dataset {ref} is still {state or 'not visible'} after {DATASET_READY_SECONDS / 60:.0f} "
                           "min: push again later (the upload is kept)")
        print(f"dataset {ref}: {state or 'not visible yet'}, waiting {delay:.0f} s", flush=True)
        sleep(delay)
        delay = min(delay * 2, 60.0)


def ensure_dataset(api: Any, dataset: Dataset, uploaded: dict, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> str:
    """Upload `dataset` unless Kaggle has it with the digest last uploaded (`uploaded`: ref -> digest, updated);
    return what was done."""
    digest = dataset.digest
    state = dataset_state(api, dataset.ref)
    if state is not None and uploaded.get(dataset.ref) == digest:
        done = "unchanged, reused"
    else:
        upload_dataset(api, dataset, exists=state is not None, notes=f"kit {digest[:12]}")
        done = "new version uploaded" if state is not None else "created"
    wait_until_ready(api, dataset.ref, sleep, clock)
    uploaded[dataset.ref] = digest
    return done


def push_kernel(api: Any, folder: Path, competition: str) -> dict:
    """kernels push; return {ref, url, version}. Kaggle's refusals (bad sources, errors) are one line."""
    response = call_kaggle(lambda: api.kernels_push(str(folder)), what="pushing the kernel", slug=competition)
    problems = [f"{name}: {', '.join(map(str, field(response, name)))}" for name in PUSH_ERRORS if field(response, name)]
    error = field(response, "error")
    if error or problems:
        raise KitError(f"Kaggle refused the kernel in {folder}: {'; '.join(filter(None, [error, *problems]))}")
    url = field(response, "url") or ""
    return {"ref": field(response, "ref") or "", "url": url, "version": field(response, "version_number")}


def kernel_state(api: Any, ref: str) -> tuple[str, str]:
    """(QUEUED | RUNNING | COMPLETE | ERROR | CANCEL_..., failure message)."""
    response = call_kaggle(lambda: api.kernels_status(ref), what=f"asking for kernel {ref}'s status", slug="",
                           missing=f"kernel {ref} not found on Kaggle: push it with `kit kernel push`, or check --kernel")
    status = field(response, "status")
    name = getattr(status, "name", None) or str(status or "unknown")
    return name.split(".")[-1].upper(), str(field(response, "failure_message") or "")


def log_lines(text: str) -> list[str]:
    """A kernel log's lines: Kaggle serves a JSON list of {stream_name, time, data}, or plain text."""
    try:
        entries = json.loads(text)
    except ValueError:
        return text.splitlines()
    if not isinstance(entries, list):
        return text.splitlines()
    return "".join(str(entry.get("data", "")) for entry in entries if isinstance(entry, dict)).splitlines()


def log_tail(api: Any, ref: str, lines: int = 25) -> list[str]:
    """The last lines of the kernel's log (kernels_logs, or the log kernels_output writes on older clients)."""
    if hasattr(api, "kernels_logs"):
        text = call_kaggle(lambda: api.kernels_logs(ref), what=f"reading kernel {ref}'s log", slug="")
    else:
        with tempfile.TemporaryDirectory() as folder:
            call_kaggle(lambda: api.kernels_output(ref, folder, force=True, quiet=True),
                        what=f"reading kernel {ref}'s log", slug="")
            text = "\n".join(p.read_text(errors="replace") for p in Path(folder).glob("*.log"))
    return [line for line in log_lines(text or "") if line.strip()][-lines:]


def download_output(api: Any, ref: str, folder: Path) -> list[Path]:
    """Every output file of the kernel's last run (all pages) and its log, into `folder`."""
    result = call_kaggle(lambda: api.kernels_output(ref, str(folder), force=True, quiet=True),
                         what=f"downloading kernel {ref}'s output", slug="",
                         missing=f"kernel {ref} not found on Kaggle: check --kernel")
    files = result[0] if isinstance(result, tuple) else result
    return [Path(p) for p in files or []]
