"""Section 6 of BENCHMARKS.md, full size: per-stage time, memory and disk, and `kit plan`'s estimates step by step.

    from bench.sections_full import full; built = full(results["sections"]["full"]["result"])

The measuring is bench/full_size.py. A plan step is judged when it took at least NOISE_S seconds: the
estimate / measured ratio must lie in [LOW, HIGH]. Same-named steps of one plan are summed, as timings.json
sums the blocks of one name.
"""
from __future__ import annotations

from bench.full_size import STAGES
from bench.rows import Built, Row, x

NOISE_S = 5.0  # shorter steps are shown, not judged: start-up noise is seconds
LOW, HIGH = 0.75, 1.25
PRECOMPUTE_S = 600.0
RSS_MB = 3 * 1024.0  # 3 GB of ru_maxrss (MiB)
PATHS = {"precompute": ("train_head", "submit_head"), "fine-tune": ("train_tune", "submit_tune")}
PLANS = {"precompute": "plan_head", "fine-tune": "plan_tune"}


def planned(plan: list[dict] | None) -> dict[str, dict]:
    """A plan's steps by name, in order, same-named steps summed."""
    steps: dict[str, dict] = {}
    for s in plan or []:
        entry = steps.setdefault(s["name"], {"seconds": 0.0, "images": 0})
        entry["seconds"] += float(s["seconds"])
        entry["images"] += int(s.get("images") or 0)
    return steps


def compare_steps(plan: list[dict] | None, timings: dict | None) -> list[dict]:
    """Each step: estimate vs measured seconds, ratio = estimate / measured, and a verdict; the plan's steps in
    its order, then recorded steps the plan did not name."""
    est, timings = planned(plan), timings or {}
    rows = []
    for name in list(est) + [n for n in timings if n not in est]:
        e, m = est.get(name), timings.get(name)
        estimate, measured = (e or {}).get("seconds"), (m or {}).get("seconds")
        ratio = estimate / measured if estimate is not None and measured else None
        if e is None:
            verdict = "not planned"
        elif m is None:
            verdict = "cached" if estimate == 0 else "not recorded"
        else:
            verdict = "judged" if measured >= NOISE_S else "under 5 s"
        rows.append({"step": name, "planned_images": (e or {}).get("images"), "images": (m or {}).get("images"),
                     "estimate": estimate, "measured": measured, "ratio": ratio, "verdict": verdict,
                     "within": LOW <= ratio <= HIGH if verdict == "judged" and ratio is not None else None})
    return rows


def _s(value) -> str:
    return "—" if value is None else f"{value:,.1f} s"


def _n(value) -> str:
    return "—" if value is None else f"{value:,}"


def _mb(value) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _rate(stage: dict, images: dict, key: str) -> str:
    """Images per second of a stage: every file for download/data, labelled ones for train, test for submit."""
    if key == "download_again":  # nothing extracted: no rate
        return "—"
    n = {"download": "all", "data": "all", "train": "train", "submit": "test"}.get(key.split("_")[0])
    count = sum(images.values()) if n == "all" else images.get(n) if n else None
    return f"{count / stage['seconds']:,.0f}" if count and stage.get("seconds") else "—"


def stage_rows(r: dict) -> list[list[str]]:
    images, rows = r.get("images", {}), []
    for key, (path, label) in STAGES.items():
        st = r["stages"].get(key)
        if st is None:
            continue
        stepped = key.startswith(("train", "submit"))
        estimate = sum(s["seconds"] for s in st.get("plan") or []) if stepped else None
        outside = st["seconds"] - sum(v["seconds"] for v in (st.get("timings") or {}).values()) if stepped else None
        cache = st.get("cache", {})
        rows.append([path, label, _s(st["seconds"]), _rate(st, images, key), _mb(st.get("maxrss_mb")),
                     _mb(st.get("peak_anon_mb")), _mb(st.get("peak_file_mb")),
                     f"{_mb(cache.get('pixels_mb'))} + {_mb(cache.get('features_mb'))}", _s(outside),
                     _s(estimate), x(estimate / (st["seconds"] - outside) if estimate and st["seconds"] > outside
                                     else None)])
    return rows


def _verdict(row: dict) -> str:
    if row["within"] is not None:
        return "**yes**" if row["within"] else "**no**"
    return {"under 5 s": "— (under 5 s)", "cached": "— (cached: 0 s planned)"}.get(row["verdict"], row["verdict"])


