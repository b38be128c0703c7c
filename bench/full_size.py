"""Section 6, full size: kit's stages as subprocesses on a 25,000 + 12,500 rehearsal competition, against `kit plan`.

    .venv/bin/python bench/run.py --only full            (make bench BENCH_ARGS="--only full"; about 50 min)
    .venv/bin/python bench/run.py --quick --only full    (a 1,000 + 500 rehearsal: a few minutes)

Never part of a default `make bench`. The competition is KIT_REHEARSAL (a zip bench/rehearsal.py built; a quick
run ignores it) or one built into the bench's folder from KIT_REAL_COMPETITION, else ../shared's mini
competition. The commands run one at a time, in order: `download --from` twice (cold, then nothing to do),
`data` twice, `kit plan` for the head-only and the fine-tune config, then the precompute path (head-only
`train` + `submit`) from cold caches (only <cache>/probes is kept: the plan's probe) and the fine-tune path
(one epoch) + its `submit`. Per command: wall time, ru_maxrss (os.wait4), the peak anonymous and file-backed
memory of the kit process sampled from /proc/<pid>/status, the cache folder's size after it, and for `train`
and `submit` the plan they printed (plan.json, the submission's .json) beside what each step took (timings).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from bench.common import PYTHON, ROOT, _wait, bench_env, run_measured, tail
from bench.end_to_end import kit_command, kit_overrides

SIZES = {False: (25_000, 12_500), True: (1_000, 500)}  # (train, test) images: full, --quick
TIMEOUT = {False: 4 * 3600, True: 900}  # seconds per command (one fine-tune epoch of 20,000 images: ~25 min)
DISK_LINE = re.compile(r"disk: new caches need ([\d.]+) GB")
HEAD, TUNE = ["train.finetune_epochs=0"], ["train.finetune_epochs=1"]
STAGES = {  # key: (path, label); the order the commands run in
    "download": ("setup", "`download --from` the zip, cold (extract + verify)"),
    "download_again": ("setup", "`download --from` again (must do nothing)"),
    "data": ("setup", "`data`: index + check every image"),
    "data_again": ("setup", "`data` again (checks cached)"),
    "plan_head": ("setup", "`plan --stage all`, head-only config (probes)"),
    "plan_tune": ("setup", "`plan`, fine-tune config, 1 epoch (probes)"),
    "train_head": ("precompute", "`train`, `train.finetune_epochs=0`, cold caches"),
    "submit_head": ("precompute", "`submit` of that run (TTA)"),
    "train_tune": ("fine-tune", "`train`, `train.finetune_epochs=1`"),
    "submit_tune": ("fine-tune", "`submit` of that run (TTA)"),
}


def skip_reason(keras_home: str | None) -> str | None:
    if not keras_home:
        return ("needs ImageNet weights (the config trains from them): set KIT_KERAS_WEIGHTS (a folder of Keras "
                "weight files).")
    return None


def competition(work: Path, quick: bool, real_zip: Path | None) -> tuple[Path, float | None]:
    """(the rehearsal zip, seconds spent building it, or None when KIT_REHEARSAL named one)."""
    given = os.environ.get("KIT_REHEARSAL")
    if given and not quick:
        if not Path(given).is_file():
            raise RuntimeError(f"KIT_REHEARSAL={given} is not a file: build one with bench/rehearsal.py or unset it")
        return Path(given), None
    if given:
        print(f"bench: full: a quick run builds a small rehearsal; KIT_REHEARSAL={given} is left unused", flush=True)
    from bench.rehearsal import DEFAULT_SOURCE, SLUG

    n_train, n_test = SIZES[quick]
    # In its own process: a child's ru_maxrss never reads below its parent's peak (Linux keeps it across exec).
    cmd = [PYTHON, ROOT / "bench" / "rehearsal.py", "--out", work / "rehearsal", "--source", real_zip or DEFAULT_SOURCE,
           "--train", str(n_train), "--test", str(n_test)]
    built = run_measured(cmd, work / "logs" / "rehearsal.log", bench_env())
    if built["returncode"] != 0:
        raise RuntimeError(f"bench/rehearsal.py failed (exit {built['returncode']}): {tail(built['log'])}")
    return work / "rehearsal" / f"{SLUG}.zip", built["seconds"]


# ---- one command, measured --------------------------------------------------------------------------

def _sample(pid: int, peaks: dict, stop: threading.Event, interval: float = 0.5) -> None:
    """Peak VmRSS / RssAnon / RssFile (MB) of process `pid` until `stop`."""
    names = {"VmRSS": "peak_rss_mb", "RssAnon": "peak_anon_mb", "RssFile": "peak_file_mb"}
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in names:
                    peaks[names[key]] = max(peaks.get(names[key], 0.0), round(int(value.split()[0]) / 1024, 1))
        except (OSError, ValueError, IndexError):
            pass
        stop.wait(interval)


def run_sampled(cmd: list[str], log: Path, env: dict, timeout: float) -> dict:
    """bench.common.run_measured (wall time, ru_maxrss), plus the child's own sampled peak anonymous memory."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peaks, stop = {}, threading.Event()
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n")
        out.flush()
        process = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = threading.Thread(target=_sample, args=(process.pid, peaks, stop), daemon=True)
        sampler.start()
        try:
            status, usage = _wait(process, timeout)
        finally:
            stop.set()
            sampler.join()
    return {"returncode": os.waitstatus_to_exitcode(status) if status is not None else None,
            "seconds": round(time.perf_counter() - started, 2), "maxrss_mb": round(usage.ru_maxrss / 1024, 1),
            "timed_out": status is None, "log": str(log), **peaks}


