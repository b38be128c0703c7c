"""Section 1 of BENCHMARKS.md, the input pipeline: its rows and findings from the measured numbers.

    from bench.sections_input import pipeline; built = pipeline(results["sections"]["pipeline"]["result"])
"""
from __future__ import annotations

from bench.common import ratio
from bench.rows import Built, Row, compare, x


# ---- 1. input pipeline --------------------------------------------------------------------------------

def pipeline(r: dict) -> Built:
    s = r["streams"]
    main = compare("Augmented training epoch: kit's cached stream vs the folder loader + the same augmenter",
                   s["kit_fused"], s["keras_fused"], "≥ 2x", 2.0)
    typical = compare("... vs the folder loader + the keras_cv layer chain (a typical script)",
                      s["kit_fused"], s["keras_keras_cv"])
    first = compare("First epoch incl. building the cache vs a folder-loader epoch (same augmenter)",
                    r["first_epoch_total"], s["keras_fused"])
    decode = compare("Decode + resize only, no augmentation: kit's cache builder vs the folder loader",
                     s["kit_decode"], s["keras_plain"])
    plain = compare("No augmentation: kit's cached epoch vs a folder-loader epoch", s["kit_plain"], s["keras_plain"])
    engine = compare("Augmentation engines on kit's cached stream: `fused` vs `keras_cv`", s["kit_fused"],
                     s["kit_keras_cv"], "≥ 2x (kit/augment.py says several x)", 2.0)
    rate, per_cpu = s["kit_fused"]["per_s"], s["kit_fused"]["per_cpu_s"]
    cores = r.get("nproc", 2)
    issue = [Row("Augmented 224-px images/s on this machine (kit's cached epoch)", rate, "—", target="≥ 300 img/s",
                 met=rate >= 300),
             Row(f"Augmented 224-px images/s projected to {cores} idle cores ({cores} x images per CPU-second)",
                 cores * per_cpu, "—", target="≥ 300 img/s", met=cores * per_cpu >= 300),
             Row("Cached epoch vs the first epoch (incl. cache build): seconds, ratio = first / cached",
                 s["kit_fused"]["seconds"], r["first_epoch_total"]["seconds"],
                 ratio(r["first_epoch_total"]["seconds"], s["kit_fused"]["seconds"]), target="> 1x",
                 met=r["first_epoch_total"]["seconds"] > s["kit_fused"]["seconds"], unit="s", digits=1)]
    built = Built(intro=[f"{r['images']:,} pictures ({r.get('pictures', '')}), {r['image_size']} px, batch "
                         f"{r['batch_size']}, {r['repeats']} passes of each variant. Baseline: "
                         "`keras.utils.image_dataset_from_directory` over cat/ and dog/ folders of symlinks, with "
                         "kit's own augmenter mapped over its batches (so only the input pipeline differs)."])
    built.tables.append(("", ["measure", "kit", "baseline", "ratio", "ratio (CPU time)", "target", "met?"],
                         [main, typical, first, decode, plain, engine]))
    built.tables.append(("Issue 2's targets:", ["measure", "kit", "baseline", "ratio", "ratio (CPU time)", "target",
                                                 "met?"], issue))
    parts = r.get("augment_parts", {})
    if parts:
        built.tables.append(("Where an augmented epoch's time goes (each part alone on an in-memory batch):",
                             ["augmentation", "img/s", "img per CPU-second"],
                             [[name, f"{v['per_s']:.0f}", f"{v['per_cpu_s']:.0f}"] for name, v in parts.items()]))
    f = built.findings
    warp = parts.get("fused: flip + rotation + zoom warp only", {}).get("per_cpu_s")
    f.append(f"kit's cached augmented epoch is {x(main.ratio)} the folder loader's ({x(main.cpu_ratio)} per "
             f"CPU-second): the ≥ 2x target is {'met' if main.met else 'missed'}.")
    if not main.met:
        cap = 1 + per_cpu / s["keras_plain"]["per_cpu_s"]  # (decode + augment) / augment, in CPU time per image
        f.append(f"Reason: without augmentation the cached epoch is {x(plain.ratio)} the loader's, so decoding is "
                 f"gone; what is left is the augmentation both sides pay ({per_cpu:.0f} augmented images per "
                 f"CPU-second{f', the affine warp alone {warp:.0f}' if warp else ''}). With decoding at "
                 f"{s['keras_plain']['per_cpu_s']:.0f} images per CPU-second, removing it entirely can give at most "
                 f"{cap:.2f}x on this CPU: the 2x target needs augmentation cheaper than decoding.")
    nearest = parts.get("alternative: the same warp, nearest-neighbour", {}).get("per_cpu_s")
    crop = parts.get("alternative: flip + zoom as one crop_and_resize (no rotation)", {}).get("per_cpu_s")
    if not main.met and nearest and crop and warp:
        f.append(f"Cheaper candidates measured alongside: the same warp with nearest-neighbour sampling does "
                 f"{nearest:.0f} images per CPU-second, flip + zoom as one `tf.image.crop_and_resize` {crop:.0f} "
                 f"(vs the bilinear warp's {warp:.0f}).")
    f.append(f"Against a typical script (the folder loader + KerasCV's layer chain) kit is {x(typical.ratio)}. "
             f"The `fused` engine is {x(engine.ratio)} the `keras_cv` chain.")
    resize = r.get("kit_resize", {})
    if (decode.cpu_ratio or 1) < 0.9:
        why = (" it resizes with antialiasing, Keras' loader plain bilinear" if resize.get("antialias") else "")
        f.append(f"kit's decoder does {x(decode.cpu_ratio)} the images per CPU-second of Keras' loader:{why} "
                 "(paid once per image, for the cache).")
    elif decode.cpu_ratio:
        f.append(f"kit's decoder does {x(decode.cpu_ratio)} the images per CPU-second of Keras' loader (both decode "
                 f"with tf.io and resize {resize.get('method', 'bilinear')}"
                 f"{'' if resize.get('antialias') else ', no antialiasing'}).")
    f.append(f"Issue 2: {rate:.0f} augmented img/s measured ({cores * per_cpu:.0f} projected to {cores} idle cores) "
             f"against ≥ 300: {'met' if issue[0].met else ('met only on idle cores' if issue[1].met else 'missed')}; "
             f"the cached epoch is {x(issue[2].ratio)} faster than the first.")
    return built


