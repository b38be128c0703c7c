"""`make report`: the run it picks, plots/ and report.html for full, multi-class, old and damaged runs."""
from __future__ import annotations

import os
import re
from html import escape
from pathlib import Path

import pandas as pd
import pytest

from kit.__main__ import main
from kit.errors import KitError
from kit.model.metrics import log_loss
from kit.report import html as report_html
from kit.report import plots, report
from kit.runs import RunDir
from tests.report.test_plots import assert_png, make_run

ALL_PLOTS = {"lr.png", "losses.png", "confusion.png", *(f"gallery_{kind}.png" for kind in plots.GALLERIES)}


def image_links(page: str) -> set[str]:
    return set(re.findall(r'<img src="([^"]+)"', page))


def built(run_dir: RunDir) -> str:
    """build_report's page, checked to be written where RunDir says."""
    assert report_html.build_report(run_dir) == run_dir.report
    return run_dir.report.read_text()


@pytest.fixture(scope="module")
def binary_report(tmp_path_factory) -> tuple[RunDir, str]:
    run_dir = make_run(tmp_path_factory.mktemp("report2"), ["cat", "dog"], name="cats-vs-dogs-1")
    return run_dir, built(run_dir)


@pytest.fixture(scope="module")
def multi_report(tmp_path_factory) -> tuple[RunDir, str]:
    run_dir = make_run(tmp_path_factory.mktemp("report3"), ["cat", "dog", "<fox>&co"], name="exp<1>&b", per_class=5)
    return run_dir, built(run_dir)


def test_binary_report_has_every_plot_the_summary_and_the_config(binary_report):
    run_dir, html = binary_report
    assert {p.name for p in run_dir.plots.iterdir()} == ALL_PLOTS
    for name in ALL_PLOTS:
        assert_png(run_dir.plots / name)
    assert image_links(html) == {f"plots/{name}" for name in ALL_PLOTS}
    summary = run_dir.summary()
    assert "<h1>Run cats-vs-dogs-1</h1>" in html
    assert f"<td>{summary['val_log_loss']:.6g}</td>" in html
    assert f"<td>{summary['best_epoch']} of 9</td>" in html
    assert "val log loss with TTA, clipped at 0.0001 (submit.clip, the floor)" in html and "Missing from this run" not in html
    assert "<td>backbone</td><td>mobilenet_v2</td>" in html
    assert "<td>head trained on (stage 1)</td><td>images</td>" in html
    assert ("<td>group lr ratios</td><td>0.01, 0.1, 1</td></tr>"
            "<tr><td>group lrs, first..last</td><td>1e-05, 0.0001, 0.001</td>") in html  # train.lr 1e-3 x ratios
    assert "feature_engine: auto" in html  # the full resolved config, keys the settings table does not show
    assert html.count('<tr class="best">') == 1
    assert f'<tr class="best"><td>{summary["best_epoch"]}</td>' in html  # the best row, counted from 1


def test_binary_report_scores_match_the_predictions(binary_report):
    run_dir, html = binary_report
    frame = pd.read_csv(run_dir.val_predictions)
    unclipped = log_loss(frame["label"], frame["prob"])
    assert f"<td>val log loss with TTA (unclipped)</td><td>{unclipped:.6g}</td>" in html
    clipped = log_loss(frame["label"], frame["prob"], 1e-4)
    assert f"clipped at 0.0001 (submit.clip, the floor)</td><td>{clipped:.6g}</td>" in html
    right = int(((frame["prob"] > 0.5).astype(int) == frame["label"]).sum())
    assert f"({right} right, {len(frame) - right} wrong)" in html
    # per class: images, right, wrong, accuracy, predicted-as count
    cats = frame[frame["label"] == 0]
    cats_right = int((cats["prob"] <= 0.5).sum())
    assert f"<td>cat</td><td>{len(cats)}</td><td>{cats_right}</td><td>{len(cats) - cats_right}</td>" in html


