"""bench/holdout.py: a held-out test made of the source's own photos (each once, bytes kept), its answer key
right, and the scorer agreeing with a hand-computed log loss."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench import holdout
from tests.test_rehearsal import inner


def test_a_holdout_keeps_every_photo_once_and_its_key_is_right(tmp_path, competition_zip):
    out = holdout.build(tmp_path / "h", competition_zip, test_share=0.25, seed=1)
    source, train, test = inner(competition_zip, "train.zip"), inner(out, "train.zip"), inner(out, "test.zip")
    labelled = {n: b for n, b in source.items() if holdout.LABELLED.match(n)}
    assert set(train) <= set(labelled) and all(train[n] == labelled[n] for n in train)  # names and bytes kept
    assert len(train) + len(test) == len(labelled) and len(test) == round(len(labelled) * 0.25)
    by_bytes = {b: n for n, b in labelled.items() if n not in train}
    key = pd.read_csv(out.with_name(out.name + ".test_labels.csv"))
    assert list(key["id"]) == list(range(1, len(test) + 1))
    for row in key.itertuples():  # each test photo is a held-out source photo of that label
        name = by_bytes[test[f"test/{row.id}.jpg"]]
        assert int(name.startswith("train/dog.")) == row.label

    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": key["id"], "label": np.where(key["label"] == 1, 0.9, 0.2)}).to_csv(sub, index=False)
    loss, low, high = holdout.score(out, sub)
    assert math.isclose(loss, -np.mean(np.where(key["label"] == 1, np.log(0.9), np.log(0.8))), rel_tol=1e-9)
    assert low <= loss <= high
