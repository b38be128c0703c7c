"""`make report`: the run finder, plots/ and report.html for full, multi-class, old and damaged runs."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from kit import plots, report
from kit.__main__ import main
from kit.errors import KitError
from tests.test_plots import assert_png, make_run

ALL_PLOTS = {"lr.png", "losses.png", "confusion.png", *(f"gallery_{kind}.png" for kind in plots.GALLERIES)}


def image_links(page: str) -> set[str]:
    return set(re.findall(r'<img src="([^"]+)"', page))


@pytest.fixture(scope="module")
def binary_report(tmp_path_factory) -> tuple[Path, str]:
    run = make_run(tmp_path_factory.mktemp("report2"), ["cat", "dog"], name="cats-vs-dogs-1")
    return run, report.build_report(run).read_text()


@pytest.fixture(scope="module")
def multi_report(tmp_path_factory) -> tuple[Path, str]:
    run = make_run(tmp_path_factory.mktemp("report3"), ["cat", "dog", "<fox>&co"], name="exp<1>&b", per_class=5)
    return run, report.build_report(run).read_text()


def test_binary_report_has_every_plot_the_summary_and_the_config(binary_report):
    run, page = binary_report
    assert {p.name for p in (run / "plots").iterdir()} == ALL_PLOTS
    for name in ALL_PLOTS:
        assert_png(run / "plots" / name)
    assert image_links(page) == {f"plots/{name}" for name in ALL_PLOTS}
    summary = json.loads((run / "summary.json").read_text())
    assert "<h1>Run cats-vs-dogs-1</h1>" in page
    assert f"<td>{summary['val_log_loss']:.6g}</td>" in page
    assert f"<td>{summary['best_epoch']} of 9</td>" in page
    assert "val log loss with TTA, clipped at 0.005" in page and "Missing from this run" not in page
    assert "<td>backbone</td><td>mobilenet_v2</td>" in page
    assert ("<td>group lr ratios</td><td>0.01, 0.1, 1</td></tr>"
            "<tr><td>group lrs, first..last</td><td>1e-05, 0.0001, 0.001</td>") in page  # train.lr 1e-3 x ratios
    assert "head_precompute_epochs: 20" in page  # the full resolved config
    assert page.count('<tr class="best">') == 1
    assert f'<tr class="best"><td>{summary["best_epoch"]}</td>' in page  # the best row, counted from 1


def test_binary_report_scores_match_the_predictions(binary_report):
    run, page = binary_report
    from kit.submission import log_loss
    frame = pd.read_csv(run / "val_predictions.csv")
    unclipped = log_loss(frame["label"], frame["prob"])
    assert f"<td>val log loss with TTA (unclipped)</td><td>{unclipped:.6g}</td>" in page
    right = int(((frame["prob"] > 0.5).astype(int) == frame["label"]).sum())
    assert f"({right} right, {len(frame) - right} wrong)" in page
    # per class: images, right, wrong, accuracy, predicted-as count
    cats = frame[frame["label"] == 0]
    cats_right = int((cats["prob"] <= 0.5).sum())
    assert f"<td>cat</td><td>{len(cats)}</td><td>{cats_right}</td><td>{len(cats) - cats_right}</td>" in page


def test_multiclass_report_escapes_names_and_draws_everything(multi_report):
    run, page = multi_report
    assert {p.name for p in (run / "plots").iterdir()} == ALL_PLOTS
    assert assert_png(run / "plots" / "gallery_confident_wrong.png").size == plots.gallery_pixels(
        *plots.gallery_shape(report.CLASS_GALLERY_N, 3, True))
    assert "<h1>Run exp&lt;1&gt;&amp;b</h1>" in page and "exp<1>" not in page
    assert "&lt;fox&gt;&amp;co" in page and "<fox>" not in page
    assert image_links(page) == {f"plots/{name}" for name in ALL_PLOTS}


def test_old_run_with_only_metrics_says_what_is_missing(tmp_path):
    run = make_run(tmp_path, ["cat", "dog"], name="old")
    for name in ("lr.csv", "val_predictions.csv", "summary.json", "classes.json", "config.yaml", "versions.json"):
        (run / name).unlink()
    page = report.build_report(run).read_text()
    assert {p.name for p in (run / "plots").iterdir()} == {"losses.png"}
    assert image_links(page) == {"plots/losses.png"}
    for missing in ("lr.csv is missing", "val_predictions.csv is missing", "config.yaml is missing"):
        assert missing in page
    assert "Not drawn: no validation predictions in this run." in page
    best = pd.read_csv(run / "metrics.csv")["val_log_loss"].idxmin() + 1  # best epoch from metrics.csv
    assert f"<td>best epoch</td><td>{best} of 9</td>" in page
    assert "<td>backbone</td><td>(not recorded)</td>" in page


def test_damaged_files_are_named_not_fatal(tmp_path):
    run = make_run(tmp_path, ["cat", "dog", "fox"], name="damaged")
    (run / "lr.csv").write_text("step,rate\n0,0.1\n")
    frame = pd.read_csv(run / "val_predictions.csv").drop(columns="prob_fox")
    frame.to_csv(run / "val_predictions.csv", index=False)
    (run / "summary.json").write_text("{not json")
    (run / "config.yaml").write_text("train: [unclosed\n")
    page = report.build_report(run).read_text()
    assert "lr.csv lacks columns epoch, lr" in page
    assert "val_predictions.csv: val_predictions.csv lacks prob_fox" in page
    assert "summary.json is not valid JSON" in page and "config.yaml is not valid YAML" in page
    assert {p.name for p in (run / "plots").iterdir()} == {"losses.png"}


def test_unreadable_images_are_skipped(binary_report):
    run, _ = binary_report
    frame = pd.read_csv(run / "val_predictions.csv")
    assert Path(frame["path"][1]).stat().st_size == 0 and not Path(frame["path"][2]).exists()  # as fabricated
    assert_png(run / "plots" / "gallery_random_incorrect.png")  # drawn all the same


def test_rebuild_replaces_plots_and_a_failed_one_keeps_the_old(tmp_path, monkeypatch):
    run = make_run(tmp_path, ["cat", "dog"], name="again")
    (run / "val_predictions.csv").unlink()  # fewer plots: faster, and the mechanism is the same
    (run / "plots").mkdir()
    (run / "plots" / "stale.png").write_bytes(b"from an older kit")
    report.build_report(run)
    assert {p.name for p in (run / "plots").iterdir()} == {"lr.png", "losses.png"}  # stale plot gone
    before = {p.name: p.read_bytes() for p in (run / "plots").iterdir()}
    html_before = (run / "report.html").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr(plots, "plot_losses", broken)  # drawn after lr.png: a half-built plots/
    with pytest.raises(RuntimeError, match="exploded"):
        report.build_report(run)
    assert {p.name: p.read_bytes() for p in (run / "plots").iterdir()} == before
    assert (run / "report.html").read_text() == html_before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_find_report_run_newest_named_and_refusals(cfg, tmp_path):
    runs = Path(cfg.paths.runs_dir)
    with pytest.raises(KitError, match="no run with metrics.csv in .*make train"):
        report.find_report_run(cfg)
    for i, name in enumerate(["older", "newer"]):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.csv").write_text("epoch,val_log_loss\n0,0.5\n")
        os.utime(runs / name / "metrics.csv", (1_000_000 + i, 1_000_000 + i))
    (runs / "crashed").mkdir()  # newest folder, but no metrics.csv: not reportable
    assert report.find_report_run(cfg) == runs / "newer"
    assert report.find_report_run(cfg, "older") == runs / "older"
    assert report.find_report_run(cfg, str(runs / "older")) == runs / "older"
    with pytest.raises(KitError, match="no metrics.csv in .*crashed: pass --run"):
        report.find_report_run(cfg, "crashed")
    assert not (runs / "crashed" / "report.html").exists()


def test_report_stage_from_the_command_line(tmp_path, capsys):
    run = make_run(tmp_path, ["cat", "dog"], name="cli-run")
    (run / "val_predictions.csv").unlink()  # galleries are covered above; keep this one quick
    assert main(["report", "--set", f"paths.runs_dir={tmp_path / 'runs'}"]) == 0
    assert (run / "report.html").is_file() and (run / "plots" / "lr.png").is_file()
    assert str(run / "report.html") in capsys.readouterr().out
    assert main(["report", "--set", f"paths.runs_dir={tmp_path / 'runs'}", "--run", "nope"]) == 2
    assert "no metrics.csv in" in capsys.readouterr().err
