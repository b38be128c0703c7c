"""`make bench`: every speed claim kit makes, measured side by side with a baseline, into BENCHMARKS.md.

    .venv/bin/python bench/run.py [--quick] [--skip-finetune] [--only pipeline,features] [--keep]
    make bench [QUICK=1] [BENCH_ARGS="--skip-finetune"]

With KIT_REAL_COMPETITION (the competition zip) the pictures are real photos and section 4 (end to
end) runs; with KIT_KERAS_WEIGHTS (a folder of Keras weight files, copied into a temporary
KERAS_HOME) MobileNetV2 uses ImageNet weights. Section 6 (full size, bench/full_size.py, ~50 min) runs only
when asked: `--only full`. Everything is written under a temporary folder that
is deleted at the end (--keep keeps it); only BENCHMARKS.md is written into the project. A partial run
(--only) replaces just its sections (and their rows in "Targets at a glance") in the existing document and
notes when they were re-measured: the other sections keep their numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make kit and bench importable

from bench import common, document, images  # noqa: E402
from bench.common import load, run_worker  # noqa: E402
from bench.document import measuring_arguments, rendered  # noqa: E402

SECTIONS = ("pipeline", "cache", "parallelism", "features", "device", "backend", "end_to_end", "scaling")
ON_REQUEST = tuple(document.S.ON_REQUEST)  # ("full",): only `--only full` runs it, never a default run

# Many short passes taking turns rather than a few long ones: other jobs' load changes by the minute here.
FULL = {"pipeline_images": 600, "repeats": 5, "cache_images": 1000, "parallel_images": 400, "parallel_repeats": 4,
        "feature_images": 320, "feature_repeats": 4, "image_size": 224, "batch_size": 32,
        "device": {"image_size": 224, "batch_size": 8, "max_steps": 3, "budget_seconds": 45.0}, "device_timeout": 480,
        "distribute": {"image_size": 128, "batch_size": 16, "steps": 6, "rounds": 16},
        "backend": {"image_size": 224, "batch_size": 32, "steps": 4, "rounds": 3, "predict_images": 256},
        "scaling": [1000, 2000, 4000, 8000], "scaling_unique": 400, "scaling_picture": 256, "timeout": 1800}
QUICK = {"pipeline_images": 64, "repeats": 1, "cache_images": 64, "parallel_images": 64, "parallel_repeats": 1,
         "feature_images": 32, "feature_repeats": 1, "image_size": 224, "batch_size": 16,
         "device": {"image_size": 64, "batch_size": 4, "max_steps": 1, "budget_seconds": 5.0}, "device_timeout": 240,
         "distribute": {"image_size": 32, "batch_size": 4, "steps": 1, "rounds": 2},
         "backend": {"image_size": 64, "batch_size": 8, "steps": 1, "rounds": 1, "predict_images": 16},
         "scaling": [64, 128], "scaling_unique": 16, "scaling_picture": 128, "timeout": 600}


class Bench:
    """One bench run: its settings, temporary folder, pictures and results."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.size = args, dict(QUICK if args.quick else FULL)
        if args.scaling_sizes:
            self.size["scaling"] = sorted(int(n) for n in args.scaling_sizes.split(","))
        self.temporary = args.workdir is None  # a folder the user named is never deleted
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="kit-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.real_zip = _env_path("KIT_REAL_COMPETITION", is_file=True)
        self.keras_home = self._keras_home()
        self.weights = "imagenet" if self.keras_home else "none"
        self.results = {"meta": {}, "sections": {}}
        self._photos: list[Path] | None = None
        self.max_load = 0.0

    def _keras_home(self) -> str | None:
        source = _env_path("KIT_KERAS_WEIGHTS", is_file=False)
        if source is None:
            return None
        home = self.work / "keras-home"  # a copy: Keras may write into its cache folder, never into the source
        shutil.copytree(source, home / "models", dirs_exist_ok=True)
        return str(home)

    def photos(self, n: int) -> list[str]:
        """n pictures, half cats half dogs: real train photos if there are some, else synthetic ~500x375 JPEGs."""
        if self._photos is None:
            if self.real_zip:
                self._photos = images.real_train_photos(self.real_zip, self.work / "photos")
            else:
                most = max(self.size[k] for k in ("pipeline_images", "cache_images", "feature_images"))
                self._photos = images.synthetic_photos(self.work / "photos" / "train", most)
        return [str(p) for p in images.take_balanced(self._photos, n)]

    def pictures_label(self) -> str:
        if self.real_zip:
            return f"real photos from {self.real_zip.name} (train.zip)"
        return "synthetic photo-like 500x375 JPEGs (set KIT_REAL_COMPETITION for real photos)"

    def worker(self, job: str, args: dict, timeout: float | None = None, extra_env: dict | None = None) -> dict:
        return run_worker(job, args, self.work / "jobs", self.keras_home, timeout or self.size["timeout"], extra_env)

    # ---- sections -------------------------------------------------------------------------------

    def pipeline(self) -> dict:
        from bench.pipeline_bench import sizes_of

        files = self.photos(self.size["pipeline_images"])
        folder = images.class_folders([Path(f) for f in files], self.work / "class-folders")
        result = self.worker("pipeline", {"files": files, "class_dir": str(folder), "work": str(self.work),
                                          "image_size": self.size["image_size"], "batch_size": self.size["batch_size"],
                                          "repeats": self.size["repeats"]})
        sizes = sizes_of(files)
        result.update(nproc=common.nproc(), pictures=f"mean {sizes['mean_width']}x{sizes['mean_height']}")
        return result

    def cache(self) -> dict:
        files = self.photos(self.size["cache_images"])
        sizes = {"image_size": self.size["image_size"], "batch_size": self.size["batch_size"]}
        modes = [self.worker("cache_mode", {"files": files, "work": str(self.work), "mode": mode, **sizes})
                 for mode in ("disk", "memory", "none")]
        shutil.rmtree(self.work / "cache-disk", ignore_errors=True)
        return {"images": len(files), "image_size": self.size["image_size"], "modes": modes}

    def parallelism(self) -> dict:
        files = self.photos(self.size["parallel_images"])
        return self.worker("parallelism", {"files": files, "work": str(self.work),
                                           "image_size": self.size["image_size"], "batch_size": self.size["batch_size"],
                                           "repeats": self.size["parallel_repeats"]})

    def features(self) -> dict:
        files = self.photos(self.size["feature_images"])
        result = self.worker("features", {"files": files, "work": str(self.work), "image_size": self.size["image_size"],
                                          "batch_size": self.size["batch_size"], "weights": self.weights,
                                          "repeats": self.size["feature_repeats"]})
        result["nproc"] = common.nproc()
        return result

    def device(self) -> dict:
        settings = {"xla_off_float32": ("false", "false"), "xla_on_float32": ("true", "false"),
                    "xla_off_mixed": ("false", "true")}
        runs = {name: self._timed_worker("train_step", {"jit_compile": jit, "mixed_precision": mixed,
                                                         **self.size["device"]})
                for name, (jit, mixed) in settings.items()}
        distribute = self._timed_worker("distribute_fit", self.size["distribute"])  # train.distribute auto vs none
        return {"runs": runs, "distribute": distribute,
                **{k: self.size["device"][k] for k in ("image_size", "batch_size")}}

    def _timed_worker(self, job: str, args: dict) -> dict:
        """A device job, or {"timed_out": True} when it cannot finish within the device time limit."""
        timeout = self.size["device_timeout"]
        try:
            return self.worker(job, args, timeout=timeout)
        except RuntimeError as error:
            if "timed out" not in str(error):
                raise
            return {"timed_out": True, "timeout": timeout}

    def backend(self) -> dict:
        """JAX vs TensorFlow: speed workers in the order TF, JAX, JAX, TF; the demo and a short real run on each."""
        from bench import backend_bench

        args = {**self.size["backend"], "weights": self.weights}
        speed = {name: [] for name in backend_bench.BACKENDS}
        for name in ("tensorflow", "jax", "jax", "tensorflow"):
            speed[name].append(self.worker("backend_speed", args, extra_env=backend_bench.backend_vars(name)))
        scores = {}
        if not self.args.quick:
            for name in backend_bench.BACKENDS:
                scores[name] = {"demo": backend_bench.demo_score(self.work / "backend", name, self.size["timeout"])}
                if self.real_zip and self.keras_home:
                    scores[name]["real"] = backend_bench.real_score(self.real_zip, self.work / "backend",
                                                                    self.keras_home, name, self.size["timeout"])
        return {"speed": speed, "scores": scores, "real_run": backend_bench.REAL_RUN}

    def backend_skip_reason(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            return "JAX is not installed in this environment: `make venv-jax`, then `--only backend`."
        return None

    def end_to_end(self) -> dict:
        from bench import end_to_end

        return end_to_end.run_all(self.real_zip, self.work / "e2e", self.keras_home,
                                  finetune=not self.args.skip_finetune)

    def end_to_end_skip_reason(self) -> str | None:
        if self.args.quick:
            return "a quick run (`--quick`) never trains end to end."
        if not self.real_zip or not self.keras_home:
            return ("needs the real competition and ImageNet weights: set KIT_REAL_COMPETITION (the competition zip) "
                    "and KIT_KERAS_WEIGHTS (a folder of Keras weight files).")
        return None

    def full(self) -> dict:
        from bench import full_size

        return full_size.section(self)

    def full_skip_reason(self) -> str | None:
        from bench.full_size import skip_reason

        return skip_reason(self.keras_home)

    def scaling(self) -> dict:
        from bench.scaling import make_raw

        unique = images.synthetic_photos(self.work / "scaling-unique", self.size["scaling_unique"],
                                         (self.size["scaling_picture"],) * 2, seed=7)
        points = []
        for n in self.size["scaling"]:
            base = self.work / f"scaling-{n}"
            make_raw(base / "data", unique, n)
            points.append(self.worker("scaling", {"n": n, "data_dir": str(base / "data"), "work": str(base),
                                                  "image_size": self.size["image_size"],
                                                  "batch_size": self.size["batch_size"]}))
            shutil.rmtree(base, ignore_errors=True)  # an 8k-picture cache is over a GB
        return {"points": points, "image_size": self.size["image_size"], "picture_size": self.size["scaling_picture"]}

    # ---- running --------------------------------------------------------------------------------

    def run_section(self, name: str) -> None:
        skip = getattr(self, f"{name}_skip_reason", lambda: None)()
        info = {"load_before": load()}
        self.max_load = max(self.max_load, info["load_before"][0])
        print(f"bench: {name} (load {info['load_before'][0]})", flush=True)
        started = time.perf_counter()
        if skip:
            info["skipped"] = skip
        else:
            try:
                info["result"] = getattr(self, name)()
            except Exception as error:  # noqa: BLE001 — one broken section must not lose the others' numbers
                traceback.print_exc()
                info["error"] = f"{type(error).__name__}: {error}"[:1500]
        info.update(seconds=time.perf_counter() - started, load_after=load())
        self.max_load = max(self.max_load, info["load_after"][0])
        self.results["sections"][name] = info
        print(f"bench: {name} done in {info['seconds']:.0f} s{' (FAILED)' if 'error' in info else ''}", flush=True)


def _env_path(name: str, is_file: bool) -> Path | None:
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value)
    if not (path.is_file() if is_file else path.is_dir()):
        sys.exit(f"error: {name}={value} is not a {'file' if is_file else 'folder'}: fix or unset it")
    return path