def test_multiclass_report_escapes_names_and_draws_everything(multi_report):
    run_dir, html = multi_report
    assert {p.name for p in run_dir.plots.iterdir()} == ALL_PLOTS
    assert assert_png(run_dir.plots / "gallery_confident_wrong.png").size == plots.gallery_pixels(
        *plots.gallery_shape(report_html.CLASS_GALLERY_N, 3, True))
    assert "<h1>Run exp&lt;1&gt;&amp;b</h1>" in html and "exp<1>" not in html
    assert "&lt;fox&gt;&amp;co" in html and "<fox>" not in html
    assert image_links(html) == {f"plots/{name}" for name in ALL_PLOTS}


def test_old_run_with_only_metrics_says_what_is_missing(tmp_path):
    run_dir = make_run(tmp_path, ["cat", "dog"], name="old")
    for path in (run_dir.lr, run_dir.val_predictions, run_dir.summary_file, run_dir.classes_file,
                 run_dir.config_file, run_dir.versions_file):
        path.unlink()
    html = built(run_dir)
    assert {p.name for p in run_dir.plots.iterdir()} == {"losses.png"}
    assert image_links(html) == {"plots/losses.png"}
    for missing in ("lr.csv is missing", "val_predictions.csv is missing", "config.yaml is missing"):
        assert missing in html
    assert "Not drawn: no validation predictions in this run." in html
    best = pd.read_csv(run_dir.metrics)["val_log_loss"].idxmin() + 1  # best epoch from metrics.csv
    assert f"<td>best epoch</td><td>{best} of 9</td>" in html
    assert "<td>backbone</td><td>(not recorded)</td>" in html


def test_damaged_files_are_named_not_fatal(tmp_path):
    run_dir = make_run(tmp_path, ["cat", "dog", "fox"], name="damaged")
    run_dir.lr.write_text("step,rate\n0,0.1\n")
    frame = pd.read_csv(run_dir.val_predictions).drop(columns="prob_fox")
    frame.to_csv(run_dir.val_predictions, index=False)
    run_dir.summary_file.write_text("{not json")
    run_dir.config_file.write_text("train: [unclosed\n")
    html = built(run_dir)
    assert "lr.csv lacks columns epoch, lr" in html
    assert "val_predictions.csv: val_predictions.csv lacks prob_fox" in html
    assert "summary.json is not valid JSON" in html and "config.yaml is not valid YAML" in html
    assert {p.name for p in run_dir.plots.iterdir()} == {"losses.png"}


def test_unreadable_images_are_skipped(binary_report):
    run_dir, _ = binary_report
    frame = pd.read_csv(run_dir.val_predictions)
    assert Path(frame["path"][1]).stat().st_size == 0 and not Path(frame["path"][2]).exists()  # as fabricated
    assert_png(run_dir.plots / "gallery_random_incorrect.png")  # drawn all the same


