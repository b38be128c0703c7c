"""Where `make export` writes: only its own files, into a new folder, an empty one or an earlier export.

    python -m kit export --out DIR        (kit/submit/export.py builds the files; this module places them)

`check_target` refuses, before any work, an --out that is a file or a folder of other things (no export.json,
so not an earlier export): kit would mix its files into them. `staged` builds the export in a temporary
folder beside the target and, only when the block succeeded, either renames it into place (a new folder) or
moves kit's own files into the existing one, one rename each, export.json last; files kit did not write are
never touched, and kit-named files of an earlier export that the new one lacks are removed with it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from kit.errors import KitError
from kit.fsutil import file_in_the_way, remove_stale_temporaries, temporary_beside

MARKER = "export.json"  # what makes a folder an earlier kit export; installed last


def check_target(final: Path, option: str | None) -> None:
    """KitError unless `final` can take an export: absent, empty, or an earlier export (`option`: "--out", or
    None for the run's own export folder, where any file with one of kit's names is kit's)."""
    shown = f"{option} {final}" if option else str(final)
    if final.exists() and not final.is_dir():
        raise KitError(f"{shown} is a file, not a folder: give a new folder (or an earlier export) to write into")
    blocked = file_in_the_way(final)
    if blocked is not None:
        raise KitError(f"{shown} cannot be created: {blocked} is a file, not a folder; give another path")
    if option and final.is_dir() and not (final / MARKER).is_file() and any(final.iterdir()):
        raise KitError(f"{shown} holds other files and is not an earlier kit export (no {MARKER}): kit will not mix "
                       f"its files into it; give a new or empty folder, e.g. {final / 'export'}")


@contextlib.contextmanager
def staged(final: Path, own_names: Iterable[str]) -> Iterator[Path]:
    """Yield an empty temporary folder; on success put what it holds at `final` (see the module docstring)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent, final_name=final.name)  # what a killed export left
    tmp = temporary_beside(final, folder=True)
    try:
        build = tmp / "export"
        build.mkdir()
        yield build
        if not final.exists():
            build.rename(final)
        else:
            _install(build, final, set(own_names), tmp / "replaced")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(build: Path, final: Path, own: set[str], trash: Path) -> None:
    """Move each built entry into `final` (the marker last); set aside kit's replaced or stale entries."""
    trash.mkdir()
    new = sorted(p.name for p in build.iterdir())
    stale = sorted(name for name in own - set(new) if (final / name).exists() or (final / name).is_symlink())
    for name in [n for n in new if n != MARKER] + stale:
        target, entry = final / name, build / name
        present = target.exists() or target.is_symlink()
        if present and (name not in new or entry.is_dir() or (target.is_dir() and not target.is_symlink())):
            target.rename(trash / name)  # a folder is not replaced by a rename onto it: set the old one aside
        if name in new:
            os.replace(entry, target)  # a file is: atomically
    os.replace(build / MARKER, final / MARKER)  # last: the folder is an export again only when complete