def chosen(only: str) -> list[str]:
    """The sections to run, in document order: those `--only` names, else every one but ON_REQUEST's."""
    names = only.split(",") if only else SECTIONS
    return [s for s in SECTIONS + ON_REQUEST if s in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (still writes the document)")
    parser.add_argument("--skip-finetune", action="store_true", help="leave out kit's fine-tune path (~10-13 min)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated sections: {','.join(SECTIONS + ON_REQUEST)} (the document's others "
                             f"are kept; {','.join(ON_REQUEST)} runs only when named here)")
    parser.add_argument("--out", default=str(common.ROOT / "BENCHMARKS.md"), help="the document to write")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--workdir", default=None, help="temporary folder (default: a new one under the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--scaling-sizes", default="", help="image counts for section 5, e.g. 1000,2000,4000,8000")
    parser.add_argument("--from-json", default=None, metavar="RESULTS",
                        help="measure nothing: rewrite the document from a results.json saved by --json")
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.only.split(","))) - set(SECTIONS + ON_REQUEST)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS + ON_REQUEST)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from kit.fsutil import write_text_atomic

    args = parse_args(argv)
    if args.from_json:
        write_text_atomic(args.out, rendered(json.loads(Path(args.from_json).read_text()), Path(args.out)))
        print(f"bench: wrote {args.out} from {args.from_json}")
        return 0
    bench = Bench(args)
    started, start_load = time.perf_counter(), load()
    print(f"bench: working in {bench.work}", flush=True)
    try:
        for name in chosen(args.only):
            bench.run_section(name)
        command = "make bench" + (" QUICK=1" if args.quick else "")
        extra = " ".join(shlex.quote(a) for a in measuring_arguments(argv if argv is not None else sys.argv[1:]))
        bench.results["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "command": command + (f" BENCH_ARGS=\"{extra}\"" if extra else ""),
            "quick": args.quick, "machine": common.machine(), "data": bench.pictures_label(),
            "weights": "ImageNet (KIT_KERAS_WEIGHTS)" if bench.keras_home else "none (random init: same speed)",
            "load_start": start_load, "load_end": load(), "load_max": bench.max_load,
            "seconds": time.perf_counter() - started,
            "only": chosen(args.only) if args.only else []}
        text = json.dumps(bench.results, indent=2, default=str)
        (bench.work / "results.json").write_text(text)
        if args.json:
            write_text_atomic(args.json, text)
        write_text_atomic(args.out, rendered(bench.results, Path(args.out)))
        print(f"bench: wrote {args.out} in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    finally:
        if args.keep or not bench.temporary:
            print(f"bench: kept {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)
    failed = [n for n, i in bench.results["sections"].items() if "error" in i or (i.get("result") or {}).get("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