def test_rebuild_replaces_plots_and_a_failed_one_keeps_the_old(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, ["cat", "dog"], name="again")
    run_dir.val_predictions.unlink()  # fewer plots: faster, and the mechanism is the same
    run_dir.plots.mkdir()
    (run_dir.plots / "stale.png").write_bytes(b"from an older kit")
    built(run_dir)
    assert {p.name for p in run_dir.plots.iterdir()} == {"lr.png", "losses.png"}  # stale plot gone
    before = {p.name: p.read_bytes() for p in run_dir.plots.iterdir()}
    html_before = run_dir.report.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr(plots, "plot_losses", broken)  # drawn after lr.png: a half-built plots/
    with pytest.raises(RuntimeError, match="exploded"):
        report_html.build_report(run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.plots.iterdir()} == before
    assert run_dir.report.read_text() == html_before
    assert sorted(p.name for p in run_dir.path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_report_stage_picks_the_newest_or_the_named_run_and_refuses_others(cfg, capsys):
    runs = Path(cfg.paths.runs_dir)
    with pytest.raises(KitError, match="no run with a metrics.csv in .*make train"):
        report.run(cfg)
    older, newer = RunDir(runs / "older"), RunDir(runs / "newer")
    for i, run_dir in enumerate([older, newer]):
        run_dir.path.mkdir(parents=True)
        run_dir.metrics.write_text("epoch,val_log_loss\n0,0.5\n")
        os.utime(run_dir.metrics, (1_000_000 + i, 1_000_000 + i))
    crashed = RunDir(runs / "crashed")
    crashed.path.mkdir()  # newest folder, but no metrics: not reportable
    assert report.run(cfg) == newer.report and newer.report.is_file() and not older.report.exists()
    assert f"report: {newer.report}" in capsys.readouterr().out
    assert report.run(cfg, "older") == older.report and older.report.is_file()
    assert report.run(cfg, str(older.path)) == older.report
    with pytest.raises(KitError, match="no metrics.csv in .*crashed: check the run's name"):
        report.run(cfg, "crashed")
    assert not crashed.report.exists() and not crashed.plots.exists()


def test_report_stage_from_the_command_line(tmp_path, capsys):
    run_dir = make_run(tmp_path, ["cat", "dog"], name="cli-run")
    run_dir.val_predictions.unlink()  # galleries are covered above; keep this one quick
    assert main(["report", "--set", f"paths.runs_dir={tmp_path / 'runs'}"]) == 0
    assert run_dir.report.is_file() and (run_dir.plots / "lr.png").is_file()
    assert str(run_dir.report) in capsys.readouterr().out
    assert main(["report", "--set", f"paths.runs_dir={tmp_path / 'runs'}", "--run", "nope"]) == 2
    assert "no metrics.csv in" in capsys.readouterr().err


DAMAGED = {
    # what is spoilt -> (how, the note the report shows instead of a traceback)
    "zero-byte metrics.csv": (lambda r: r.metrics.write_bytes(b""), "metrics.csv could not be read (EmptyDataError)"),
    "garbage metrics.csv": (lambda r: r.metrics.write_bytes(bytes(range(256)) * 3), "metrics.csv could not be read"),
    "text in metrics.csv": (lambda r: r.metrics.write_text("epoch,val_log_loss\n0,0.5\nx,y\n"),
                            "metrics.csv has values that are not numbers (column epoch, e.g. 'x')"),
    "garbage val_predictions.csv": (lambda r: r.val_predictions.write_bytes(bytes(range(256)) * 3),
                                    "val_predictions.csv could not be read"),
    "text in val_predictions.csv": (lambda r: r.val_predictions.write_text("path,label,prob\na.jpg,cat,high\n"),
                                    "val_predictions.csv: could not convert string to float"),
    "NaN in val_predictions.csv": (lambda r: r.val_predictions.write_text("path,label,prob\na.jpg,0,\nb.jpg,1,0.9\n"),
                                   "probabilities that are NaN or outside [0, 1]"),
    "text in lr.csv": (lambda r: r.lr.write_text("step,epoch,lr\n0,0,fast\n"), "lr.csv has values that are not numbers"),
    "summary.json a list": (lambda r: r.summary_file.write_text("[1, 2]"), "summary.json is not a JSON object"),
    "classes.json a number": (lambda r: r.classes_file.write_text("5"), "classes.json is not a list of class names"),
    "binary versions.json": (lambda r: r.versions_file.write_bytes(bytes(range(256))), None),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_each_damaged_file_is_a_note_and_the_rest_of_the_run_is_untouched(tmp_path, case):
    from tests.submit.cli import tree

    spoil, note = DAMAGED[case]
    run_dir = make_run(tmp_path, ["cat", "dog"], name="spoilt", per_class=2)
    spoil(run_dir)
    before = {name: data for name, data in tree(run_dir.path).items() if not name.startswith("plots")}
    html = built(run_dir)
    if note:
        assert escape(note) in html, case
    after = {name: data for name, data in tree(run_dir.path).items() if not name.startswith(("plots", "report.html"))}
    assert after == before  # only plots/ and report.html, kit's own, were written


def test_command_line_process_reports_a_damaged_run_and_refuses_an_unknown_one(tmp_path):
    from tests.submit.cli import one_error_line, run_kit

    run_dir = make_run(tmp_path, ["cat", "dog"], name="spoilt", per_class=2)
    run_dir.metrics.write_bytes(b"")
    run_dir.val_predictions.write_bytes(b"\x00\xff garbage \x89PNG")
    done = run_kit(tmp_path, "report", "--set", f"paths.runs_dir={tmp_path / 'runs'}", "--run", "spoilt")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "metrics.csv could not be read" in run_dir.report.read_text()
    done = run_kit(tmp_path, "report", "--set", f"paths.runs_dir={tmp_path / 'runs'}", "--run", "nope")
    assert one_error_line(done.returncode, done.stderr).startswith("no metrics.csv in ")
