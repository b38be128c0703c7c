"""The one-script reference kit is measured against: a plain Keras solution of Dogs vs. Cats Redux.

    .venv/bin/python bench/reference.py --zip dogs-vs-cats-redux-kernels-edition.zip \
        --split data/<slug>/index/split-seed42-val0.2.csv --out /tmp/reference

What a competent first notebook does, with no kit code at all: extract the competition zip, compute
frozen MobileNetV2 ImageNet features (global average pooled) of every picture at 224 px with a
parallel tf.data decode, train a logistic regression (one Dense sigmoid unit) on the training
features, average the predictions of the original and the horizontally flipped picture (flip TTA),
clip them to [0.005, 0.995] and write the submission. The validation images are the ones listed as
`val` in kit's split file (`--split`), so both are scored on identical pictures.

Writes into --out: val_predictions.csv (path, label, prob: unclipped), submission.csv (id, label)
and summary.json (seconds, val_log_loss after clipping, val_accuracy, image counts).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def extract(competition_zip: Path, folder: Path) -> None:
    """train.zip and test.zip, both inside the competition zip, into folder/train and folder/test."""
    with zipfile.ZipFile(competition_zip) as outer:
        for member in ("train.zip", "test.zip"):
            with outer.open(member) as inner_file, zipfile.ZipFile(inner_file) as inner:
                inner.extractall(folder)


def image_lists(folder: Path, split_csv: Path):
    """(train paths, train labels, val paths, val labels, test ids, test paths); dog = 1."""
    import pandas as pd

    split = pd.read_csv(split_csv, dtype=str).set_index("path")["split"]
    train, val = [], []
    for path in sorted((folder / "train").glob("*.jpg")):
        rel = f"train/{path.name}"
        (val if split.get(rel) == "val" else train).append(path)
    missing = [rel for rel in split.index if not (folder / rel).exists()]
    if missing:
        sys.exit(f"reference: {len(missing)} files of {split_csv} are not in the zip (e.g. {missing[0]})")
    test = sorted((folder / "test").glob("*.jpg"), key=lambda p: int(p.stem))
    label = lambda paths: [1.0 if p.name.startswith("dog.") else 0.0 for p in paths]  # noqa: E731
    return train, label(train), val, label(val), [int(p.stem) for p in test], test


def feature_model(image_size: int, weights: str):
    import keras

    weights = None if weights == "none" else weights
    return keras.applications.MobileNetV2(include_top=False, weights=weights, pooling="avg",
                                          input_shape=(image_size, image_size, 3))


def features(model, paths: list[Path], image_size: int, flip: bool = False, batch_size: int = 64):
    """Pooled MobileNetV2 features of `paths` (optionally mirrored), decoded in parallel by tf.data."""
    import keras
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, [image_size, image_size])
        if flip:
            image = tf.image.flip_left_right(image)
        return keras.applications.mobilenet_v2.preprocess_input(image)

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return model.predict(ds, verbose=0)


def logistic_regression(x, y, epochs: int, seed: int = 0):
    """One Dense sigmoid unit on the features: logistic regression trained with Adam."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    head = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(1, activation="sigmoid")])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    head.fit(x, np.asarray(y, np.float32), epochs=epochs, batch_size=64, verbose=0)
    return head


def log_loss(y, p) -> float:
    import numpy as np

    y, p = np.asarray(y, np.float64), np.clip(np.asarray(p, np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, type=Path, help="the competition zip, as Kaggle serves it")
    parser.add_argument("--split", required=True, type=Path, help="kit's split file: path,split (train/val)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights", default="imagenet", help="imagenet | none")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--clip", type=float, default=0.005)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import numpy as np
    import pandas as pd

    folder = Path(tempfile.mkdtemp(prefix="reference-"))
    try:
        extract(args.zip, folder)
        train, y_train, val, y_val, test_ids, test = image_lists(folder, args.split)
        model = feature_model(args.image_size, args.weights)
        head = logistic_regression(features(model, train, args.image_size), y_train, args.epochs)

        def tta(paths):  # the mean of the original and the mirrored picture's probability
            views = [features(model, paths, args.image_size, flip) for flip in (False, True)]
            return np.mean([head.predict(v, verbose=0)[:, 0] for v in views], axis=0)

        p_val, p_test = tta(val), tta(test)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": [f"train/{p.name}" for p in val], "label": y_val, "prob": p_val}).to_csv(
        args.out / "val_predictions.csv", index=False)
    bound = (args.clip, 1 - args.clip)
    pd.DataFrame({"id": test_ids, "label": np.clip(p_test, *bound)}).to_csv(args.out / "submission.csv", index=False)
    summary = {"seconds": round(time.perf_counter() - started, 1),
               "val_log_loss": log_loss(y_val, np.clip(p_val, *bound)),
               "val_accuracy": float(np.mean((p_val > 0.5) == (np.asarray(y_val) > 0.5))),
               "train_images": len(train), "val_images": len(val), "test_images": len(test), "clip": args.clip}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
