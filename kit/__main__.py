"""The command line: `python -m kit <stage> [--config FILE] [--set section.key=value ...]`.

    python -m kit download --config configs/dogs-vs-cats-redux.yaml [--from PATH]
    python -m kit data     --config configs/dogs-vs-cats-redux.yaml
    python -m kit train    --config configs/dogs-vs-cats-redux.yaml --set train.finetune_epochs=7
    python -m kit submit   --config configs/dogs-vs-cats-redux.yaml
    python -m kit upload   --config configs/dogs-vs-cats-redux.yaml
    python -m kit kernel push --config configs/dogs-vs-cats-redux.yaml [--gpu | --cpu] [--dry-run]
    python -m kit demo

Each stage is a plain function `run(config) -> path` in its own module, and no stage calls another:
this file parses arguments, loads (and so checks) the config, runs the data stage before the stages that
read the index (`BEFORE`), and turns a KitError into one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our output

STAGES = {
    # name: (module, help)
    "download": ("kit.data.download", "fetch the competition (Kaggle API, --from PATH, or /kaggle/input), extract, verify"),
    "data": ("kit.data.index", "index and check every image, split train/validation once (seeded, stratified)"),
    "train": ("kit.train.fit", "fine-tune: head first, then layer-group learning rates under SGDR; keep the best epoch"),
    "submit": ("kit.submit.submit", "predict every test id with TTA, check, write submissions/ and submission.csv"),
    "upload": ("kit.submit.upload", "submit submission.csv to Kaggle with the run, validation score and commit"),
    "submissions": ("kit.submit.scores", "every submission in the ledger with Kaggle's scores, refreshed, best first"),
    "predict": ("kit.submit.predict", "top-k classes of single images or a folder with a trained run"),
    "export": ("kit.submit.export", "the trained model as .keras, SavedModel and TFLite, raw RGB in, labels baked in"),
    "lr-find": ("kit.train.lr_find", "learning-rate range test: loss against rate (PNG) and a suggested rate"),
    "report": ("kit.report.report", "plots and report.html for a run"),
    "plan": ("kit.plan.plan", "each step's images and estimated time on this machine (a short probe), and the disk"),
    "kernel": ("kit.kernel.kernel", "run this config in a Kaggle kernel: push (--gpu/--cpu, --dry-run), status, output"),
    "demo": ("kit.demo", "the whole chain offline on a generated synthetic competition"),
}

# Stage-specific options: (flags, argparse keywords), or a list of them that exclude each other. Their
# destinations are passed to run(cfg, ...).
ARGUMENTS = {
    "download": [(["--from"], dict(dest="source", default=None, metavar="PATH",
                                    help="use this competition zip (as Kaggle serves it) or folder instead of the API"))],
    "upload": [(["--file"], dict(default=None, help="the CSV to submit (default: paths.submission)")),
               (["--message"], dict(default=None, help="the submission's description on Kaggle")),
               (["--wait"], dict(action="store_true", help="poll Kaggle until the file is scored; print the score")),
               (["--timeout"], dict(type=float, default=600, metavar="S", help="--wait: give up after S seconds"))],
    "predict": [(["images"], dict(nargs="+", metavar="IMAGE", help="image files or folders")),
                (["--run"], dict(dest="run_name", default=None, help="run folder or name (default: the newest)")),
                (["--top-k"], dict(dest="top_k", type=int, default=3, help="classes shown per image")),
                (["--tta"], dict(action="store_true", help="average the submit.tta views")),
                (["--csv"], dict(default=None, metavar="PATH",
                                 help="write the predictions to this CSV (default: <run>/predictions/predict-<time>.csv)"))],
    "export": [(["--run"], dict(dest="run_name", default=None, help="run folder or name (default: the newest)")),
               (["--out"], dict(default=None, help="output folder (default: <run>/export)"))],
    "lr-find": [(["--run"], dict(dest="run_name", default=None, help="start from this run's model (finetune stage)"))],
    "report": [(["--run"], dict(dest="run_name", default=None, help="run folder or name (default: the newest)"))],
    "plan": [(["--stage"], dict(dest="which", default="all", choices=["train", "submit", "all"], help="which stage (default: both)")),
             (["--json"], dict(dest="json_path", default=None, metavar="PATH", help="also write the steps here"))],
    "kernel": [(["action"], dict(choices=["push", "status", "output"],
                                 help="push: upload and start the kernel; status: poll it; output: bring it back")),
               [(["--gpu"], dict(dest="accelerator", action="store_const", const="gpu", default=None,
                                 help="push: Kaggle's GPU machine, two T4s (default: kernel.accelerator)")),
                (["--tpu"], dict(dest="accelerator", action="store_const", const="tpu",
                                 help="push: Kaggle's TPU v5e-8, kit on the JAX backend (KERAS_BACKEND=jax)")),
                (["--cpu"], dict(dest="accelerator", action="store_const", const="cpu", help="push: a CPU machine"))],
               (["--dry-run"], dict(dest="dry_run", action="store_true", help="push: write the bundle, push nothing")),
               (["--kernel"], dict(default=None, metavar="OWNER/SLUG",
                                   help="status/output: this kernel (default: the one this config last pushed)")),
               (["--no-wait"], dict(dest="wait", action="store_false", help="status: ask once, do not poll"))],
}


# Stages that read the index: "always" re-indexes first (cheap when nothing changed: image checks are cached,
# and new or changed images are picked up), "stale" only when the index is missing or was built for another
# layout, class list or split.
BEFORE = {"train": "always", "lr-find": "always", "submit": "stale", "plan": "stale"}


def run_data_stage_first(stage: str, cfg) -> None:
    """The data stage, when `stage` reads the index and BEFORE says it must be fresh."""
    when = BEFORE.get(stage)
    if when is None:
        return
    from kit.data import dataset, index

    if when == "always" or not dataset.is_current(cfg):
        index.run(cfg)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="kit" if Path(sys.argv[0]).name == "kit" else "python -m kit", description="kit: a Kaggle image-competition toolkit")
    sub = main.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, help_text) in STAGES.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", default=None, help="YAML file over the defaults (configs/*.yaml)")
        stage.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key, e.g. --set data.image_size=160 (repeatable; "
                                "several may share one quoted argument)")
        for argument in ARGUMENTS.get(name, []):
            if isinstance(argument, list):  # options that exclude each other
                group = stage.add_mutually_exclusive_group()
                for flags, options in argument:
                    group.add_argument(*flags, **options)
            else:
                stage.add_argument(*argument[0], **argument[1])
    return main


FS_HINTS = {errno.ENOSPC: "free some disk space, or point paths.* at a bigger disk",
            errno.EACCES: "fix the folder's permissions, or point paths.* somewhere writable",
            errno.EROFS: "the file system is read-only: point paths.* somewhere writable",
            errno.ENOENT: "check the path exists", errno.ENOTDIR: "a part of the path is a file, not a folder"}


def os_error_line(error: OSError) -> str:
    """One line for a file-system failure no stage turned into a KitError: what, where, and what to do."""
    where = f" ({error.filename})" if error.filename else ""
    hint = FS_HINTS.get(error.errno, "check the paths.* settings and the disk")
    return f"{error.strerror or error}{where}: {hint}; finished outputs are kept"


# Stages whose modules import TensorFlow. Its native library prints start-up lines (oneDNN, CUDA stubs) to
# stderr before it reads TF_CPP_MIN_LOG_LEVEL, which would bury a one-line error; they are hidden unless
# KIT_TF_LOGS=1, and shown if the import itself fails.
TENSORFLOW_STAGES = {"train", "submit", "predict", "export", "lr-find", "demo", "plan"}
BUILDS_A_BACKBONE = {"train", "lr-find", "demo", "plan"}  # the rest load a trained run: no ImageNet weights to find


def import_tensorflow_quietly() -> None:
    if os.environ.get("KIT_TF_LOGS") or "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow

            # Its devices too: CUDA's "failed call to cuInit" (an error-level line on a machine without a GPU)
            # is printed when they are first listed, which on the JAX backend is the first tf.data pipeline.
            tensorflow.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    from kit.config import load_config
    from kit.config_values import parse_overrides
    from kit.errors import KitError

    args = parser().parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        cfg = load_config(args.config, overrides)
        from kit import kaggle_env

        # In a Kaggle Notebook: outputs under /kaggle/working unless the config or --set names them
        if kaggle_env.kaggle_root() is not None:  # only then is the config file read again for its keys
            kaggle_env.apply_notebook_defaults(cfg, kaggle_env.explicit_keys(args.config, overrides))
        if args.stage in BUILDS_A_BACKBONE and cfg.model.weights == "imagenet":
            kaggle_env.prepare_keras_home(Path(cfg.paths.cache_dir) / "keras")  # before Keras is imported: it reads KERAS_HOME once
        if args.stage in TENSORFLOW_STAGES or getattr(args, "action", None) == "push":
            import_tensorflow_quietly()
        run_data_stage_first(args.stage, cfg)
        module = importlib.import_module(STAGES[args.stage][0])
        extra = {k: v for k, v in vars(args).items() if k not in ("stage", "config", "overrides")}
        if args.stage == "upload":
            extra["file"] = extra["file"] or cfg.paths.submission
        module.run(cfg, **extra)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a stage's own messages name the fix; this is the backstop for the rest
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    return 0


def cli() -> None:
    """The installed `kit` command (pyproject's console script): the same as `python -m kit`."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