def step_table(r: dict) -> tuple[list[list[str]], list[Row], list[str], list[str]]:
    """(table rows, target rows of the judged steps, planned-but-not-recorded, recorded-but-not-planned)."""
    table, targets, unrecorded, unplanned = [], [], [], []
    for path, keys in PATHS.items():
        for key in keys:
            st = r["stages"].get(key)
            if not st or st.get("returncode") != 0:
                continue
            stage = key.split("_")[0]
            planned_total = sum(float(s["seconds"]) for s in st.get("plan") or [])
            took = sum(v["seconds"] for v in (st.get("timings") or {}).values())  # from its plan's print to its end
            if planned_total and took:
                ratio = planned_total / took
                targets.append(Row(f"Plan vs measured, {path} {stage}: the whole stage after its plan (s; ratio = "
                                   f"estimate / measured)", took, planned_total, ratio, None, "0.75x-1.25x",
                                   LOW <= ratio <= HIGH, "s", 1))
            for row in compare_steps(st.get("plan"), st.get("timings")):
                where = f"{path} {stage}: `{row['step']}`"
                table.append([path, stage, f"`{row['step']}`", f"{_n(row['planned_images'])} / {_n(row['images'])}",
                              _s(row["estimate"]), _s(row["measured"]), x(row["ratio"]), _verdict(row)])
                if row["verdict"] == "judged":
                    targets.append(Row(f"Plan vs measured, {where} (s; ratio = estimate / measured)",
                                       row["measured"], row["estimate"], row["ratio"], None, "0.75x-1.25x",
                                       row["within"], "s", 1))
                elif row["verdict"] == "not recorded":
                    unrecorded.append(where)
                elif row["verdict"] == "not planned":
                    unplanned.append(where)
    return table, targets, unrecorded, unplanned


def path_totals(r: dict) -> tuple[list[list[str]], dict]:
    """Per path: `kit plan`'s total and disk before it, against the measured train + submit and cache growth."""
    rows, totals, before = [], {}, r.get("cache_before_precompute", {})
    for path, keys in PATHS.items():
        stages = [r["stages"].get(k) for k in keys]
        if not all(s and s.get("returncode") == 0 for s in stages):
            continue
        plan = r["stages"].get(PLANS[path], {})
        estimate = sum(s["seconds"] for s in plan.get("plan") or []) or None
        seconds = sum(s["seconds"] for s in stages)
        start = before if path == "precompute" else r["stages"]["submit_head"]["cache"]
        grown = sum(stages[-1]["cache"][k] - start.get(k, 0.0) for k in ("pixels_mb", "features_mb")) / 1e3
        disk = plan.get("planned_disk_gb")
        totals[path] = {"seconds": seconds, "peak_rss_mb": max(s["maxrss_mb"] for s in stages),
                        "peak_anon_mb": max(s.get("peak_anon_mb", 0.0) for s in stages), "disk_gb": grown,
                        "planned_disk_gb": disk, "estimate": estimate,
                        **{k: stages[-1].get(k) for k in ("test_log_loss", "val_log_loss")}}
        rows.append([path, _s(estimate), _s(seconds), x(estimate / seconds if estimate else None),
                     "—" if disk is None else f"{disk:.1f} GB", f"{grown:.2f} GB",
                     x(disk / grown if disk is not None and grown > 0 else None),
                     "—" if totals[path]["test_log_loss"] is None else f"{totals[path]['test_log_loss']:.4f}"])
    return rows, totals


def _intro(r: dict) -> list[str]:
    images, m = r.get("images", {}), r.get("measured", {})
    built = (f"built for this run from {r.get('source')} in {r['rehearsal_build_seconds']:.0f} s"
             if r.get("rehearsal_build_seconds") is not None else "from KIT_REHEARSAL")
    head = (r["stages"].get("train_head") or {}).get("image_size")
    tune = (r["stages"].get("train_tune") or {}).get("image_size")
    return [f"{images.get('train', 0):,} train and {images.get('test', 0):,} test images: the rehearsal zip "
            f"{r['zip']} ({r['zip_mb']:,.0f} MB, {built}; bench/rehearsal.py). Measured on {m.get('date', '?')} "
            f"(kit commit {m.get('commit', '?')}). Every command is a subprocess of kit with "
            "configs/dogs-vs-cats-redux.yaml, run one at a time; the precompute path (head-only, at "
            f"{head or '?'} px) starts from cold caches (only <cache>/probes kept), the fine-tune path (one epoch, "
            f"at {tune or '?'} px) after it. Peak RSS = ru_maxrss (MB, the command and its reaped children; never "
            "below the bench process's own peak, which Linux carries into a child across exec); anon "
            "and file-backed = the kit process's own peaks sampled every 0.5 s (a memory-mapped pixel cache "
            "counts in RSS as file-backed pages the kernel can drop). Cache = MB on disk after the command "
            "(pixel caches + feature arrays). Before its plan = wall time minus timings.json's steps (which run from "
            "the plan's print to the stage's end, its untimed saving, writing and report booked as `writing`): "
            "Python and TensorFlow start-up, the index check, the plan itself; spent before a plan can be shown. "
            "The plan's estimate is compared with the time after it."]


