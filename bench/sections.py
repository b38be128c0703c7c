"""What each section's numbers say: rows (kit, baseline, ratio, target, met?) and a findings line.

    from bench.sections import BUILDERS; built = BUILDERS["pipeline"](result)

Pure functions of the results dict (no TensorFlow), so the document can be rebuilt from a saved
results.json (`bench/run.py --from-json`) and tested on made-up numbers.
"""
from __future__ import annotations

from bench.rows import Built, Row  # noqa: F401 — the document's cells
from bench.sections_backend import backend
from bench.sections_full import full
from bench.sections_input import cache, parallelism, pipeline
from bench.sections_model import device, end_to_end, features, scaling

TITLES = {
    "pipeline": "1. Input pipeline: kit's cached stream vs `keras.utils.image_dataset_from_directory`",
    "cache": "1b. Where the resized images live: `data.cache` disk vs memory vs none",
    "parallelism": "1c. tf.data parallelism and prefetch: AUTOTUNE vs fixed",
    "features": "2. Feature extraction through MobileNetV2",
    "device": "3. XLA, mixed precision and tf.distribute on this CPU (the `auto` defaults)",
    "backend": "3b. Keras on JAX vs Keras on TensorFlow on this CPU (`KERAS_BACKEND`)",
    "end_to_end": "4. End to end on the real mini competition",
    "scaling": "5. Scaling: index + cache + features at growing image counts",
    "full": "6. Full size: 25,000 train and 12,500 test images on this machine",
}

# Sections a default `make bench` leaves out (only `--only <name>` runs them), with what the document says then.
ON_REQUEST = {"full": "Not run by default (about 50 minutes on 2 cores): `make bench BENCH_ARGS=\"--only full\"` "
                      "measures it (with KIT_REHEARSAL, a zip from bench/rehearsal.py, or one is built)."}

METHOD = [
    "Throughput rows run in one worker process, the variants taking turns (A B C ... A B C ...); the median pass "
    "is shown (all passes are in results.json). Every worker is a fresh Python process (`python -m bench.worker`).",
    "Memory: `ru_maxrss` of each process from `os.wait4` (its own peak resident set), plus the peak of its "
    "anonymous and file-backed resident memory sampled every 20-50 ms from /proc/self/status. A memory-mapped "
    "cache counts in ru_maxrss once its pages are read, although the kernel may drop them at any time; the "
    "anonymous part is what a process really holds.",
    "End to end and full size: each command is a subprocess (wall time summed, memory = the largest command's "
    "peak).",
    "CPU time is the measuring process's own (all its threads); the image checks of the data stage run in a pool "
    "of processes that it does not include (a second or two of the scaling runs).",
    "Baselines are what a competent script does with the same libraries: Keras' folder loader (parallel decode, "
    "shuffle, prefetch: tf.data at its defaults) with the same augmenter mapped over it; a PIL loop; the bare "
    "forward pass on tensors already in memory; a one-file Keras solution (bench/reference.py).",
]


BUILDERS = {"pipeline": pipeline, "cache": cache, "parallelism": parallelism, "features": features,
            "device": device, "backend": backend, "end_to_end": end_to_end, "scaling": scaling, "full": full}
