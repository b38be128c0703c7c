"""The validation predictions as a table the report reads: per image its prediction, confidence and verdict.

    python -m kit report --run NAME      # kit/report/run_files.py builds it; the plots and html.py read it

`prediction_table` takes the rows of a run's validation predictions (path, label, and `prob` for two
classes or one `prob_<class>` column per class) and adds what every plot and table of the report needs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kit.errors import KitError


def prediction_table(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """val_predictions.csv rows plus `pred`, `pred_name`, `confidence` (P(predicted)), `p_true`, `correct`.

    Two classes: `prob` = P(classes[1]), predicted class 1 when prob > 0.5 (Keras' binary accuracy).
    More: one `prob_<class>` column per class, predicted by argmax.
    """
    if len(classes) == 2:
        if "prob" not in frame.columns:
            raise KitError("val_predictions.csv has no `prob` column for a 2-class run: retrain with `make train`")
        p1 = frame["prob"].to_numpy(dtype=float)
        probs = np.column_stack([1 - p1, p1])
        pred = (p1 > 0.5).astype(int)
    else:
        columns = [f"prob_{name}" for name in classes]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise KitError(f"val_predictions.csv lacks {', '.join(missing)}: it does not match classes.json")
        probs = frame[columns].to_numpy(dtype=float)
        pred = probs.argmax(axis=1)
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise KitError("val_predictions.csv holds probabilities that are NaN or outside [0, 1]: it is damaged; "
                       "retrain the run with `make train`")
    labels = frame["label"].to_numpy(dtype=float)
    if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
        raise KitError("val_predictions.csv holds labels that are not class numbers: it is damaged")
    labels = labels.astype(int)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise KitError(f"val_predictions.csv labels must be 0..{len(classes) - 1}: it does not match classes.json")
    rows = np.arange(len(frame))
    table = frame.copy()
    table["class_name"] = np.asarray(classes, dtype=object)[labels]
    table["pred"] = pred
    table["pred_name"] = np.asarray(classes, dtype=object)[pred]
    table["confidence"] = probs[rows, pred]
    table["p_true"] = probs[rows, labels]
    table["correct"] = pred == labels
    return table
