"""The command line: `python -m kit <stage> [--config FILE] [--set section.key=value ...]`.

    python -m kit download --config configs/dogs-vs-cats-redux.yaml [--from PATH]
    python -m kit data     --config configs/dogs-vs-cats-redux.yaml
    python -m kit train    --config configs/dogs-vs-cats-redux.yaml --set train.finetune_epochs=7
    python -m kit submit   --config configs/dogs-vs-cats-redux.yaml
    python -m kit upload   --config configs/dogs-vs-cats-redux.yaml
    python -m kit demo

Each stage is a plain function `run(config) -> path` in its own module; this file only parses
arguments, loads the config and turns a KitError into one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our output

STAGES = {
    # name: (module, help)
    "download": ("kit.download", "fetch the competition (Kaggle API, --from PATH, or /kaggle/input), extract, verify"),
    "data": ("kit.data", "index and check every image, split train/validation once (seeded, stratified)"),
    "train": ("kit.train", "fine-tune: head first, then layer-group learning rates under SGDR; keep the best epoch"),
    "submit": ("kit.submit", "predict every test id with TTA, check, write submissions/ and submission.csv"),
    "upload": ("kit.upload", "submit submission.csv to Kaggle with the run, validation score and commit"),
    "demo": ("kit.demo", "the whole chain offline on a generated synthetic competition"),
}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m kit", description="kit: a Kaggle image-competition toolkit")
    sub = main.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, help_text) in STAGES.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", default=None, help="YAML file over the defaults (configs/*.yaml)")
        stage.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config key, e.g. --set data.image_size=160 (repeatable; "
                                "several may share one quoted argument)")
        if name == "download":
            stage.add_argument("--from", dest="source", default=None, metavar="PATH",
                               help="use this competition zip (as Kaggle serves it) or folder instead of the API")
        if name == "upload":
            stage.add_argument("--file", default=None, help="the CSV to submit (default: paths.submission)")
            stage.add_argument("--message", default=None, help="the submission's description on Kaggle")
    return main


def main(argv: list[str] | None = None) -> int:
    from kit.config import load_config, parse_overrides
    from kit.errors import KitError

    args = parser().parse_args(argv)
    try:
        cfg = load_config(args.config, parse_overrides(args.overrides))
        module = importlib.import_module(STAGES[args.stage][0])
        extra = {"source": args.source} if args.stage == "download" else {}
        if args.stage == "upload":
            extra = {"file": args.file or cfg.paths.submission, "message": args.message}
        module.run(cfg, **extra)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