# ---- what a command left ----------------------------------------------------------------------------

def cache_sizes(cache: Path) -> dict:
    """MB (10^6 bytes, allocated blocks as du counts them) under the cache folder, by kind."""
    sizes = {"pixels_mb": 0.0, "features_mb": 0.0, "probes_mb": 0.0, "other_mb": 0.0}
    for path in cache.rglob("*") if cache.is_dir() else []:
        if path.is_file() and not path.is_symlink():
            top = path.relative_to(cache).parts
            kind = ("features" if top[0] == "features" else "probes" if top[0] == "probes"
                    else "pixels" if len(top) == 1 and path.suffix == ".npy" else "other")
            sizes[f"{kind}_mb"] += path.stat().st_blocks * 512 / 1e6
    sizes = {k: round(v, 1) for k, v in sizes.items()}
    return {**sizes, "total_mb": round(sum(sizes.values()), 1)}


def clear_cache_but_probes(cache: Path) -> None:
    """Cold caches: every pixel cache, feature array and engine copy gone; the plan's probe kept."""
    for child in cache.iterdir() if cache.is_dir() else []:
        if child.name != "probes":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def planned_disk_gb(log: str | Path) -> float | None:
    """The last "disk: new caches need X GB" line a command printed."""
    try:
        found = DISK_LINE.findall(Path(log).read_text(errors="replace"))
    except OSError:
        return None
    return float(found[-1]) if found else None


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_log_loss(submission: Path, key: Path) -> float | None:
    """The submission's log loss (clip 0.005) against the rehearsal's answer key, when there is one."""
    if not (submission.is_file() and key.is_file()):
        return None
    import pandas as pd

    from kit.model.metrics import log_loss

    merged = pd.read_csv(submission).merge(pd.read_csv(key), on="id", suffixes=("", "_true"))
    return log_loss(merged["label_true"].to_numpy(), merged["label"].to_numpy(), 0.005)


# ---- the section ------------------------------------------------------------------------------------

def commands(zip_path: Path, base: Path) -> dict[str, list[str]]:
    sets = kit_overrides(base)
    return {"download": kit_command("download", sets + HEAD, ["--from", str(zip_path)]),
            "download_again": kit_command("download", sets + HEAD, ["--from", str(zip_path)]),
            "data": kit_command("data", sets + HEAD), "data_again": kit_command("data", sets + HEAD),
            "plan_head": kit_command("plan", sets + HEAD, ["--stage", "all", "--json", str(base / "plan-head.json")]),
            "plan_tune": kit_command("plan", sets + TUNE, ["--json", str(base / "plan-tune.json")]),
            "train_head": kit_command("train", sets + HEAD), "train_tune": kit_command("train", sets + TUNE)}