def cache(r: dict) -> Built:
    rows, by_mode = [], {m["mode"]: m for m in r["modes"]}
    for mode, m in by_mode.items():
        mem, proc, (first, *_, last) = m.get("memory", {}), m.get("process", {}), m["epochs"]
        build = "— (nothing kept)" if mode == "none" else f"{m['load']['seconds']:.1f} s"
        rows.append([f"`{mode}`", build, f"{first['per_s']:.0f}", f"{last['per_s']:.0f}", f"{last['per_cpu_s']:.0f}",
                     f"{mem.get('peak_anon_mb', 0):.0f}", f"{mem.get('peak_file_mb', 0):.0f}",
                     f"{proc.get('maxrss_mb', 0):.0f}"])
    built = Built(intro=[f"{r['images']:,} pictures at {r['image_size']} px, each setting in a fresh process: "
                         "`load_images` (the cache build), then two augmented epochs."])
    built.tables.append(("", ["data.cache", "load / build", "epoch 1 img/s", "epoch 2 img/s",
                              "epoch 2 img per CPU-s", "peak anon MB", "peak file-backed MB", "ru_maxrss MB"], rows))
    disk, memory, none = (by_mode.get(k) for k in ("disk", "memory", "none"))
    if disk and memory and none:
        d, m, n = (v["epochs"][-1]["per_cpu_s"] for v in (disk, memory, none))
        anon = lambda v: v.get("memory", {}).get("peak_anon_mb", 0)  # noqa: E731
        built.findings.append(
            f"Per CPU-second, a cached epoch from disk does {x(ratio(d, m))} the work of one from memory and "
            f"{x(ratio(d, n))} that of decoding every epoch (`none`: wall-clock figures flatter `none` on a loaded "
            f"machine, whose extra decoding threads win it a larger share of the cores). `memory` holds "
            f"{anon(memory) - anon(disk):.0f} MB more anonymous memory than `disk` for these {r['images']:,} pictures, "
            "growing with the data set (25,000 pictures at 224 px: 3.7 GB), while `disk` keeps the pixels in the page "
            "cache, which the kernel can reclaim. Hence the default `disk`.")
    return built


def parallelism(r: dict) -> Built:
    settings = r["settings"]
    auto = settings["autotune"]
    rows = []
    for name, v in settings.items():
        cells = [f"`{name}`"]
        for kind in ("decode", "augmented"):
            rate = v[kind]
            spread = f"{min(rate['all_per_s']):.0f}-{max(rate['all_per_s']):.0f}" if rate.get("all_per_s") else ""
            cells += [f"{rate['per_s']:.0f} ({spread})", x(ratio(rate["per_s"], auto[kind]["per_s"])),
                      x(ratio(rate["per_cpu_s"], auto[kind]["per_cpu_s"]))]
        rows.append(cells)
    built = Built(intro=[f"{r['images']:,} pictures; `num_parallel_calls` and prefetch depth of kit's maps set to "
                         "each value (kit uses AUTOTUNE), the settings taking turns."])
    built.tables.append(("", ["setting", "decode img/s (all passes)", "vs AUTOTUNE", "per CPU-s vs AUTOTUNE",
                              "augmented img/s (all passes)", "vs AUTOTUNE", "per CPU-s vs AUTOTUNE"], rows))
    for kind in ("decode", "augmented"):
        best = max(settings, key=lambda k: settings[k][kind]["per_s"])
        share = ratio(auto[kind]["per_s"], settings[best][kind]["per_s"])
        passes = [p for v in settings.values() for p in v[kind].get("all_per_s", [])]
        noisy = bool(passes) and min(passes) < 0.8 * max(passes)
        built.findings.append(
            f"{kind.capitalize()}: " + ("AUTOTUNE is the fastest setting." if best == "autotune" else
                                        f"the fastest median is `{best}`; AUTOTUNE reaches {x(share)} of it"
                                        + (" — passes of one setting differ more than that on this loaded machine, "
                                           "so this is noise, not a reason to fix the value." if noisy else ".")))
    return built
