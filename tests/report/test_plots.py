"""Run plots: prediction table, gallery selection (pure), and every PNG written, valid and sized as promised."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.config import load_config
from kit.errors import KitError
from kit.report import plots
from kit.report.tables import prediction_table
from kit.runs import RunDir
from tests.fixtures import image_bytes, write

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 10  # training steps per epoch in the fabricated runs


# ---- a fabricated run folder, shared with tests/report/test_report.py --------------------------------

def sgdr_lr(head_epochs: int, finetune_epochs: int, head_lr=1e-3, lr=1e-2, cycle=1, mult=2) -> pd.DataFrame:
    """lr.csv rows: a constant head stage, then cosine cycles of 1, 2, 4... epochs restarting at `lr`."""
    rows, cycle_start, cycle_len = [], 0, cycle * STEPS
    for epoch in range(head_epochs + finetune_epochs):
        for batch in range(STEPS):
            step = epoch * STEPS + batch
            if epoch < head_epochs:
                rate = head_lr
            else:
                t = step - head_epochs * STEPS - cycle_start
                if t >= cycle_len:
                    cycle_start, cycle_len, t = cycle_start + cycle_len, cycle_len * mult, t - cycle_len
                rate = 0.5 * lr * (1 + math.cos(math.pi * t / cycle_len))
            rows.append((step, epoch, rate))
    return pd.DataFrame(rows, columns=["step", "epoch", "lr"])


def fake_metrics(head_epochs: int, finetune_epochs: int, seed: int = 0) -> pd.DataFrame:
    n = head_epochs + finetune_epochs
    rng = np.random.default_rng(seed)
    loss = 0.7 * np.exp(-np.arange(n) / 3) + 0.05 + rng.uniform(0, 0.02, n)
    val = loss + 0.03 + rng.uniform(0, 0.05, n)
    return pd.DataFrame({"epoch": np.arange(n), "accuracy": 1 - loss / 1.5, "log_loss": loss, "loss": loss,
                         "lr": 1e-3, "stage": [1] * head_epochs + [2] * finetune_epochs,
                         "val_accuracy": 1 - val / 1.5, "val_log_loss": val, "val_loss": val})


# Per true class: the probability of the true class for each image. Above 1/k right, below wrong.
BINARY_P_TRUE = [0.98, 0.9, 0.7, 0.56, 0.44, 0.03]


def fake_probabilities(classes: list[str], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probability matrix) with confident right, confident wrong and uncertain rows in every class."""
    k, rng = len(classes), np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per_class)
    probs = np.zeros((len(labels), k))
    for i, label in enumerate(labels):
        p_true = BINARY_P_TRUE[i % per_class % len(BINARY_P_TRUE)] if k == 2 else rng.uniform(0.05, 0.95)
        rest = rng.dirichlet(np.ones(k - 1)) * (1 - p_true)
        probs[i] = np.insert(rest, label, p_true)
    return labels, probs


def make_run(root: Path, classes: list[str], name: str = "demo-run", per_class: int = 6, seed: int = 0,
             head_epochs: int = 2, finetune_epochs: int = 7) -> RunDir:
    """A complete run folder as the train stage writes it, with tiny JPEGs (one zero-byte, one absent)."""
    run_dir = RunDir(root / "runs" / name)
    cfg = load_config(None, [f"paths.runs_dir={root / 'runs'}", f"train.head_epochs={head_epochs}",
                             f"train.finetune_epochs={finetune_epochs}", "train.group_lr_ratios=[0.01,0.1,1.0]"])
    labels, probs = fake_probabilities(classes, per_class, seed)
    paths = []
    for i, label in enumerate(labels):
        path = root / "images" / f"{label}.{i}.jpg"
        data = b"" if i == 1 else image_bytes(size=32 + 8 * (i % 3), seed=i)  # one unreadable image
        paths.append(str(write(path, data)))
    paths[2] = str(root / "images" / "deleted-since.jpg")  # one image that is gone
    frame = pd.DataFrame({"path": paths, "label": labels, "class_name": np.asarray(classes)[labels]})
    run_dir.start(cfg, classes, frame)  # config.yaml, versions.json, classes.json, split.csv
    metrics = fake_metrics(head_epochs, finetune_epochs, seed)
    metrics.to_csv(run_dir.metrics, index=False)
    sgdr_lr(head_epochs, finetune_epochs).to_csv(run_dir.lr, index=False)
    if len(classes) == 2:
        frame["prob"] = probs[:, 1]
    else:
        for j, name_ in enumerate(classes):
            frame[f"prob_{name_}"] = probs[:, j]
    run_dir.write_val_predictions(frame)
    best = int(metrics["val_log_loss"].idxmin())
    run_dir.finish({"run": name, "best_epoch": best + 1, "val_log_loss": float(metrics["val_log_loss"][best]),
                    "train_images": 4 * len(labels), "val_images": len(labels), "classes": classes, "seconds": 12.5})
    return run_dir


