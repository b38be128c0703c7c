"""`kit kernel`: run the current config on Kaggle's machines (no internet there) and bring the result back.

    python -m kit kernel push --config configs/dogs-vs-cats-redux.yaml [--gpu | --cpu] [--dry-run]
    python -m kit kernel status --config configs/dogs-vs-cats-redux.yaml [--no-wait] [--kernel owner/slug]
    python -m kit kernel output --config configs/dogs-vs-cats-redux.yaml [--kernel owner/slug]

push: builds kernels/<slug>/bundle/ (kit/kernel/bundle.py), uploads kit's code and the weights it loads as two private
datasets (only when their digest changed since the last upload, kernels/datasets.json), waits until Kaggle has
processed them, pushes the script kernel (competition attached, internet off, T4 x2 or CPU) and records it in
kernels/<slug>/push.json. status: polls until COMPLETE or ERROR, with the time since the push; on ERROR it prints
the failure and the log's last lines. output: downloads the outputs into kernels/<slug>/output/ and puts the run
into runs/<run>/, the submissions into submissions/ and submission.csv in place, checked, for `make upload`.
"""
from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from kit import paths as kit_paths
from kit.config import Config
from kit.data import kaggle_api
from kit.errors import KitError
from kit.fsutil import atomic_path, write_text_atomic
from kit.kernel import bundle, remote
from kit.kernel.script import SUMMARY
from kit.submit.submission import check_submission, meta_path, read_sample
from kit.data.dataset import SAMPLE_SUBMISSION

PLACEHOLDER_OWNER = "your-kaggle-user"


def kernels_dir(cfg: Config) -> Path:
    return Path(cfg.paths.kernels_dir)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(built: bundle.Bundle) -> None:
    for dataset in built.datasets:
        if dataset.files:
            print(f"  dataset {dataset.ref}: {len(dataset.files)} file(s), {dataset.size() / 1e6:.1f} MB "
                  f"(digest {dataset.digest[:12]}) in {dataset.folder}", flush=True)
    meta = read_json(built.kernel_folder / "kernel-metadata.json")
    print(f"  kernel {built.kernel_ref}: {bundle.SCRIPT_NAME}, {built.accelerator} "
          f"({meta.get('machine_shape') or 'CPU'}), internet off, competition {meta['competition_sources'][0]}, "
          f"datasets {', '.join(meta['dataset_sources'])}", flush=True)


