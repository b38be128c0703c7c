"""The bench's pieces on tiny synthetic data, so CI notices when `make bench` breaks (it is not run by make test)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import common, document, end_to_end, full_size, images, reference, sections
from bench import backend_bench, device_bench, feature_bench, pipeline_bench, scaling
from bench.run import chosen, measuring_arguments, parse_args
from bench.sections_full import compare_steps

pytestmark = pytest.mark.slow  # several tiny TensorFlow models: ~30 s on 2 cores


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    return [str(p) for p in images.synthetic_photos(folder, 16, size=(48, 40), seed=3)]


@pytest.fixture(scope="module")
def tiny_results(photos, tmp_path_factory) -> dict:
    """Every section but end to end, measured at toy sizes in this process, as bench/run.py stores them."""
    work = tmp_path_factory.mktemp("work")
    folder = images.class_folders([Path(p) for p in photos], work / "classes")
    pipe = pipeline_bench.pipeline_section(photos, str(folder), str(work), image_size=32, batch_size=8, repeats=1)
    modes = [dict(pipeline_bench.cache_mode(photos, str(work), mode, image_size=32, batch_size=8),
                  memory={"peak_anon_mb": 100.0}, process={"maxrss_mb": 300.0}) for mode in ("disk", "memory", "none")]
    par = pipeline_bench.parallelism(photos, str(work), image_size=32, batch_size=8, repeats=1)
    feats = feature_bench.feature_section(photos[:8], str(work), image_size=32, batch_size=4, repeats=1)
    step = device_bench.train_step("false", "false", image_size=32, batch_size=2, max_steps=1)
    spread = device_bench.distribute_fit(image_size=16, batch_size=2, steps=1, rounds=2, backbone="small_cnn")
    on_tf = backend_bench.speed(image_size=32, batch_size=4, steps=1, rounds=1, predict_images=8)  # this process: TF
    unique = images.synthetic_photos(work / "unique", 4, size=(40, 40))
    points = []
    for n in (8, 12):
        scaling.make_raw(work / f"scale-{n}" / "data", unique, n)
        point = scaling.scale_once(n, str(work / f"scale-{n}" / "data"), str(work / f"scale-{n}"), image_size=32,
                                   batch_size=4)
        points.append(dict(point, process={"maxrss_mb": 500.0}))
    return {"pipeline": pipe, "cache": {"images": 16, "image_size": 32, "modes": modes}, "parallelism": par,
            "features": feats, "device": {"runs": {"xla_off_float32": step,
                                                   "xla_on_float32": {"timed_out": True, "timeout": 60}},
                                          "distribute": spread, "image_size": 32, "batch_size": 2},
            "scaling": {"points": points, "image_size": 32, "picture_size": 40},
            "backend": {"speed": {"tensorflow": [on_tf, on_tf], "jax": [jax_like(on_tf, 0.5), jax_like(on_tf, 0.25)]},
                        "scores": {b: {"demo": {"seconds": 30.0, "test_log_loss": 0.2, "val_log_loss": v}}
                                   for b, v in (("tensorflow", 0.15), ("jax", 0.11))},
                        "real_run": backend_bench.REAL_RUN}}


def jax_like(measured: dict, factor: float) -> dict:
    """A made-up JAX process: `measured` (a real TensorFlow one) at `factor` its speed (the worker cannot switch
    backends inside this process; the rendering is what is tested)."""
    slower = lambda rate: dict(rate, per_s=rate["per_s"] * factor, per_cpu_s=rate["per_cpu_s"] * factor)  # noqa: E731
    return dict(measured, backend="jax", engine="keras", **{k: slower(measured[k])
                                                            for k in ("train", "predict", "predict_keras")})


def test_run_worker_reports_the_child_peak_memory(tmp_path):
    result = common.run_worker("sleep", {"seconds": 0.1, "allocate_mb": 120}, tmp_path)
    assert result["allocated_mb"] == 120
    assert result["process"]["returncode"] == 0
    assert result["process"]["maxrss_mb"] >= 120  # this child's own peak, from os.wait4
    assert result["memory"]["peak_anon_mb"] >= 120


def test_run_worker_failure_names_the_job_and_the_error(tmp_path):
    with pytest.raises(RuntimeError, match="bench job sleep failed.*unexpected keyword"):
        common.run_worker("sleep", {"no_such_argument": 1}, tmp_path)


def test_picture_helpers(tmp_path):
    paths = images.synthetic_photos(tmp_path / "p", 6, size=(50, 30))
    assert [p.name for p in paths[:3]] == ["cat.0.jpg", "dog.0.jpg", "cat.1.jpg"]
    assert paths[0].read_bytes()[:2] == b"\xff\xd8"  # JPEG
    chosen = images.take_balanced(paths, 4)
    assert sorted(images.labels_of(chosen)[:, 0]) == [0.0, 0.0, 1.0, 1.0]
    folder = images.class_folders(chosen, tmp_path / "classes")
    assert len(list((folder / "cat").iterdir())) == 2 and (folder / "dog" / "dog.0.jpg").is_symlink()
    many = images.replicated_set(paths[:2], tmp_path / "many", 5)
    assert len(many) == 5 and many[4].resolve() == paths[0].resolve()


def test_pipeline_section_measures_every_variant(tiny_results):
    r = tiny_results["pipeline"]
    assert r["cache_build"]["items"] == 16 and r["first_epoch"]["items"] == 16
    assert set(r["streams"]) == {"kit_fused", "keras_fused", "kit_keras_cv", "keras_keras_cv", "kit_plain",
                                 "kit_decode", "keras_plain"}
    assert all(v["items"] == 16 and v["per_s"] > 0 for v in r["streams"].values())
    assert set(r["augment_parts"]) >= {"fused: all", "keras_cv chain: all"}


def test_feature_and_device_sections(tiny_results):
    f = tiny_results["features"]
    assert all(f[k]["items"] >= 8 and f[k]["per_s"] > 0
               for k in ("ceiling", "tflite_ceiling", "kit_cold", "kit_warm", "naive"))
    assert f["engine"] == "tflite" and 0 <= f["tflite_max_abs_diff"] < 1e-3 * max(1.0, f["feature_scale"])
    step = tiny_results["device"]["runs"]["xla_off_float32"]
    assert step["policy"] == "float32" and step["jit_compile"] is False and step["images_per_s"] > 0
    spread = tiny_results["device"]["distribute"]
    for name in ("auto", "none"):  # one CPU device: auto is the default strategy, like none
        assert spread[name]["distributed"] is False and spread[name]["replicas"] == 1
        assert len(spread[name]["median"]["all_per_s"]) == 2 and spread[name]["median"]["per_s"] > 0
    for paired in (spread["paired_ratio"], spread["paired_cpu_ratio"]):  # one ABBA block of two rounds
        assert spread["blocks"] == len(paired["all"]) == 1 and paired["low"] <= paired["median"] <= paired["high"]


def test_scaling_reports_phases_and_sizes(tiny_results):
    small, large = tiny_results["scaling"]["points"]
    assert set(small["phases"]) == {"index", "cache", "features"}
    assert large["features_mb"] > small["features_mb"] > 0
    assert large["cache_on_disk_mb"] > 0


def test_document_has_a_table_per_section_with_ratios(tiny_results):
    results = {"meta": {"date": "today", "command": "make bench QUICK=1", "quick": True, "seconds": 60,
                        "machine": {"cpu": "test cpu", "cores": 2, "nproc": 2, "memory_gb": 8.0, "os": "Linux",
                                    "versions": {"tensorflow": "2.x", "git_commit": "abc"}},
                        "data": "synthetic", "weights": "none", "load_start": [9.0, 1, 1], "load_end": [1.0, 1, 1]},
               "sections": {name: {"load_before": [1, 1, 1], "load_after": [1, 1, 1], "seconds": 1.0, "result": value}
                            for name, value in tiny_results.items()}}
    results["sections"]["end_to_end"] = {"load_before": [1, 1, 1], "load_after": [1, 1, 1], "seconds": 0.0,
                                         "skipped": "a quick run never trains end to end."}
    results["sections"]["full"] = {"load_before": [1, 1, 1], "load_after": [1, 1, 1], "seconds": 1.0,
                                   "result": fake_full()}
    text = document.render(results)
    assert "QUICK RUN" in text and "The machine was loaded" in text
    for title in sections.TITLES.values():
        assert f"## {title}" in text
    assert text.count("**Findings.**") == len(sections.TITLES) - 1  # end to end was skipped
    assert "Skipped: a quick run" in text
    assert "≥ 2x" in text and "≥ 0.85x" in text and "no step done in 60 s" in text
    assert "**Failed**" not in text


def test_the_backend_section_compares_jax_with_tensorflow(tiny_results):
    measured = tiny_results["backend"]["speed"]["tensorflow"][0]
    assert measured["backend"] == "tensorflow" and measured["train"]["per_s"] > 0 and measured["predict"]["per_s"] > 0
    built = sections.BUILDERS["backend"](tiny_results["backend"])
    rows = built.tables[0][2]
    assert [round(r.ratio, 3) for r in rows] == [0.375] * 3  # the mean of the two JAX processes (0.5x, 0.25x)
    assert "validation log loss 0.1100 on JAX, 0.1500 on TensorFlow (difference -0.0400" in " ".join(built.findings)


def test_the_device_section_has_the_distribute_row(tiny_results):
    built = sections.BUILDERS["device"](tiny_results["device"])
    labels = [row.label for row in built.tables[0][2]]
    assert any(label.startswith("tf.distribute: `train.distribute` auto vs none") for label in labels)
    assert built.tables[-1][0] == "tf.distribute, per setting:" and len(built.tables[-1][2]) == 2
    assert "`train.distribute=auto` chose the default strategy" in " ".join(built.findings)
    old = dict(tiny_results["device"])
    del old["distribute"]  # a results.json from before the row: the section still renders
    assert len(sections.BUILDERS["device"](old).tables) == 2


def _document(names: list[str], value: str, quick: bool, only: list[str] | None = None) -> tuple[str, dict]:
    """A document with sections `names` whose one table row (a target) holds `value`."""
    meta = {"date": f"day {value}", "command": "make bench", "quick": quick, "seconds": 60, "only": only,
            "machine": {"cpu": "cpu", "cores": 2, "nproc": 2, "memory_gb": 8.0, "os": "Linux",
                        "versions": {"git_commit": f"c{value}"}},
            "data": "synthetic", "weights": "none", "load_start": [1, 1, 1], "load_end": [1, 1, 1]}
    info = {"load_before": [1, 1, 1], "load_after": [1, 1, 1], "seconds": 1.0, "result": {}}
    results = {"meta": meta, "sections": {n: info for n in names}}
    return document.render(results), meta


def test_a_partial_run_replaces_only_its_sections(monkeypatch):
    def builder(tag):
        return lambda r, tag=tag: sections.Built(["intro"], [("", ["m"], [sections.Row(f"{tag} row", 1.0, 1.0, 1.0,
                                                                                       None, "≥ 1x", True)])], ["f"])
    monkeypatch.setattr(sections, "BUILDERS", {n: builder(n) for n in sections.TITLES})
    full, _ = _document(list(sections.TITLES), "1", quick=False)
    monkeypatch.setattr(sections, "BUILDERS", {n: builder(n + " NEW") for n in sections.TITLES})
    partial, meta = _document(["device"], "2", quick=True, only=["device"])
    text = document.splice(full, partial, ["device"], meta)
    assert "device NEW row" in text and "| 3 | device NEW row" in text  # the section and its target row
    assert "| 3 | device row" not in text and "device row |" not in text
    for name in sections.TITLES:
        if name != "device":
            assert f"| {name} row |" in text and "Not run" not in text  # the others keep their numbers
    assert text.count("## ") == full.count("## ")  # no section lost or doubled
    rows = [line.split("|")[1].strip() for line in text.split("## Targets at a glance")[1].split("\n## ")[0]
            .splitlines() if line.startswith("| ") and "measure" not in line]
    assert rows == [sections.TITLES[n].split(" ")[0].rstrip(".") for n in sections.TITLES]  # in section order
    assert "- §3 re-measured on day 2" in text and "QUICK numbers" in text and "QUICK RUN" not in text
    again = document.splice(text, partial, ["device"], meta)
    assert again.count("- §3 re-measured") == 1  # a second partial run replaces the note


def test_a_failed_section_is_reported_not_hidden():
    text = document.render_section("features", sections.TITLES["features"],
                                   {"load_before": [1, 1, 1], "load_after": [1, 1, 1], "seconds": 2.0,
                                    "error": "RuntimeError: bench job features failed (exit 1)"})
    assert "**Failed**: RuntimeError: bench job features failed" in text


def test_reference_script_on_a_synthetic_competition(competition_zip, tmp_path):
    names = [f"train/{c}.{i}.jpg" for c in ("cat", "dog") for i in range(20)]
    split = pd.DataFrame({"path": names, "split": ["val" if i % 5 == 0 else "train" for i in range(40)]})
    split.to_csv(tmp_path / "split.csv", index=False)
    out = tmp_path / "out"
    assert reference.main(["--zip", str(competition_zip), "--split", str(tmp_path / "split.csv"), "--out", str(out),
                           "--weights", "none", "--image-size", "32", "--epochs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_images"], summary["val_images"], summary["test_images"]) == (32, 8, 12)
    submission = pd.read_csv(out / "submission.csv")
    assert list(submission.columns) == ["id", "label"] and submission["label"].between(0.005, 0.995).all()
    scored = end_to_end.score(out / "val_predictions.csv")
    assert scored["val_images"] == 8 and scored["val_keys"] == sorted(split[split["split"] == "val"]["path"])
    assert scored["val_log_loss"] == pytest.approx(summary["val_log_loss"])


def test_reference_refuses_a_split_that_names_missing_files(competition_zip, tmp_path):
    pd.DataFrame({"path": ["train/cat.999.jpg"], "split": ["val"]}).to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(SystemExit, match="not in the zip"):
        reference.main(["--zip", str(competition_zip), "--split", str(tmp_path / "split.csv"),
                        "--out", str(tmp_path / "out"), "--weights", "none", "--image-size", "32"])
    assert not (tmp_path / "out").exists()


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--only", "pipeline,nonsense"])
    assert "unknown section(s) nonsense" in capsys.readouterr().err


def test_the_documented_command_leaves_out_output_plumbing():
    argv = ["--json", "/tmp/r.json", "--keep", "--skip-finetune", "--out=/tmp/B.md", "--only", "pipeline"]
    assert measuring_arguments(argv) == ["--skip-finetune", "--only", "pipeline"]


def test_kit_commands_keep_every_output_in_the_temp_folder(tmp_path):
    cmd = end_to_end.kit_command("train", end_to_end.kit_overrides(tmp_path), [])
    overrides = cmd[cmd.index("--set") + 1]
    for key in ("paths.data_dir", "paths.cache_dir", "paths.runs_dir", "paths.submissions_dir", "paths.submission"):
        assert f"{key}={tmp_path}" in overrides


def test_paired_difference_on_the_same_pictures(tmp_path):
    labels = [0, 1] * 50
    good = [0.1 if y == 0 else 0.9 for y in labels]
    pd.DataFrame({"path": [f"/x/raw/train/{i}.jpg" for i in range(100)], "label": labels, "prob": good}).to_csv(
        tmp_path / "a.csv", index=False)
    pd.DataFrame({"path": [f"train/{i}.jpg" for i in range(100)][::-1], "label": labels[::-1],
                  "prob": [0.5] * 100}).to_csv(tmp_path / "b.csv", index=False)
    d = end_to_end.paired_difference(tmp_path / "a.csv", tmp_path / "b.csv")
    assert d["images"] == 100 and d["mean"] == pytest.approx(0.10536 - 0.69315, abs=1e-4)  # -ln 0.9 - (-ln 0.5)
    assert d["low"] <= d["mean"] <= d["high"] < 0  # clearly better: the interval excludes 0


# ---- section 6, full size: its parsing and rendering on made-up numbers ----------------------------------

def _stage(seconds: float, rss: float = 900.0, anon: float = 700.0, pixels: float = 0.0, feats: float = 0.0,
           **extra) -> dict:
    return {"returncode": 0, "seconds": seconds, "maxrss_mb": rss, "peak_anon_mb": anon, "peak_file_mb": rss - anon,
            "timed_out": False, "log": "x.log", "planned_disk_gb": None,
            "cache": {"pixels_mb": pixels, "features_mb": feats, "probes_mb": 0.1, "other_mb": 0.0,
                      "total_mb": pixels + feats + 0.1}, **extra}


def _steps(*steps) -> list[dict]:
    return [{"name": n, "images": i, "seconds": s, "note": ""} for n, i, s in steps]


def fake_full(fail: str | None = None) -> dict:
    """bench/full_size.py's result at 25,000 + 12,500, as kit's plan.json / timings.json would give it."""
    head_plan = _steps(("decode train", 20000, 100.0), ("decode val", 5000, 25.0), ("features train", 20000, 160.0),
                       ("features val", 5000, 40.0), ("head", 400000, 8.0), ("features val", 5000, 40.0))
    head_took = {"decode train": {"seconds": 110.0, "images": 20000}, "decode val": {"seconds": 26.0, "images": 5000},
                 "features train": {"seconds": 150.0, "images": 20000}, "features val": {"seconds": 140.0,
                                                                                          "images": 10000},
                 "head": {"seconds": 4.0, "images": 400000}}
    tune_plan = _steps(("decode train", 20000, 90.0), ("fine-tune", 20000, 1500.0), ("predict val", 10000, 60.0),
                       ("features test", 1, 30.0))  # a step kit plans but never records
    tune_took = {"decode train": {"seconds": 95.0, "images": 20000}, "fine-tune": {"seconds": 1400.0, "images": 20000},
                 "predict val": {"seconds": 70.0, "images": 10000}, "save": {"seconds": 9.0, "images": 0}}
    submit_plan = _steps(("decode test", 12500, 60.0), ("features test", 25000, 100.0))
    submit_took = {"decode test": {"seconds": 66.0, "images": 12500}, "features test": {"seconds": 98.0,
                                                                                         "images": 25000}}
    stages = {"download": _stage(40.0), "download_again": _stage(1.5, no_work=True), "data": _stage(90.0),
              "data_again": _stage(6.0), "plan_head": _stage(50.0, plan=head_plan + submit_plan),
              "plan_tune": _stage(70.0, plan=tune_plan),
              "train_head": _stage(520.0, rss=3500.0, anon=1200.0, pixels=4900.0, feats=150.0, plan=head_plan,
                                   timings=head_took, run="r1", image_size=256, val_log_loss=0.03),
              "submit_head": _stage(200.0, pixels=7400.0, feats=210.0, plan=submit_plan, timings=submit_took,
                                    test_log_loss=0.05),
              "train_tune": _stage(1800.0, pixels=11200.0, feats=260.0, plan=tune_plan, timings=tune_took,
                                   image_size=224),
              "submit_tune": _stage(150.0, pixels=13100.0, feats=260.0, plan=submit_plan, timings=submit_took)}
    stages["plan_head"]["planned_disk_gb"], stages["plan_tune"]["planned_disk_gb"] = 7.7, 5.8
    if fail:
        stages = {k: v for k, v in stages.items() if list(stages).index(k) <= list(stages).index(fail)}
        stages[fail].update(returncode=1)
    return {"zip": "/r/dogs-vs-cats-redux-kernels-edition.zip", "zip_mb": 1002.6, "stages": stages,
            "failed": f"{fail} failed (exit 1): boom" if fail else None, "images": {"train": 25000, "test": 12500},
            "cache_before_precompute": {"pixels_mb": 0.0, "features_mb": 0.0, "probes_mb": 0.1},
            "quick": False, "rehearsal_build_seconds": None, "measured": {"date": "today", "commit": "abc"}}


def test_plan_steps_are_compared_by_name_with_a_verdict_each():
    plan = _steps(("decode train", 100, 10.0), ("features val", 10, 4.0), ("features val", 10, 4.0),
                  ("decode val", 10, 0.0), ("head", 50, 2.0), ("fine-tune", 100, 30.0), ("predict val", 10, 3.0))
    took = {"decode train": {"seconds": 12.0, "images": 100}, "features val": {"seconds": 6.0, "images": 20},
            "head": {"seconds": 1.0, "images": 50}, "fine-tune": {"seconds": 20.0, "images": 100},
            "extra": {"seconds": 7.0, "images": 0}}
    rows = {r["step"]: r for r in compare_steps(plan, took)}
    assert list(rows) == ["decode train", "features val", "decode val", "head", "fine-tune", "predict val", "extra"]
    assert rows["decode train"]["ratio"] == pytest.approx(10 / 12) and rows["decode train"]["within"] is True
    assert rows["features val"]["estimate"] == 8.0 and rows["features val"]["planned_images"] == 20  # summed
    assert rows["features val"]["within"] is False  # 8 / 6 = 1.33x
    assert rows["fine-tune"]["ratio"] == 1.5 and rows["fine-tune"]["within"] is False
    assert rows["decode val"]["verdict"] == "cached" and rows["head"]["verdict"] == "under 5 s"
    assert rows["predict val"]["verdict"] == "not recorded" and rows["extra"]["verdict"] == "not planned"
    assert all(rows[k]["within"] is None for k in ("decode val", "head", "predict val", "extra"))
    assert compare_steps(None, None) == []


def test_the_full_size_section_renders_its_tables_targets_and_findings():
    built = sections.BUILDERS["full"](fake_full())
    captions = [caption for caption, _, _ in built.tables]
    assert captions[0] == "Per command:" and captions[-1] == "Targets:"
    per_command = built.tables[0][2]
    assert len(per_command) == 10 and per_command[0][3] == f"{37500 / 40:,.0f}"  # images/s of the cold download
    targets = {row.label: row for row in built.tables[-1][2]}
    assert targets["Precompute path from the extracted data: train + submit, cold caches (s)"].met is False  # 720 s
    assert targets["Precompute path peak RSS (ru_maxrss of its largest command)"].met is False  # 3,500 MB
    assert targets["Precompute path peak anonymous memory (sampled)"].met is True
    judged = [row for label, row in targets.items() if label.startswith("Plan vs measured")]
    assert len(judged) == 15 and all(row.target == "0.75x-1.25x" for row in judged)
    stages = [row for row in judged if "the whole stage after its plan" in row.label]
    assert len(stages) == 4  # train and submit of both paths, each its plan's total against timings.json's sum
    val = next(row for row in judged if "precompute train: `features val`" in row.label)
    assert val.ratio == pytest.approx(80 / 140) and val.met is False  # the two same-named plan steps, summed
    text = " ".join(built.findings)
    assert "fine-tune train: `features test`" in text and "never recorded" in text  # kit's naming, reported
    assert f"of {len(stages)} stages" in text and f"of {len(judged) - len(stages)} judged steps" in text
    assert "Recorded but not in the plan: fine-tune train: `save`" in text
    assert "did no work" in text and "the ≤ 10 min target is missed" in text
    assert "the plan said 7.7 GB of new caches, the cache grew by 7.61 GB" in text
    assert "7 would take about 163 min" in text


def test_a_failed_full_size_run_keeps_the_stages_before_it():
    built = sections.BUILDERS["full"](fake_full(fail="train_tune"))
    assert len(built.tables[0][2]) == 9
    assert built.findings[0] == "**Failed**: train_tune failed (exit 1): boom"
    assert {row[0] for row in built.tables[1][2]} == {"precompute"}  # the failed train has no step rows
    totals = [row[0] for row in built.tables[2][2]]
    assert totals == ["precompute"]


def test_full_size_runs_only_when_asked():
    assert "full" not in chosen("") and chosen("full") == ["full"]
    assert chosen("full,pipeline") == ["pipeline", "full"]
    assert parse_args(["--quick", "--only", "full"]).only == "full"


def _meta(quick: bool = False, only=None) -> dict:
    return {"date": "day", "command": "make bench", "quick": quick, "seconds": 60, "only": only,
            "machine": {"cpu": "cpu", "cores": 2, "nproc": 2, "memory_gb": 8.0, "os": "Linux",
                        "versions": {"git_commit": "c"}},
            "data": "synthetic", "weights": "none", "load_start": [1, 1, 1], "load_end": [1, 1, 1]}


def test_a_default_run_keeps_the_full_size_section_and_its_targets(monkeypatch, tmp_path):
    info = {"load_before": [1, 1, 1], "load_after": [1, 1, 1], "seconds": 1.0, "result": {}}
    device = sections.Built(["i"], [("", ["m"], [sections.Row("device row", 1.0, 1.0, 1.0, None, "≥ 1x", True)])],
                            ["f"])
    monkeypatch.setattr(sections, "BUILDERS", {**sections.BUILDERS, "device": lambda r: device})
    out = tmp_path / "BENCHMARKS.md"
    default = {"meta": _meta(), "sections": {"device": info}}
    out.write_text(document.rendered(default, out))
    assert sections.ON_REQUEST["full"] in out.read_text()  # the placeholder, where section 6 goes
    partial = {"meta": _meta(quick=True, only=["full"]),
               "sections": {"full": {**info, "result": fake_full()}}}
    out.write_text(document.rendered(partial, out))
    text = out.read_text()
    assert "## 6. Full size" in text and "QUICK numbers" in text and "- §6 re-measured on day" in text
    assert "| 6 | Precompute path peak RSS" in text and "| 3 | device row" in text
    assert text.index("## 5.") < text.index("## 6.") < text.index("## Method")
    again = document.rendered(default, out)  # a default run: section 6 and its target rows kept as they were
    assert "| 6 | Precompute path peak RSS" in again and "| 3 | device row" in again
    assert sections.ON_REQUEST["full"] not in again and again.count("## 6.") == 1
    assert "Measured on today (kit commit abc)" in again


def test_full_size_helpers(tmp_path):
    cache = tmp_path / "cache"
    (cache / "features").mkdir(parents=True)
    (cache / "probes").mkdir()
    (cache / "train-256px-4-abc.npy").write_bytes(b"\0" * 1_000_000)
    (cache / "features" / "train-original.npy").write_bytes(b"\0" * 200_000)
    (cache / "probes" / "probe.json").write_text("{}")
    sizes = full_size.cache_sizes(cache)
    assert 0.99 <= sizes["pixels_mb"] <= 1.1 and 0.19 <= sizes["features_mb"] <= 0.3 and sizes["other_mb"] == 0
    full_size.clear_cache_but_probes(cache)
    assert [p.name for p in cache.iterdir()] == ["probes"]
    log = tmp_path / "plan.log"
    log.write_text("plan (all): ...\n  disk: new caches need 7.7 GB, 40.1 GB free in /x\n  disk: new caches need "
                   "0.3 GB, 40.1 GB free in /x\n")
    assert full_size.planned_disk_gb(log) == 0.3 and full_size.planned_disk_gb(tmp_path / "none.log") is None
    pd.DataFrame({"id": [1, 2], "label": [0.9, 0.2]}).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame({"id": [2, 1], "label": [0, 1]}).to_csv(tmp_path / "key.csv", index=False)
    expected = -(np.log(0.9) + np.log(0.8)) / 2
    assert full_size.test_log_loss(tmp_path / "s.csv", tmp_path / "key.csv") == pytest.approx(expected)


def test_run_sampled_reports_the_child_anonymous_memory(tmp_path):
    code = "import time; b = bytearray(150 * 2**20); [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; " \
           "time.sleep(1.5)"
    measured = full_size.run_sampled([common.PYTHON, "-c", code], tmp_path / "x.log", common.bench_env(), 60)
    assert measured["returncode"] == 0 and measured["maxrss_mb"] >= 150
    assert measured["peak_anon_mb"] >= 150 and measured["peak_rss_mb"] >= 150