def assert_png(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        return image


# ---- prediction table and gallery selection: pure functions ---------------------------------------

def binary_table(p_dog: list[float], labels: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame({"path": [f"img{i}.jpg" for i in range(len(labels))], "label": labels, "prob": p_dog})
    return prediction_table(frame, ["cat", "dog"])


# rows:        0     1     2     3     4     5     6     7     8     9
P_DOG = [0.02, 0.30, 0.97, 0.55, 0.50, 0.99, 0.80, 0.40, 0.05, 0.52]
LABELS = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_prediction_table_binary_threshold_confidence_and_correctness():
    table = binary_table(P_DOG, LABELS)
    assert list(table["pred"]) == [0, 0, 1, 1, 0, 1, 1, 0, 0, 1]  # exactly 0.5 is a cat (P > 0.5 is a dog)
    assert list(table["correct"]) == [True, True, False, False, True, True, True, False, False, True]
    assert table["confidence"].tolist() == pytest.approx([0.98, 0.7, 0.97, 0.55, 0.5, 0.99, 0.8, 0.6, 0.95, 0.52])
    assert table["p_true"].tolist() == pytest.approx([0.98, 0.7, 0.03, 0.45, 0.5, 0.99, 0.8, 0.4, 0.05, 0.52])
    assert list(table["pred_name"][:3]) == ["cat", "cat", "dog"]


def test_prediction_table_multiclass_argmax_and_refusals():
    frame = pd.DataFrame({"path": ["a", "b"], "label": [2, 0], "prob_a": [0.1, 0.2], "prob_b": [0.3, 0.5],
                          "prob_c": [0.6, 0.3]})
    table = prediction_table(frame, ["a", "b", "c"])
    assert list(table["pred"]) == [2, 1] and list(table["correct"]) == [True, False]
    assert table["confidence"].tolist() == pytest.approx([0.6, 0.5])
    with pytest.raises(KitError, match="lacks prob_d"):
        prediction_table(frame, ["a", "b", "c", "d"])
    with pytest.raises(KitError, match="no `prob` column"):
        prediction_table(frame, ["a", "b"])
    with pytest.raises(KitError, match="labels must be 0..1"):
        prediction_table(frame.assign(prob=0.5), ["a", "b"])


def test_most_confident_wrong_per_class_are_the_most_confident_wrong():
    table = binary_table(P_DOG, LABELS)
    chosen = plots.select_gallery(table, "confident_wrong", n=1)
    assert chosen.index.tolist() == [2, 8]  # cat at P(dog)=0.97, dog at P(dog)=0.05
    both = plots.select_gallery(table, "confident_wrong", n=5)
    assert both.index.tolist() == [2, 8, 7, 3]  # ordered by confidence in the wrong answer: .97 .95 .6 .55
    assert not both["correct"].any()
    # The property on a larger random table: nothing left out beats what was chosen, per class.
    rng = np.random.default_rng(3)
    big = binary_table(list(rng.uniform(0, 1, 200)), list(rng.integers(0, 2, 200)))
    picked = plots.select_gallery(big, "confident_wrong", n=4)
    for name, part in picked.groupby("class_name"):
        wrong = big[(big["class_name"] == name) & ~big["correct"]]
        assert len(part) == 4 and part["confidence"].min() >= wrong.drop(part.index)["confidence"].max()


def test_most_confident_correct_random_and_uncertain_selections():
    table = binary_table(P_DOG, LABELS)
    # best first, classes in the order of their best candidate: dog .99, cat .98, dog .8, cat .7
    assert plots.select_gallery(table, "confident_correct", n=2).index.tolist() == [5, 0, 6, 1]
    assert plots.select_gallery(table, "uncertain", n=3).index.tolist() == [4, 9, 3]  # |p - .5|: 0, .02, .05
    assert set(plots.select_gallery(table, "uncertain", n=3)["group"]) == {""}
    incorrect = plots.select_gallery(table, "random_incorrect", n=10, seed=1)
    assert sorted(incorrect.index) == [2, 3, 7, 8]  # fewer candidates than n: all of them
    first = plots.select_gallery(table, "random_correct", n=3, seed=1)
    assert len(first) == 3 and first["correct"].all()
    assert first.index.tolist() == plots.select_gallery(table, "random_correct", n=3, seed=1).index.tolist()
    seeds = {tuple(plots.select_gallery(table, "random_correct", n=3, seed=s).index) for s in range(6)}
    assert len(seeds) > 1  # the seed really changes the draw
    with pytest.raises(KitError, match="unknown gallery 'best'"):
        plots.select_gallery(table, "best", n=3)


def test_uncertain_multiclass_is_lowest_top_probability():
    frame = pd.DataFrame({"path": list("abc"), "label": [0, 1, 2], "prob_x": [0.9, 0.34, 0.5],
                          "prob_y": [0.05, 0.33, 0.45], "prob_z": [0.05, 0.33, 0.05]})
    table = prediction_table(frame, ["x", "y", "z"])
    assert plots.select_gallery(table, "uncertain", n=2).index.tolist() == [1, 2]


def test_confusion_counts_and_lr_positions():
    table = binary_table(P_DOG, LABELS)
    assert plots.confusion_counts(table, 2).tolist() == [[3, 2], [2, 3]]
    lr = sgdr_lr(1, 3)
    x = plots.lr_positions(lr)
    assert x[0] == 0 and x[STEPS] == 1 and x[-1] == pytest.approx(4 - 1 / STEPS)
    assert plots.head_epochs(fake_metrics(2, 3)) == 2 and plots.head_epochs(pd.DataFrame({"epoch": [0]})) == 0


def test_pick_images_skips_unreadable_and_takes_the_next(tmp_path):
    good = [write(tmp_path / f"{i}.jpg", image_bytes(seed=i)) for i in range(3)]
    bad = write(tmp_path / "bad.jpg", b"not an image")
    table = binary_table([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1]).assign(path=[str(bad), *map(str, good)])
    candidates = plots.gallery_candidates(table, "confident_correct")
    picked, unreadable = plots.pick_images(candidates, ["dog"], n=2)
    assert unreadable == 1
    assert [row.path for row, _ in picked["dog"]] == [str(good[0]), str(good[1])]
    assert picked["dog"][0][1].shape == (32, 32, 3)


# ---- the PNGs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("plots")
    return {2: make_run(root / "two", ["cat", "dog"]), 3: make_run(root / "three", ["cat", "dog", "fox"], per_class=5)}


def predictions(run_dir: RunDir) -> tuple[pd.DataFrame, list[str]]:
    classes = run_dir.classes()
    return prediction_table(pd.read_csv(run_dir.val_predictions), classes), classes


def test_lr_and_loss_plots_are_valid_pngs(runs, tmp_path):
    run_dir = runs[2]
    metrics = pd.read_csv(run_dir.metrics)
    lr_png = assert_png(plots.plot_lr(pd.read_csv(run_dir.lr), tmp_path / "lr.png", head=2))
    assert lr_png.size == (900, 360)
    assert assert_png(plots.plot_losses(metrics, tmp_path / "losses.png", best_epoch=7)).size == (1100, 400)
    bare = metrics[["epoch", "loss", "val_log_loss"]]  # no accuracy, no stage: one panel
    assert assert_png(plots.plot_losses(bare, tmp_path / "bare.png")).size == (650, 400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.png", "losses.png", "lr.png"]  # no temp left


@pytest.mark.parametrize("k", [2, 3])
def test_confusion_and_every_gallery(runs, tmp_path, k):
    table, classes = predictions(runs[k])
    assert_png(plots.plot_confusion(table, classes, tmp_path / "confusion.png"))
    for kind, (_, per_class) in plots.GALLERIES.items():
        n = 3 if per_class else 5
        image = assert_png(plots.plot_gallery(table, kind, tmp_path / f"{kind}.png", n=n))
        rows, cols = plots.gallery_shape(n, k, per_class)
        assert (rows, cols) == ((k, 3) if per_class else (2, 4))
        assert image.size == plots.gallery_pixels(rows, cols)


def test_gallery_without_candidates_is_still_written(tmp_path):
    path = write(tmp_path / "a.jpg", image_bytes())
    table = binary_table([0.9, 0.1], [1, 0]).assign(path=str(path))  # everything right: no incorrect
    image = assert_png(plots.plot_gallery(table, "random_incorrect", tmp_path / "none.png", n=4))
    assert image.size == plots.gallery_pixels(1, 4)
    wrong = assert_png(plots.plot_gallery(table, "confident_wrong", tmp_path / "none2.png", n=2))
    assert wrong.size == plots.gallery_pixels(2, 2)  # a "none" row per class


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "losses.png"
    out.write_bytes(b"previous good plot")

    def disk_full(self, path, **kwargs):
        Path(path).write_bytes(b"half a PNG")
        raise OSError("No space left on device")

    monkeypatch.setattr(plots.Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space"):
        plots.plot_losses(fake_metrics(1, 1), out)
    assert out.read_bytes() == b"previous good plot"
    assert [p.name for p in tmp_path.iterdir()] == ["losses.png"]  # the temporary file is gone too