def push(cfg: Config, accelerator: str | None, dry_run: bool, api: Any = None,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Path:
    from kit.kernel.weights import weight_files  # builds the backbone: TensorFlow

    accelerator = accelerator or cfg.kernel.accelerator
    if dry_run:
        owner = cfg.kernel.owner or kaggle_api.known_username() or PLACEHOLDER_OWNER
    else:
        api = api if api is not None else kaggle_api.connect()
        owner = cfg.kernel.owner or remote.username(api)
    built = bundle.build(cfg, owner, accelerator, weight_files(cfg), kernels_dir(cfg))
    size = sum(p.stat().st_size for p in built.folder.rglob("*") if p.is_file())
    print(f"kernel bundle {built.folder}: {sum(1 for p in built.folder.rglob('*') if p.is_file())} files, "
          f"{size / 1e6:.1f} MB", flush=True)
    describe(built)
    if dry_run:
        note = " (set kernel.owner to your Kaggle user name)" if owner == PLACEHOLDER_OWNER else ""
        print(f"dry run: nothing pushed{note}; push it with `kit kernel push`", flush=True)
        return built.folder
    record_path = kernels_dir(cfg) / "datasets.json"
    uploaded = read_json(record_path)
    for dataset in built.datasets:
        if dataset.files:
            done = remote.ensure_dataset(api, dataset, uploaded, sleep=sleep, clock=clock)
            write_text_atomic(record_path, json.dumps(uploaded, indent=2) + "\n")
            print(f"dataset {dataset.ref}: {done}", flush=True)
    pushed = remote.push_kernel(api, built.kernel_folder, cfg.competition.slug)
    pushed.update(kernel=built.kernel_ref, accelerator=accelerator, config=cfg.name,
                  pushed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_text_atomic(built.folder.parent / "push.json", json.dumps(pushed, indent=2) + "\n")
    print(f"pushed kernel {built.kernel_ref} (version {pushed['version']}): {pushed['url']}\n"
          f"follow it with `kit kernel status`, then `kit kernel output`", flush=True)
    return built.folder


def pushed_kernel(cfg: Config, kernel: str | None) -> tuple[str, dict]:
    """The kernel to ask about: --kernel, else the one the last `kit kernel push` of this config recorded."""
    record = read_json(kernels_dir(cfg) / bundle.kernel_slug(cfg) / "push.json")
    if kernel:
        return kernel, record if record.get("kernel") == kernel else {}
    if not record.get("kernel"):
        raise KitError(f"no kernel pushed for config {cfg.name!r} (no {kernels_dir(cfg) / bundle.kernel_slug(cfg)}"
                       "/push.json): run `kit kernel push` first, or name one with --kernel owner/slug")
    return record["kernel"], record


def since_push(record: dict) -> str:
    try:
        pushed = datetime.fromisoformat(record["pushed_at"])
    except (KeyError, TypeError, ValueError):
        return ""
    minutes = (datetime.now(timezone.utc) - pushed).total_seconds() / 60
    return f", {minutes:.0f} min since the push"


def status(cfg: Config, kernel: str | None, wait: bool, api: Any = None,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    ref, record = pushed_kernel(cfg, kernel)
    api = api if api is not None else kaggle_api.connect()
    start, delay = clock(), 5.0
    while True:
        state, message = remote.kernel_state(api, ref)
        waited = clock() - start
        print(f"kernel {ref}: {state} (polled for {waited / 60:.1f} min{since_push(record)})", flush=True)
        if state in remote.DONE:
            print("done: bring the outputs back with `kit kernel output`", flush=True)
            return state
        if state in remote.FAILED:
            tail = remote.log_tail(api, ref)
            print("\n".join(["--- the log's last lines ---", *tail, "---"]), flush=True)
            raise KitError(f"kernel {ref} ended {state}{': ' + message if message else ''}: see the log above "
                           f"(whole: `kit kernel output`), fix it and `kit kernel push` again")
        if not wait:
            return state
        if waited > cfg.kernel.wait_minutes * 60:
            raise KitError(f"kernel {ref} is still {state} after {cfg.kernel.wait_minutes:g} min of polling: run "
                           f"`kit kernel status` again later (kernel.wait_minutes sets the limit)")
        sleep(delay)
        delay = min(delay * 2, cfg.kernel.poll_seconds)


def same_tree(a: Path, b: Path) -> bool:
    files = lambda root: {p.relative_to(root): p.stat().st_size for p in root.rglob("*") if p.is_file()}  # noqa: E731
    return files(a) == files(b)


def copy_in(source: Path, target: Path, placed: list[str]) -> None:
    """Copy a downloaded file or folder to `target` through a temporary name; an existing one is kept."""
    if target.exists():
        same = same_tree(source, target) if source.is_dir() else source.read_bytes() == target.read_bytes()
        print(f"kept {target}: {'the same as' if same else 'differs from'} the kernel's {source}", flush=True)
        return
    with atomic_path(target) as tmp:
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp)
    placed.append(str(target))


def check_kernel_submission(cfg: Config, output: Path) -> Path | None:
    """The kernel's submission.csv, after the submit checks against the local sample when there is one."""
    source = output / "submission.csv"
    if not source.is_file():
        return None
    sample = kit_paths.raw_dir(cfg) / SAMPLE_SUBMISSION
    if not sample.is_file():
        print(f"note: no {sample} here to check the kernel's submission against; `make upload` checks it", flush=True)
        return source
    import pandas as pd

    try:
        check_submission(pd.read_csv(source), read_sample(sample))
    except (KitError, ValueError) as error:  # ValueError: pandas' parser errors
        raise KitError(f"the kernel's {source} fails the submission checks ({error}): nothing was put in place; "
                       f"your {cfg.paths.submission} is unchanged") from None
    return source


def place_submission(cfg: Config, source: Path, placed: list[str]) -> None:
    """The kernel's checked submission.csv (+ .json) onto paths.submission, each through a temporary name."""
    target = kit_paths.latest_submission(cfg)
    for src, dst in ((meta_path(source), meta_path(target)), (source, target)):
        if src.is_file():
            with atomic_path(dst) as tmp:
                shutil.copy2(src, tmp)
    placed.append(str(target))


def output(cfg: Config, kernel: str | None, api: Any = None) -> Path:
    ref, _ = pushed_kernel(cfg, kernel)
    api = api if api is not None else kaggle_api.connect()
    state, message = remote.kernel_state(api, ref)
    if state not in remote.DONE | remote.FAILED:
        raise KitError(f"kernel {ref} is {state}: wait for it with `kit kernel status`, then run `kit kernel output`")
    folder = kernels_dir(cfg) / ref.split("/")[-1] / "output"
    with atomic_path(folder) as tmp:  # an earlier output stays whole until this download is
        tmp.mkdir()
        files = remote.download_output(api, ref, tmp)
    print(f"downloaded {len(files)} file(s) of kernel {ref} into {folder}", flush=True)
    summary = read_json(folder / SUMMARY)
    if state in remote.FAILED or summary.get("status") != "complete":
        why = message or summary.get("status") or "no kit-kernel.json: kit did not finish"
        raise KitError(f"kernel {ref} ended {state} ({why}): its log and partial outputs are in {folder}; "
                       "nothing was put into runs/ or submissions/")
    submission = check_kernel_submission(cfg, folder)  # before anything is copied
    placed: list[str] = []
    for run in sorted((folder / "runs").iterdir()) if (folder / "runs").is_dir() else []:
        copy_in(run, kit_paths.runs_dir(cfg) / run.name, placed)
    for sub in sorted((folder / "submissions").iterdir()) if (folder / "submissions").is_dir() else []:
        copy_in(sub, kit_paths.submissions_dir(cfg) / sub.name, placed)
    if submission is not None:
        place_submission(cfg, submission, placed)
    stages = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in summary.get("stages", {}).items())
    print(f"kernel {ref}: {stages}; put in place: {', '.join(placed) or 'nothing new'}\n"
          f"next: `make upload` sends {cfg.paths.submission}", flush=True)
    return folder


def run(cfg: Config, action: str, accelerator: str | None = None, dry_run: bool = False, kernel: str | None = None,
        wait: bool = True, api: Any = None, sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic) -> Path | str:
    """`kit kernel <action>`; `api`, `sleep`, `clock`: a fake client and time (tests)."""
    if action == "push":
        return push(cfg, accelerator, dry_run, api, sleep, clock)
    if dry_run or accelerator:
        raise KitError(f"--dry-run, --gpu and --cpu are for `kit kernel push`, not `kit kernel {action}`")
    if action == "status":
        return status(cfg, kernel, wait, api, sleep, clock)
    return output(cfg, kernel, api)
