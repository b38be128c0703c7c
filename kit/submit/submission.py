"""Submission files: clip, check against the sample submission, write atomically, score the same way.

    python -m kit submit --config configs/dogs-vs-cats-redux.yaml   (kit/submit/submit.py predicts, then calls this)

Dogs vs. Cats Redux wants `id,label` with label = P(dog), scored by log loss: one confident mistake
costs up to -ln(1e-15) = 34.5 on its own, so probabilities are clipped to [clip, 1 - clip]. Multi-class
competitions want `id,<class 1>,...,<class N>` with rows summing to 1; both shapes are handled here.

Nothing reaches disk unless every check passes: `write_submission` writes
`<out_dir>/<run>-<YYYYmmdd-HHMMSS>.csv`, then the same bytes to `submission.csv` (the latest) and
`submission.csv.json` (metadata the upload stage reads), each through a temporary name and a rename.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kit.provenance import git_commit
from kit.errors import KitError
from kit.model.metrics import clip_probabilities, log_loss, prior_log_loss
from kit.fsutil import atomic_path, write_text_atomic

LN2 = math.log(2)  # log loss of always answering 0.5 on a balanced binary problem
SUM_TOLERANCE = 1e-6  # multi-class rows must sum to 1 this closely once clipped and renormalised
RAW_SUM_TOLERANCE = 1e-3  # before clipping: float32 softmax drifts a little, sigmoids/logits a lot
BINARY_FORMAT = "%.6f"
MULTI_FORMAT = "%.9f"  # more digits so rows still sum to 1 within 1e-6 after rounding


def build_frame(ids, probabilities, classes: list[str]) -> pd.DataFrame:
    """The submission as a frame sorted by id: `id,label` (label = P(classes[1])) or `id,<class...>`.

    `probabilities` is 1-D P(classes[1]) or (n, 2) for two classes, (n, len(classes)) otherwise.
    Ids that are all digit strings ("12") become integers; others ("12.jpg") stay and the check refuses them.
    """
    ids = pd.Series(list(ids) if not isinstance(ids, (np.ndarray, pd.Series)) else ids).reset_index(drop=True)
    if ids.dtype == object or ptypes.is_string_dtype(ids):
        if ids.astype(str).str.fullmatch(r"\d+").all():
            ids = ids.astype(np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if len(probs) != len(ids):
        raise KitError(f"{len(ids)} ids but {len(probs)} predictions: predict every test image exactly once")
    if len(classes) < 2:
        raise KitError(f"need at least two classes, got {classes}: set competition.classes")
    if len(classes) == 2:
        if probs.ndim == 2 and probs.shape[1] in (1, 2):
            probs = probs[:, -1]  # (n, 2) softmax: the second column is P(classes[1])
        if probs.ndim != 1:
            raise KitError(f"binary predictions must be P({classes[1]}) per image, got shape {probs.shape}")
        frame = pd.DataFrame({"id": ids, "label": probs})
    else:
        if probs.ndim != 2 or probs.shape[1] != len(classes):
            raise KitError(f"predictions have shape {probs.shape} but there are {len(classes)} classes: "
                           f"one column per class, in the order {','.join(classes)}")
        frame = pd.DataFrame(probs, columns=list(classes))
        frame.insert(0, "id", ids)
    if ptypes.is_integer_dtype(frame["id"]):
        frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    return frame


def check_submission(frame: pd.DataFrame, sample: pd.DataFrame, sum_tolerance: float = SUM_TOLERANCE) -> None:
    """Raise a one-line KitError unless `frame` is a submission Kaggle will accept for `sample`."""
    _check_header(frame, sample)
    id_col = sample.columns[0]
    ids = _checked_ids(frame[id_col], sample[id_col])
    _check_id_set(ids, sample[id_col])
    _check_values(frame, ids, sum_tolerance)


def _check_header(frame: pd.DataFrame, sample: pd.DataFrame) -> None:
    want, got = [str(c) for c in sample.columns], [str(c) for c in frame.columns]
    if got == want:
        return
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    fix = f"the header must be exactly '{','.join(want)}' like the sample submission"
    if missing:
        raise KitError(f"submission is missing column(s) {', '.join(map(repr, missing))}: {fix}")
    if extra:
        raise KitError(f"submission has column(s) {', '.join(map(repr, extra))} not in the sample: {fix}")
    raise KitError(f"submission header is '{','.join(got)}' (wrong order or repeated): {fix}")


def _checked_ids(ids: pd.Series, sample_ids: pd.Series) -> pd.Series:
    """The ids, checked to be of the sample's kind and unique; returned comparable to the sample's."""
    if ptypes.is_integer_dtype(sample_ids) and not ptypes.is_integer_dtype(ids):
        example = _show(ids.iloc[0]) if len(ids) else "nothing"
        kind, fix = (("floats", "write them as integers (.astype(int))") if ptypes.is_float_dtype(ids)
                     else ("strings", "use the numeric id, without the file name's extension"))
        raise KitError(f"submission ids must be integers like the sample's (e.g. {_show(sample_ids.iloc[0])}), "
                       f"got {kind} such as {example}: {fix}")
    if not ptypes.is_integer_dtype(sample_ids):
        ids = ids.astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise KitError(f"submission id {_show(duplicated.iloc[0])} appears more than once ({len(duplicated)} repeats): "
                       f"predict each test image exactly once")
    return ids


def _check_id_set(ids: pd.Series, sample_ids: pd.Series) -> None:
    if not ptypes.is_integer_dtype(sample_ids):
        sample_ids = sample_ids.astype(str)
    got, want = set(ids.tolist()), set(sample_ids.tolist())
    missing, extra = sorted(want - got), sorted(got - want)
    if missing or extra:
        parts = [f"{len(missing)} missing (e.g. {', '.join(map(str, missing[:3]))})" if missing else "",
                 f"{len(extra)} extra (e.g. {', '.join(map(str, extra[:3]))})" if extra else ""]
        raise KitError(f"submission ids don't match the sample submission's {len(want)}: "
                       f"{', '.join(p for p in parts if p)}: predict every test image and nothing else")
    if ptypes.is_integer_dtype(ids):
        values = ids.to_numpy()
        down = np.flatnonzero(values[1:] < values[:-1])
        if len(down):
            i = down[0] + 1
            raise KitError(f"submission ids are not sorted: id {_show(values[i])} comes right after id "
                           f"{_show(values[i - 1])}: sort the rows by id")


def _check_values(frame: pd.DataFrame, ids: pd.Series, sum_tolerance: float) -> None:
    value_cols = list(frame.columns[1:])
    for col in value_cols:
        if not ptypes.is_numeric_dtype(frame[col]) or ptypes.is_bool_dtype(frame[col]):
            raise KitError(f"submission column {col!r} must hold probabilities (numbers), got e.g. "
                           f"{_show(frame[col].iloc[0])}: write each probability as a number in [0, 1]")
    values = frame[value_cols].to_numpy(dtype=np.float64)
    nan = np.isnan(values)
    if nan.any():
        row = int(np.flatnonzero(nan.any(axis=1))[0])
        raise KitError(f"submission has {int(nan.sum())} NaN probabilities (first at id {_show(ids.iloc[row])}): "
                       f"fix the predictions; NaN usually means a diverged model or an unreadable image")
    excess = np.maximum(-values, values - 1)
    if (excess > 0).any():
        row, col = np.unravel_index(int(np.argmax(excess)), values.shape)
        raise KitError(f"submission has {int((excess > 0).sum())} probabilities outside [0, 1], worst "
                       f"{values[row, col]:g} (id {_show(ids.iloc[row])}, column {value_cols[col]!r}): "
                       f"write probabilities (after sigmoid/softmax), not logits")
    if len(value_cols) > 1:
        sums = values.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1) > sum_tolerance)
        if len(bad):
            raise KitError(f"{len(bad)} submission rows don't sum to 1 (within {sum_tolerance:g}), e.g. id "
                           f"{_show(ids.iloc[bad[0]])} sums to {sums[bad[0]]:.6g}: "
                           f"write softmax outputs, one column per class")


def clip_frame(frame: pd.DataFrame, bound: float) -> tuple[pd.DataFrame, int]:
    """A copy of a submission frame with its probability column(s) clipped like `clip_probabilities`."""
    value_cols = list(frame.columns[1:])
    values = frame[value_cols].to_numpy(dtype=np.float64)
    clipped, n_clipped = clip_probabilities(values[:, 0] if len(value_cols) == 1 else values, bound)
    out = frame.copy()
    out[value_cols] = clipped.reshape(len(frame), len(value_cols))
    return out, n_clipped


def validation_score(labels, probabilities, clip: float, classes: list[str] | None = None) -> dict:
    """Validation log loss and accuracy through the submission's own path: build_frame, then clip_frame.

    What is scored is exactly what would land in the `label` column (or the class columns), against
    labels where 1 = classes[1] (dog): a P(cat) column or shuffled predictions score badly here.
    The returned keys are meant for write_submission's `extra_meta`.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probabilities, dtype=np.float64)
    n_classes = 2 if probs.ndim == 1 or probs.shape[1] <= 2 else probs.shape[1]
    classes = list(classes) if classes else [f"class{i}" for i in range(n_classes)]
    frame = build_frame(np.arange(1, len(probs) + 1), probs, classes)
    clipped, n_clipped = clip_frame(frame, clip)
    values = clipped.iloc[:, 1:].to_numpy(dtype=np.float64)
    if values.shape[1] == 1:
        scored, predicted = values[:, 0], (values[:, 0] > 0.5).astype(np.int64)
    else:
        scored, predicted = values, values.argmax(axis=1)
    loss = log_loss(labels, scored)  # already clipped: log_loss only guards against log(0)
    return {"val_log_loss": loss, "val_accuracy": float(np.mean(predicted == labels)),
            "val_prior_log_loss": prior_log_loss(labels, len(classes)), "val_rows": int(len(labels)),
            "val_clipped": n_clipped}


