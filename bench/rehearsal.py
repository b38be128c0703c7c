"""A full-size rehearsal of the competition from real photos: 25,000 train and 12,500 test, Kaggle's exact shape.

    .venv/bin/python bench/rehearsal.py --out /tmp/rehearsal            # from ../shared's mini competition
    .venv/bin/python bench/rehearsal.py --out /tmp/r --train 400 --test 200 --source comp.zip --seed 1

Writes <out>/dogs-vs-cats-redux-kernels-edition.zip (train.zip with train/cat.N.jpg and train/dog.N.jpg for
N < train/2, test.zip with test/<id>.jpg, sample_submission.csv) and the answer key beside it
(<zip>.test_labels.csv: id,label with 1 = dog), as kit.data.synthetic does for the demo.

Each file is one of the source's labelled photos (its train/), made a distinct file: a random crop (80-100% of
each side), a horizontal flip half the time, a rescale (0.8-1.2x) and a JPEG re-encode (quality 75-95), so
file sizes and decode cost stay those of real photos. Test files come from a fifth of the source photos that
no train file uses. Deterministic: file i is made from numpy's default_rng([seed, 1, i]) alone, in any process.
It measures scale, not score: 3,000 photos repeat about ten times, so a validation split holds near copies of
training photos and its log loss is optimistic.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.fsutil import atomic_path  # noqa: E402

SLUG = "dogs-vs-cats-redux-kernels-edition"
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "dogs-vs-cats-redux-mini" / f"{SLUG}.zip"
LABELLED = re.compile(r"^train/(cat|dog)\.(\d+)\.jpg$")
TEST_SHARE = 0.2  # of each class's source photos, kept for test files only
_SOURCES: list[bytes] = []  # the source photos, set once per worker process (fork or initializer)


def source_photos(source: Path) -> tuple[list[bytes], np.ndarray]:
    """The labelled photos of a competition zip (its train.zip), sorted by name, and their labels (1 = dog)."""
    with zipfile.ZipFile(source) as outer, zipfile.ZipFile(io.BytesIO(outer.read("train.zip"))) as train:
        names = sorted((n for n in train.namelist() if LABELLED.match(n)),
                       key=lambda n: (LABELLED.match(n)[1], int(LABELLED.match(n)[2])))
        return [train.read(n) for n in names], np.array([LABELLED.match(n)[1] == "dog" for n in names], int)


def assign(labels: np.ndarray, n_train: int, n_test: int, seed: int) -> tuple[list[tuple[str, int]], list[int], np.ndarray]:
    """Which source photo each output file is made from: ([(train name, source)], [test source], test labels)."""
    rng = np.random.default_rng([seed, 0])  # files use [seed, 1, i]: never the same stream
    train_pool, test_pool = {}, []
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = max(1, int(len(members) * TEST_SHARE))
        test_pool.extend(members[:held])
        train_pool[label] = members[held:]
    per_class = n_train // 2
    train = [(f"train/{name}.{n}.jpg", int(train_pool[label][n % len(train_pool[label])]))
             for label, name in ((0, "cat"), (1, "dog")) for n in range(per_class)]
    test = [int(s) for s in rng.choice(np.array(test_pool), n_test, replace=len(test_pool) < n_test)]
    return train, test, labels[test]


def distinct_copy(photo: bytes, seed: int, index: int) -> bytes:
    """`photo` cropped, maybe flipped, rescaled and re-encoded, from default_rng([seed, 1, index]) alone."""
    rng = np.random.default_rng([seed, 1, index])
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    width, height = image.size
    cw, ch = (max(8, int(side * rng.uniform(0.8, 1.0))) for side in (width, height))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    image = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = rng.uniform(0.8, 1.2)
    image = image.resize((max(8, round(cw * scale)), max(8, round(ch * scale))), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(75, 96)))
    return out.getvalue()


def _init(sources: list[bytes]) -> None:
    global _SOURCES
    _SOURCES = sources


def _make(job: tuple[int, int, int]) -> bytes:
    index, source, seed = job
    return distinct_copy(_SOURCES[source], seed, index)


def write_inner(path: Path, names: list[str], jobs: list[tuple[int, int, int]], pool, what: str) -> None:
    """An inner zip (stored, as Kaggle's: JPEGs do not compress) written as the workers finish files, in order."""
    started, total = time.monotonic(), len(names)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as inner:
        for done, (name, data) in enumerate(zip(names, pool.imap(_make, jobs, chunksize=64)), 1):
            inner.writestr(zipfile.ZipInfo(name, (2017, 1, 1, 0, 0, 0)), data)
            if done % 2500 == 0 or done == total:
                rate = done / max(time.monotonic() - started, 1e-9)
                print(f"  {what}: {done:,}/{total:,} files, {rate:.0f} files/s, "
                      f"ETA {(total - done) / rate:.0f} s", flush=True)


def build(out_dir: Path, source: Path = DEFAULT_SOURCE, n_train: int = 25_000, n_test: int = 12_500,
          seed: int = 0, workers: int = 0) -> Path:
    """Write the rehearsal zip and its answer key into `out_dir`; return the zip's path."""
    if n_train % 2 or n_train < 2 or n_test < 1:
        raise SystemExit(f"--train must be even and positive and --test positive, got {n_train} and {n_test}")
    photos, labels = source_photos(source)
    train, test, test_labels = assign(labels, n_train, n_test, seed)
    out = Path(out_dir) / f"{SLUG}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"rehearsal: {n_train:,} train + {n_test:,} test files from {len(photos):,} photos of {source}", flush=True)
    context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch, \
            context.Pool(workers or os.cpu_count(), initializer=_init, initargs=(photos,)) as pool:
        jobs = [(i, s, seed) for i, (_, s) in enumerate(train)]
        write_inner(Path(scratch) / "train.zip", [n for n, _ in train], jobs, pool, "train.zip")
        test_jobs = [(n_train + i, s, seed) for i, s in enumerate(test)]
        write_inner(Path(scratch) / "test.zip", [f"test/{i + 1}.jpg" for i in range(n_test)], test_jobs, pool,
                    "test.zip")
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as outer:
            for name in ("train.zip", "test.zip"):  # streamed, with a fixed date: the same seed, the same bytes
                entry = zipfile.ZipInfo(name, (2017, 1, 1, 0, 0, 0))
                big = (Path(scratch) / name).stat().st_size >= 2 ** 31  # streamed entries need zip64 past 2 GB
                with open(Path(scratch) / name, "rb") as source, outer.open(entry, "w", force_zip64=big) as target:
                    shutil.copyfileobj(source, target, 2 ** 20)
            sample = "id,label\n" + "".join(f"{i + 1},0.5\n" for i in range(n_test))
            outer.writestr(zipfile.ZipInfo("sample_submission.csv", (2017, 1, 1, 0, 0, 0)), sample)
    key = "id,label\n" + "".join(f"{i + 1},{int(v)}\n" for i, v in enumerate(test_labels))
    out.with_name(out.name + ".test_labels.csv").write_text(key)
    print(f"rehearsal: {out} ({out.stat().st_size / 1e6:,.0f} MB) in {time.monotonic() - started:.0f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the zip and its answer key")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="a competition zip with labelled photos")
    parser.add_argument("--train", type=int, default=25_000)
    parser.add_argument("--test", type=int, default=12_500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = every core)")
    args = parser.parse_args(argv)
    build(args.out, args.source, args.train, args.test, args.seed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