def full(r: dict) -> Built:
    built = Built(intro=_intro(r))
    built.tables.append(("Per command:", ["path", "command", "wall time", "images/s", "peak RSS MB", "peak anon MB",
                                          "peak file-backed MB", "cache after (pixels + features, MB)",
                                          "before its plan", "its plan's estimate", "estimate / after its plan"],
                         stage_rows(r)))
    table, step_targets, unrecorded, unplanned = step_table(r)
    built.tables.append(("Each step: the stage's own plan (plan.json; the submission's .json) against what it took "
                         "(timings.json); steps under 5 s are shown, not judged:",
                         ["path", "stage", "step", "images (plan / measured)", "estimate", "measured",
                          "estimate / measured", "within 25%?"], table))
    rows, totals = path_totals(r)
    built.tables.append(("`kit plan` before each path (after `data`) against the path's train + submit:",
                         ["path", "`kit plan` total", "measured train + submit", "estimate / measured",
                          "disk the plan said", "cache growth measured", "plan / measured", "test log loss"], rows))
    targets = []
    pre = totals.get("precompute")
    if pre:
        targets += [Row("Precompute path from the extracted data: train + submit, cold caches (s)", pre["seconds"],
                        "—", target="≤ 600 s", met=pre["seconds"] <= PRECOMPUTE_S, unit="s"),
                    Row("Precompute path peak RSS (ru_maxrss of its largest command)", pre["peak_rss_mb"], "—",
                        target="≤ 3 GB (3,072 MB)", met=pre["peak_rss_mb"] <= RSS_MB, unit="MB"),
                    Row("Precompute path peak anonymous memory (sampled)", pre["peak_anon_mb"], "—",
                        target="≤ 3 GB (3,072 MB)", met=pre["peak_anon_mb"] <= RSS_MB, unit="MB")]
    targets += step_targets
    if targets:
        built.tables.append(("Targets:", ["measure", "measured", "estimate / baseline", "ratio", "ratio (CPU time)",
                                          "target", "met?"], targets))
    built.findings = findings(r, totals, step_targets, unrecorded, unplanned)
    return built


def findings(r: dict, totals: dict, steps: list[Row], unrecorded: list[str], unplanned: list[str]) -> list[str]:
    f, st = [], r["stages"]
    if r.get("failed"):
        f.append(f"**Failed**: {r['failed']}")
    again, data_again = st.get("download_again"), st.get("data_again")
    if again and data_again:
        f.append(f"A second `download` took {again['seconds']:.1f} s and "
                 f"{'did no work' if again.get('no_work') else 'did NOT say it had nothing to do'}; a second "
                 f"`data` {data_again['seconds']:.1f} s against {st['data']['seconds']:.1f} s cold.")
    pre = totals.get("precompute")
    if pre:
        data = st["data"]["seconds"]
        f.append(f"The precompute path takes {pre['seconds']:.0f} s from the extracted data ({pre['seconds'] / 60:.1f} "
                 f"min; {(pre['seconds'] + data) / 60:.1f} min with the cold `data` stage): the ≤ 10 min target is "
                 f"{'met' if pre['seconds'] <= PRECOMPUTE_S else 'missed'}. Its peak RSS is "
                 f"{pre['peak_rss_mb']:,.0f} MB, "
                 f"anonymous {pre['peak_anon_mb']:,.0f} MB (≤ 3 GB: "
                 f"{'met' if max(pre['peak_rss_mb'], pre['peak_anon_mb']) <= RSS_MB else 'missed'}).")
    for kind, rows in (("stages", [s for s in steps if "whole stage" in s.label]),
                       ("judged steps", [s for s in steps if "whole stage" not in s.label])):
        bad = [f"{row.label.split(', ', 1)[1].split(' (s;')[0]} {x(row.ratio)}" for row in rows if not row.met]
        if rows:
            f.append(f"The plan is within 25% on {sum(1 for row in rows if row.met)} of {len(rows)} {kind}"
                     + (f"; off: {'; '.join(bad)}." if bad else "."))
    if unrecorded:
        f.append(f"Planned with a time but never recorded in timings (a step-name mismatch in kit, or a step "
                 f"that did not run): {', '.join(unrecorded)}.")
    if unplanned:
        f.append(f"Recorded but not in the plan: {', '.join(unplanned)}.")
    for path, t in totals.items():
        if t["planned_disk_gb"] is not None:
            f.append(f"Disk, {path}: the plan said {t['planned_disk_gb']:.1f} GB of new caches, the cache grew by "
                     f"{t['disk_gb']:.2f} GB.")
    tune = (st.get("train_tune") or {}).get("timings") or {}
    if "fine-tune" in tune:
        epoch = tune["fine-tune"]["seconds"]
        f.append(f"One fine-tune epoch took {epoch / 60:.1f} min: the config's 7 would take about "
                 f"{7 * epoch / 60:.0f} min on this machine.")
    return [s for s in f if s]
