"""Section 3b of BENCHMARKS.md: Keras on JAX vs Keras on TensorFlow (bench/backend_bench.py's numbers).

    from bench.sections_backend import backend; built = backend(results["sections"]["backend"]["result"])
"""
from __future__ import annotations

from bench.common import ratio
from bench.rows import Built, Row, x


def _mean_rate(runs: list[dict], key: str) -> dict:
    """The mean over a backend's worker processes of their best pass (per_s and per_cpu_s)."""
    rates = [r[key] for r in runs]
    per_cpu = [r["per_cpu_s"] for r in rates if r.get("per_cpu_s")]
    return {"per_s": sum(r["per_s"] for r in rates) / len(rates),
            "per_cpu_s": sum(per_cpu) / len(per_cpu) if per_cpu else None}


def _row(label: str, jax: dict, tf: dict) -> Row:
    return Row(label, jax["per_s"], tf["per_s"], ratio(jax["per_s"], tf["per_s"]),
               ratio(jax.get("per_cpu_s"), tf.get("per_cpu_s")), digits=1)  # JAX's CPU rates are single digits


def backend(r: dict) -> Built:
    tf_runs, jax_runs = r["speed"]["tensorflow"], r["speed"]["jax"]
    first = tf_runs[0]
    rows = {key: _row(label, _mean_rate(jax_runs, key), _mean_rate(tf_runs, key)) for key, label in (
        ("train", "fine-tuning (model.fit, layer-group Adam, augmented stream)"),
        ("predict", f"prediction, kit's engine (`auto`: JAX {jax_runs[0]['engine']}, TensorFlow {first['engine']})"),
        ("predict_keras", "prediction, Keras' own forward pass on both"))}
    built = Built(intro=[
        f"MobileNetV2 (weights {first['weights']}) at {first['image_size']} px, batch {first['batch_size']}: "
        f"{first['rounds']} fine-tuning passes of {first['steps']} batches and {first['rounds']} prediction passes of "
        f"{first['predict_images']} cached images per process, one process per backend in the order TensorFlow, "
        "JAX, JAX, TensorFlow (the best pass of each process, averaged over its two). kit = JAX "
        f"(`{jax_runs[0]['describe']}`, XLA {'on' if jax_runs[0]['jit'] else 'off'}), baseline = TensorFlow "
        f"(XLA {'on' if first['jit'] else 'off'}: the `auto` choices of each)."])
    built.tables.append(("", ["measure", "JAX", "TensorFlow", "ratio", "ratio (CPU time)", "target", "met?"],
                         list(rows.values())))
    score_rows = []
    for name, scores in r.get("scores", {}).items():
        demo = scores["demo"]
        score_rows.append([name, "demo (synthetic, 59 validation images)", f"{demo['val_log_loss']:.4f}",
                           f"{demo['test_log_loss']:.4f}" if demo["test_log_loss"] is not None else "—",
                           f"{demo['seconds']:.0f} s"])
        if "real" in scores:
            real = scores["real"]
            steps = ", ".join(f"{k} {v:.0f} s" for k, v in real["steps"].items())
            score_rows.append([name, f"real mini competition, `{' '.join(r['real_run'])}`",
                               f"{real['val_log_loss']:.4f}", "—", f"{real['seconds']:.0f} s ({steps})"])
    if score_rows:
        built.tables.append(("Scores on each backend (validation: out of fold, after TTA and calibration):",
                             ["backend", "run", "validation log loss", "test log loss", "wall time"], score_rows))
    f = built.findings
    f.append(f"On this CPU JAX fine-tunes at {x(rows['train'].ratio)} TensorFlow's speed "
             f"({x(rows['train'].cpu_ratio)} per CPU-second) and runs Keras' forward pass at "
             f"{x(rows['predict_keras'].ratio)}; through kit's prediction path (whose `auto` engine is "
             f"{first['engine']} on TensorFlow, {jax_runs[0]['engine']} on JAX) it is at {x(rows['predict'].ratio)}.")
    scores = r.get("scores", {})
    if set(scores) == {"tensorflow", "jax"}:
        for run, noise in (("demo", "59 images: differences of several hundredths are noise"),
                           ("real", "600 photos: about 0.004 is noise")):
            if all(run in scores[b] for b in scores):
                jax, tf = scores["jax"][run]["val_log_loss"], scores["tensorflow"][run]["val_log_loss"]
                f.append(f"{'The demo' if run == 'demo' else 'The real run'}: validation log loss {jax:.4f} on JAX, "
                         f"{tf:.4f} on TensorFlow (difference {jax - tf:+.4f}; {noise}).")
    f.append("JAX is for Kaggle's TPU (`kit kernel push --tpu`), where TensorFlow cannot reach the cores.")
    return built
