"""What each step of a stage took, for the stage's last line and for comparing with `kit plan`'s estimate.

    with timings.step("decode train", images=20000): ...    # in the library code that does the work
    timings.reset(); ...; timings.close(); timings.snapshot() # in a stage: {step: {"seconds", "images"}}

Steps are named as kit/plan/estimate.py names them, so a run's timings.json sits beside its plan.json.
One process runs one stage, so a module-level record is enough.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

_RECORD: dict[str, dict] = {}
_STARTED = [time.perf_counter()]


def reset() -> None:
    """Start a stage's record (where its plan is printed: the plan's total is compared from here)."""
    _RECORD.clear()
    _STARTED[0] = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - _STARTED[0]


def close(name: str = "writing") -> None:
    """Book the stage's time since reset() that no step covered (saving, writing, the report) as `name`."""
    rest = elapsed() - sum(entry["seconds"] for entry in _RECORD.values())
    if rest > 0:
        _RECORD[name] = {"seconds": round(rest, 2), "images": 0}


@contextlib.contextmanager
def step(name: str, images: int = 0) -> Iterator[None]:
    """Add the block's wall time (and `images`) to step `name`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        entry = _RECORD.setdefault(name, {"seconds": 0.0, "images": 0})
        entry["seconds"] = round(entry["seconds"] + time.perf_counter() - started, 2)
        entry["images"] += images


def snapshot() -> dict[str, dict]:
    return {name: dict(entry) for name, entry in _RECORD.items()}


def duration(seconds: float) -> str:
    """12 s, 3m05s, 2h36m: how long, at a glance."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