def _outputs(key: str, base: Path, zip_path: Path, runs: dict) -> dict:
    """What `key`'s command wrote that the document compares: its plan, timings, run and scores."""
    if key.startswith("plan"):
        return {"plan": read_json(base / f"plan-{key.split('_')[1]}.json")}
    if key == "download_again":
        return {"no_work": "already extracted" in Path(base / "logs" / f"{key}.log").read_text(errors="replace")}
    if key.startswith("train"):
        finished = sorted(p for p in (base / "runs").iterdir() if (p / "summary.json").is_file())
        new = [p for p in finished if p.name not in runs.values()]
        if len(new) != 1:
            raise RuntimeError(f"{key}: expected one new finished run in {base / 'runs'}, found {len(new)}")
        runs[key] = new[0].name
        summary = read_json(new[0] / "summary.json") or {}
        return {"run": new[0].name, "plan": read_json(new[0] / "plan.json"),
                "timings": read_json(new[0] / "timings.json"),
                **{k: summary.get(k) for k in ("image_size", "val_log_loss", "best_epoch", "train_images",
                                               "val_images")}}
    if key.startswith("submit"):
        meta = read_json(base / "submission.csv.json") or {}
        return {"run": meta.get("run"), "plan": meta.get("plan"), "timings": meta.get("timings"),
                "val_log_loss": meta.get("val_log_loss"),
                "test_log_loss": test_log_loss(base / "submission.csv", zip_path.with_name(zip_path.name +
                                                                                           ".test_labels.csv"))}
    return {}


def run_all(zip_path: Path, base: Path, keras_home: str, timeout: float) -> dict:
    """Every command of STAGES in order; stops at the first failure, keeping what was measured before it."""
    cmds, runs, env = commands(zip_path, base), {}, bench_env(keras_home)
    result = {"zip": str(zip_path), "zip_mb": round(zip_path.stat().st_size / 1e6, 1), "stages": {}, "failed": None}
    for key in STAGES:
        if key == "train_head":
            clear_cache_but_probes(base / "cache")
            result["cache_before_precompute"] = cache_sizes(base / "cache")
        if key.startswith("submit"):
            cmd = kit_command("submit", kit_overrides(base) + [f"submit.run={runs['train' + key[6:]]}"])
        else:
            cmd = cmds[key]
        print(f"bench: full: {key} ...", flush=True)
        measured = run_sampled(cmd, base / "logs" / f"{key}.log", env, timeout)
        stage = {**measured, "cache": cache_sizes(base / "cache"), "planned_disk_gb": planned_disk_gb(measured["log"])}
        result["stages"][key] = stage
        print(f"bench: full: {key} {measured['seconds']:.0f} s, {measured['maxrss_mb']:,.0f} MB", flush=True)
        if measured["returncode"] != 0:
            why = "timed out" if measured["timed_out"] else f"exit {measured['returncode']}"
            result["failed"] = f"{key} failed ({why}): {tail(measured['log'])}"[:1500]
            break
        try:
            stage.update(_outputs(key, base, zip_path, runs))
        except (RuntimeError, OSError) as error:
            result["failed"] = f"{key}: {error}"[:1500]
            break
        if key == "download":
            raw = next((base / "data").glob("*/raw"), base / "data")
            result["images"] = {name: len(os.listdir(raw / name)) if (raw / name).is_dir() else 0
                                for name in ("train", "test")}
    return result


def section(bench) -> dict:
    """The section's results (bench/run.py's Bench.full)."""
    from kit.provenance import git_commit

    quick, work = bench.args.quick, bench.work / "full"
    zip_path, build_seconds = competition(work, quick, bench.real_zip)
    result = run_all(zip_path, work, bench.keras_home, TIMEOUT[quick])
    result.update(quick=quick, rehearsal_build_seconds=build_seconds, source=str(bench.real_zip or "../shared mini"),
                  measured={"date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": git_commit() or "unknown"})
    return result
