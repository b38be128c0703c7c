"""A held-out test kit never sees, made from the mini competition: the score of a whole chain, selection included.

    .venv/bin/python bench/holdout.py build --out /tmp/holdout [--test-share 0.2 --seed 0]
    .venv/bin/python bench/holdout.py score --zip /tmp/holdout/dogs-vs-cats-redux-kernels-edition.zip \
        --submission submission.csv

`build` splits the source competition's labelled photos (its train.zip) per class: a share becomes test/<id>.jpg
(ids shuffled, the original bytes), the rest stays train/cat.N.jpg and train/dog.N.jpg (names and bytes kept),
and writes a competition zip in Kaggle's exact shape with its answer key beside it (<zip>.test_labels.csv:
id,label with 1 = dog), the convention kit.demo and bench/rehearsal.py use. Unlike the rehearsal (scale, near
copies) every photo appears once: kit's validation split then plays its real part, and the test score measures
everything kit chose on validation (best epoch, snapshots, calibration) as Kaggle's leaderboard would.

`score` prints the submission's log loss on the answer key, the clip Kaggle applies (1e-15) and nothing else,
with a 95% bootstrap interval.
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rehearsal import DEFAULT_SOURCE, LABELLED, SLUG  # noqa: E402
from kit.fsutil import atomic_path  # noqa: E402

STAMP = (2017, 1, 1, 0, 0, 0)


def labelled_entries(source: Path) -> list[tuple[str, bytes, int]]:
    """(name, bytes, label 1 = dog) of every labelled photo in the source competition's train.zip, by name."""
    with zipfile.ZipFile(source) as outer, zipfile.ZipFile(io.BytesIO(outer.read("train.zip"))) as train:
        names = sorted(n for n in train.namelist() if LABELLED.match(n))
        return [(n, train.read(n), int(LABELLED.match(n)[1] == "dog")) for n in names]


def inner_zip(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as inner:
        for name, data in entries:
            inner.writestr(zipfile.ZipInfo(name, STAMP), data)
    return out.getvalue()


def build(out_dir: Path, source: Path = DEFAULT_SOURCE, test_share: float = 0.2, seed: int = 0) -> Path:
    """Write the held-out competition zip and its answer key into out_dir; return the zip's path."""
    entries = labelled_entries(source)
    labels = np.array([label for _, _, label in entries])
    rng = np.random.default_rng(seed)
    held = np.zeros(len(entries), bool)
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        held[rng.choice(members, int(round(len(members) * test_share)), replace=False)] = True
    test_rows = rng.permutation(np.flatnonzero(held))
    train = [(name, data) for (name, data, _), h in zip(entries, held) if not h]
    test = [(f"test/{i + 1}.jpg", entries[row][1]) for i, row in enumerate(test_rows)]
    out = Path(out_dir) / f"{SLUG}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as outer:
        outer.writestr(zipfile.ZipInfo("train.zip", STAMP), inner_zip(train))
        outer.writestr(zipfile.ZipInfo("test.zip", STAMP), inner_zip(test))
        sample = "id,label\n" + "".join(f"{i + 1},0.5\n" for i in range(len(test)))
        outer.writestr(zipfile.ZipInfo("sample_submission.csv", STAMP), sample)
    key = "id,label\n" + "".join(f"{i + 1},{labels[row]}\n" for i, row in enumerate(test_rows))
    out.with_name(out.name + ".test_labels.csv").write_text(key)
    print(f"holdout: {out}: {len(train):,} train photos, {len(test):,} held-out test photos "
          f"({int(labels[held].sum())} dogs), answer key beside it")
    return out


def score(competition_zip: Path, submission: Path, seed: int = 0) -> tuple[float, float, float]:
    """(log loss, 95% bootstrap low, high) of a submission against the zip's answer key."""
    import pandas as pd

    truth = pd.read_csv(competition_zip.with_name(competition_zip.name + ".test_labels.csv"))
    merged = truth.merge(pd.read_csv(submission), on="id", suffixes=("_true", ""), validate="one_to_one")
    if len(merged) != len(truth):
        raise SystemExit(f"holdout: {submission} has {len(merged)} of the {len(truth)} test ids")
    y, p = merged["label_true"].to_numpy(float), np.clip(merged["label"].to_numpy(float), 1e-15, 1 - 1e-15)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    rng = np.random.default_rng(seed)
    boot = losses[rng.integers(0, len(losses), (2000, len(losses)))].mean(axis=1)
    return float(losses.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the held-out competition zip and its answer key")
    make.add_argument("--out", required=True, type=Path)
    make.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    make.add_argument("--test-share", type=float, default=0.2)
    make.add_argument("--seed", type=int, default=0)
    rate = commands.add_parser("score", help="a submission's log loss on the answer key")
    rate.add_argument("--zip", required=True, type=Path)
    rate.add_argument("--submission", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.out, args.source, args.test_share, args.seed)
    else:
        loss, low, high = score(args.zip, args.submission)
        print(f"holdout: {args.submission}: test log loss {loss:.4f} (95% interval {low:.4f}-{high:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
