"""What every benchmark shares: the machine, timers, subprocesses with their peak memory, RSS sampling.

    .venv/bin/python bench/run.py [--quick]        (make bench [QUICK=1])

Throughput is measured twice: wall-clock (what you wait for) and process CPU time (all threads),
because other jobs may load the two cores while the bench runs; images per CPU-second are far less
sensitive to that load than images per second.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# ---- the machine --------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def nproc() -> int:
    """CPUs this process may run on (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    from kit.provenance import library_versions

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "nproc": nproc(), "memory_gb": memory_gb(),
            "os": f"{platform.system()} {platform.release()}", "versions": library_versions()}


# ---- timing -------------------------------------------------------------------------------------------

@dataclass
class Timing:
    seconds: float  # wall clock
    cpu_seconds: float  # this process, all threads

    def rate(self, items: int) -> dict:
        return {"items": items, "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "per_s": items / self.seconds if self.seconds > 0 else None,
                "per_cpu_s": items / self.cpu_seconds if self.cpu_seconds > 0 else None}


def timed(fn: Callable[[], object]) -> tuple[object, Timing]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def best_of(rates: list[dict]) -> dict:
    """The median run of several (by images/s), with every run's images/s kept for the record."""
    ordered = sorted(rates, key=lambda r: r["per_s"] or 0)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["all_per_s"] = [round(r["per_s"], 1) for r in rates if r["per_s"]]
    return chosen


def ratio(kit: float | None, baseline: float | None) -> float | None:
    if not kit or not baseline:
        return None
    return kit / baseline


# ---- memory -------------------------------------------------------------------------------------------

def rss_now() -> dict:
    """This process's resident memory in MB: total, anonymous (heap) and file-backed (mapped files)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


class RssSampler:
    """Peak resident memory of this process, sampled every `interval` s in a thread (anon and file apart).

    ru_maxrss counts the pages of a memory-mapped cache that were read as resident, although the kernel
    can drop them at any time; the anonymous part is the memory a process really holds on to.
    """

    def __init__(self, interval: float = 0.05):
        self.interval, self.peaks = interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for key, value in rss_now().items():
            self.peaks[key] = max(self.peaks.get(key, 0.0), value)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def result(self) -> dict:
        names = {"VmRSS": "peak_rss_mb", "RssAnon": "peak_anon_mb", "RssFile": "peak_file_mb"}
        return {names[k]: round(v, 1) for k, v in self.peaks.items() if k in names}


# ---- subprocesses -------------------------------------------------------------------------------------

def bench_env(keras_home: str | None = None) -> dict:
    """The environment of every measured subprocess: kit importable, TensorFlow quiet, CPU only."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    if keras_home:
        env["KERAS_HOME"] = keras_home
    return env


def run_measured(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None,
                 timeout: float | None = None) -> dict:
    """Run `cmd` to completion; its wall time and peak resident memory (ru_maxrss from wait4, this child only).

    Output goes to `log` (appended), so a long run cannot block on a full pipe.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n")
        out.flush()
        process = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                   env=env or bench_env(), cwd=cwd or ROOT)
        status, usage = _wait(process, timeout)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    return {"returncode": code, "seconds": round(seconds, 2), "maxrss_mb": round(usage.ru_maxrss / 1024, 1),
            "timed_out": status is None, "log": str(log)}


def _wait(process: subprocess.Popen, timeout: float | None):
    """os.wait4 on this one child (its own rusage, not every child's), killing it after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG if deadline else 0)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
            return status, usage
        if deadline and time.monotonic() > deadline:
            process.kill()
            _, _, usage = os.wait4(process.pid, 0)
            process.returncode = -9
            return None, usage
        time.sleep(0.2)


def tail(path: str | Path, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[-200:] for line in text[-lines:])


def run_worker(job: str, args: dict, work: Path, keras_home: str | None = None,
               timeout: float | None = None, extra_env: dict | None = None) -> dict:
    """Run `bench.worker` job `job` in a fresh Python process (`extra_env` added to its environment, e.g.
    KERAS_BACKEND); its result dict plus wall time and ru_maxrss."""
    work.mkdir(parents=True, exist_ok=True)
    stem = f"{job}-{time.strftime('%H%M%S')}-{os.getpid()}-{int(time.perf_counter() * 1000) % 100000}"
    args_file, out_file, log = work / f"{stem}.args.json", work / f"{stem}.out.json", work / f"{stem}.log"
    args_file.write_text(json.dumps(args))
    measured = run_measured([PYTHON, "-m", "bench.worker", job, args_file, out_file], log,
                            env={**bench_env(keras_home), **(extra_env or {})}, timeout=timeout)
    if measured["returncode"] != 0 or not out_file.is_file():
        why = "timed out" if measured["timed_out"] else f"exit {measured['returncode']}"
        raise RuntimeError(f"bench job {job} failed ({why}): {tail(log)}")
    result = json.loads(out_file.read_text())
    result["process"] = measured
    return result
