"""Kaggle Notebook mode: notice a kernel, default the outputs to /kaggle/working, find attached ImageNet weights.

    KIT_KAGGLE_ROOT=/tmp/fake python -m kit train   # treat /tmp/fake as /kaggle (tests; =off: never notebook mode)

In a kernel (KAGGLE_KERNEL_RUN_TYPE or KAGGLE_DATA_PROXY_URL is set, or KAGGLE_URL_BASE with /kaggle/input
present) only `<root>/working` is writable and kept, and the competition is mounted read only under
`<root>/input` (`competitions/<slug>/` or `<slug>/`; kit.data.download finds it through
`paths.kaggle_input_dirs`). `apply_notebook_defaults` points every output (paths.*) under `<root>/working`
and competition.kaggle_input at `<root>/input`, except the keys the user set in the config file or with --set.
`prepare_keras_home` makes the Keras weight files of an attached dataset visible to keras.applications:
it links them into `<paths.cache_dir>/keras/models/` (working/cache in a notebook; `kit kernel`'s script puts
the caches outside the kept output) and sets KERAS_HOME there, which Keras reads at import.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable

from kit.config import Config, read_yaml, set_key

ROOT_ENV = "KIT_KAGGLE_ROOT"
KERNEL_ENV = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_DATA_PROXY_URL")
DEFAULT_ROOT = Path("/kaggle")
OFF = ("0", "off", "none", "false", "no")
# key: where it goes, relative to the root
NOTEBOOK_DEFAULTS = {
    "paths.data_dir": "working/data",
    "paths.cache_dir": "working/cache",
    "paths.runs_dir": "working/runs",
    "paths.submissions_dir": "working/submissions",
    "paths.submission": "working/submission.csv",  # where Kaggle looks for a notebook's submission
    "competition.kaggle_input": "input",
}
# The file names keras.applications caches under $KERAS_HOME/models (keras/src/applications/*.py).
WEIGHT_FILE = re.compile(r"^(?:\w+_weights_tf_dim_ordering_tf_kernels(?:_[\w.]+)?|mobilenet_[\d_.]+_tf(?:_no_top)?"
                         r"|weights_mobilenet_v3_\w+|efficientnet(?:b\d|v2-\w+)(?:_notop)?|convnext_\w+"
                         r"|nasnet_(?:mobile|large)(?:_no_top)?|regnetx?y?\d+\w*|resnet\d+v2\w*)\.h5$")
MAX_DEPTH = 6  # /kaggle/input/datasets/<owner>/<slug>/<folder>/<file> and a little more


def kaggle_root() -> Path | None:
    """The folder standing for /kaggle when running in a Kaggle Notebook (or KIT_KAGGLE_ROOT), else None."""
    override = os.environ.get(ROOT_ENV, "").strip()
    if override:
        return None if override.lower() in OFF else Path(override).expanduser().absolute()
    if any(os.environ.get(name) for name in KERNEL_ENV):
        return DEFAULT_ROOT
    if os.environ.get("KAGGLE_URL_BASE") and (DEFAULT_ROOT / "input").is_dir():
        return DEFAULT_ROOT
    return None


def explicit_keys(config_path: str | os.PathLike | None, overrides: Iterable[str]) -> set[str]:
    """The dotted keys the user chose: those in the config file and those given with --set."""
    keys = {item.partition("=")[0].strip() for item in overrides}
    if config_path and Path(config_path).is_file():
        data = read_yaml(Path(config_path))
        for section, values in (data.items() if isinstance(data, dict) else ()):
            keys.update(f"{section}.{key}" for key in (values if isinstance(values, dict) else ()))
    return keys


def apply_notebook_defaults(cfg: Config, explicit: Iterable[str] = (), root: Path | None = None) -> dict[str, str]:
    """In a Kaggle Notebook, set NOTEBOOK_DEFAULTS under the root for every key not in `explicit`; return what
    was set (empty outside a notebook: cfg is left as it is)."""
    root = root or kaggle_root()
    if root is None:
        return {}
    chosen = set(explicit)
    applied = {key: str(root / rel) for key, rel in NOTEBOOK_DEFAULTS.items() if key not in chosen}
    for key, value in applied.items():
        set_key(cfg, key, value, "Kaggle Notebook default")
    kept = sorted(chosen & NOTEBOOK_DEFAULTS.keys())
    print(f"Kaggle Notebook: outputs under {root / 'working'}, competition looked for under {root / 'input'}"
          + (f" (your {', '.join(kept)} kept)" if kept else ""), flush=True)
    return applied


def find_weights(input_dir: Path, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """{file name: path} of the Keras weight files anywhere under `input_dir` (the first of each name, in sorted
    order). Competition folders (any holding a sample_submission.csv, and competitions/) are not searched."""
    found: dict[str, Path] = {}
    input_dir = Path(input_dir)
    for folder, dirnames, filenames in os.walk(input_dir, followlinks=False):
        here = Path(folder)
        depth = len(here.relative_to(input_dir).parts)
        if "sample_submission.csv" in filenames or depth >= max_depth:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (depth == 0 and d == "competitions"))
        for name in sorted(filenames):
            if WEIGHT_FILE.match(name) and name not in found:
                found[name] = here / name
    return found


def prepare_keras_home(home: Path, root: Path | None = None) -> Path | None:
    """In a Kaggle Notebook, link the attached Keras weight files into `<home>/models/` (the caller passes
    <paths.cache_dir>/keras) and point KERAS_HOME (and an already imported Keras) there; return that KERAS_HOME,
    or None outside a notebook. A KERAS_HOME the user set is left alone. Call before Keras is imported (it
    reads KERAS_HOME once)."""
    root = root or kaggle_root()
    if root is None:
        return None
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"])
    home = Path(home).absolute()
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    weights = find_weights(root / "input")
    for name, path in weights.items():
        target = models / name
        if target.exists() or target.is_symlink():
            continue
        try:
            target.symlink_to(path.resolve())
        except OSError:
            shutil.copy2(path, target)
    os.environ["KERAS_HOME"] = str(home)
    keras_config = sys.modules.get("keras.src.backend.config")
    if keras_config is not None:  # imported before us: it read KERAS_HOME already
        keras_config._KERAS_DIR = str(home)
    if weights:
        print(f"Kaggle Notebook: {len(weights)} Keras weight file(s) from {root / 'input'} visible in {models} "
              f"(KERAS_HOME={home})", flush=True)
    else:
        print(f"Kaggle Notebook: no Keras weight files under {root / 'input'}; without internet attach a dataset "
              f"holding them (e.g. mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5) or set "
              f"model.weights=none", flush=True)
    return home
