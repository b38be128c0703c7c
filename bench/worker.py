"""One benchmark job in a fresh Python process (its own TensorFlow state and its own peak memory).

    python -m bench.worker <job> <args.json> <out.json>      (bench/run.py starts these)

The job's function gets the arguments as keywords; its result dict is written to out.json with the
process's peak resident memory (total, anonymous, file-backed) sampled while it ran.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

JOBS = {
    # name: (module, function)
    "pipeline": ("bench.pipeline_bench", "pipeline_section"),
    "cache_mode": ("bench.pipeline_bench", "cache_mode"),
    "parallelism": ("bench.pipeline_bench", "parallelism"),
    "features": ("bench.feature_bench", "feature_section"),
    "train_step": ("bench.device_bench", "train_step"),
    "distribute_fit": ("bench.device_bench", "distribute_fit"),
    "scaling": ("bench.scaling", "scale_once"),
    "backend_speed": ("bench.backend_bench", "speed"),
    "sleep": ("bench.worker", "sleep"),  # the harness's own smoke test
}


def sleep(seconds: float = 0.0, allocate_mb: int = 0) -> dict:
    """Hold `allocate_mb` of memory for `seconds`: a job whose peak memory is known."""
    import time

    block = bytearray(allocate_mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touch every page, so it is resident
    time.sleep(seconds)
    return {"slept": seconds, "allocated_mb": allocate_mb}


def main(argv: list[str]) -> int:
    from bench.common import RssSampler
    from kit.fsutil import write_text_atomic

    job, args_file, out_file = argv
    module, function = JOBS[job]
    fn = getattr(importlib.import_module(module), function)
    with RssSampler() as sampler:
        result = fn(**json.loads(Path(args_file).read_text()))
    result["memory"] = sampler.result()
    write_text_atomic(Path(out_file), json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