def check_direction(val_log_loss: float, prior: float = LN2, n_classes: int = 2) -> None:
    """Refuse a validation log loss no better than always predicting the class frequencies (`prior`).

    A model that learned anything beats the prior; one that scores worse is almost always pointing the
    wrong way (P(cat) in the label column) or is scored against misaligned ids. A prior of 0 (one
    class only in validation) cannot be judged and passes.
    """
    if val_log_loss is None or math.isnan(val_log_loss):
        raise KitError("validation log loss is missing or NaN: score the validation split before submitting")
    if prior > 0 and val_log_loss >= prior:
        wrong = ("the label column is probably P(cat) rather than P(dog)" if n_classes == 2
                 else "the class columns are probably in the wrong order")
        raise KitError(f"validation log loss {val_log_loss:.4f} is no better than always predicting the class "
                       f"frequencies ({prior:.4f}): {wrong}, or predictions are misaligned with their ids")


def read_sample(sample_path: str | Path) -> pd.DataFrame:
    """The competition's sample submission, or a KitError saying how to get it."""
    try:
        return pd.read_csv(sample_path)
    except FileNotFoundError:
        raise KitError(f"sample submission {sample_path} not found: download the competition first "
                       f"(`make download`)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise KitError(f"sample submission {sample_path} is not a readable CSV ({err}): download it again") from None


def write_submission(frame: pd.DataFrame, sample_path: str | Path, out_dir: str | Path, run_name: str,
                     clip: float, extra_meta: dict | None = None, latest_path: str | Path = "submission.csv",
                     now: datetime | None = None) -> Path:
    """Clip, check, write `<out_dir>/<run_name>-<stamp>.csv`, copy it to `latest_path` (+ `.json`); return it.

    Every check runs before the first byte is written: on a KitError nothing on disk has changed.
    `extra_meta` (e.g. validation_score's dict, the TTA list) is merged into the metadata JSON; when it
    holds val_log_loss and val_prior_log_loss, check_direction refuses a backwards submission.
    """
    if not run_name or any(c in run_name for c in "/\\") or run_name.startswith("."):
        raise KitError(f"run name {run_name!r} can't name a file: use letters, digits, '-', '_' or '.'")
    now = now or datetime.now()
    sample = read_sample(sample_path)
    check_submission(frame, sample, sum_tolerance=RAW_SUM_TOLERANCE)  # before clipping can hide logits
    clipped, n_clipped = clip_frame(frame, clip)
    check_submission(clipped, sample)
    extra = dict(extra_meta or {})
    n_classes = max(2, len(frame.columns) - 1)
    if extra.get("val_log_loss") is not None and extra.get("val_prior_log_loss") is not None:
        check_direction(float(extra["val_log_loss"]), float(extra["val_prior_log_loss"]), n_classes)
    fmt = BINARY_FORMAT if len(frame.columns) == 2 else MULTI_FORMAT
    data = clipped.to_csv(index=False, float_format=fmt, lineterminator="\n").encode()
    check_submission(pd.read_csv(io.BytesIO(data)), sample)  # the bytes Kaggle will read, not the frame
    out, latest = _archive_path(Path(out_dir), run_name, now), Path(latest_path)
    sha256 = hashlib.sha256(data).hexdigest()
    meta = {"run": run_name, "val_log_loss": None, "git_commit": git_commit(), **extra,
            "clip": clip, "n_clipped": n_clipped, "rows": len(clipped), "file": str(out.resolve()),
            "sha256": sha256, "created": now.isoformat(timespec="seconds")}
    meta_text = _json_text(meta)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    with atomic_path(latest) as tmp:
        tmp.write_bytes(data)
    write_text_atomic(meta_path(latest), meta_text)
    print(f"wrote {out} ({len(clipped)} rows, sha256 {sha256[:12]}), copied to {latest}; clipped {n_clipped} "
          f"of {clipped.shape[0] * (clipped.shape[1] - 1)} probabilities to [{clip:g}, {1 - clip:g}]")
    return out


def meta_path(latest_path: str | Path) -> Path:
    """Where the metadata of the latest submission lives: `<latest_path>.json`."""
    latest = Path(latest_path)
    return latest.with_name(latest.name + ".json")


def _archive_path(out_dir: Path, run_name: str, now: datetime) -> Path:
    """`<out_dir>/<run>-<YYYYmmdd-HHMMSS>.csv`, with -2, -3... rather than overwrite an earlier file."""
    stem = f"{run_name}-{now.strftime('%Y%m%d-%H%M%S')}"
    path, n = out_dir / f"{stem}.csv", 2
    while path.exists():
        path, n = out_dir / f"{stem}-{n}.csv", n + 1
    return path


def _json_text(meta: dict) -> str:
    def plain(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(type(value).__name__)
    try:
        return json.dumps(meta, indent=2, default=plain) + "\n"
    except TypeError as err:
        raise KitError(f"submission metadata can't be written as JSON (a {err} value): pass plain numbers and "
                       f"strings in extra_meta") from None


def _show(value) -> str:
    """A value as a user reads it: 4, 1.0, '1.jpg' (never np.int64(4))."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)
