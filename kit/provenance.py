"""What produced an output: the resolved config, the library versions and the git commit, saved beside it.

    python -c "from kit.provenance import library_versions; print(library_versions())"
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from kit.config import Config, config_dict
from kit.fsutil import write_text_atomic


def library_versions() -> dict:
    """Versions of what produced an output, read from package metadata (no heavy imports)."""
    versions = {"python": platform.python_version()}
    for package in ("kit", "tensorflow", "keras", "keras-cv", "jax", "jaxlib", "numpy", "pandas", "pillow", "kaggle"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["kit"] = versions["kit"] or __import__("kit").__version__
    versions["keras_backend"] = keras_backend()
    versions["git_commit"] = git_commit()
    return versions


def keras_backend() -> str:
    """The backend Keras runs on in this process (read from Keras once imported, else as it will choose it)."""
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def git_commit() -> str | None:
    """The commit of the checkout kit runs from (with '+dirty' if it has changes), else KIT_SOURCE_COMMIT (set by
    the kernel script: the commit `kit kernel push` ran from), else None."""
    root = Path(__file__).resolve().parent.parent
    pushed = os.environ.get("KIT_SOURCE_COMMIT") or None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return pushed
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return pushed


def save_provenance(cfg: Config, folder: str | Path) -> Path:
    """Write config.yaml (resolved) and versions.json into `folder`; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))
    write_text_atomic(folder / "versions.json", json.dumps(library_versions(), indent=2) + "\n")
    return folder
