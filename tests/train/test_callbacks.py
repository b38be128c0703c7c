"""ProgressLines: a log that is not a terminal still sees an epoch's progress and ETA as it goes."""
from __future__ import annotations

import keras
import numpy as np

from kit.train.callbacks import ProgressLines


def test_progress_lines_give_rate_and_eta_through_the_epoch(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(200, 4)).astype("float32"), np.ones((200, 1), "float32")
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[ProgressLines(20, 10)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 18  # at 10%, 20%, ... 90% of each of 2 epochs
    assert lines[0].startswith("epoch 1: 2/20 steps, ") and "img/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("epoch 2: 18/20 steps")
