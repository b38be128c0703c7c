"""raw/.kit-complete.json: what an extraction recorded, and whether raw/ is still exactly that.

    marker = complete_marker(raw, source_identity(zip_path))   # None: extract (again), and it says why

The marker holds the source's identity, the counts and every extracted file's size and mtime, so a file
changed, removed or added since (a damaged test image) makes the next `make download` extract again.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from kit.data.dataset import SAMPLE_SUBMISSION as SAMPLE

MARKER = ".kit-complete.json"


def count_files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.is_file())


def file_manifest(raw: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every file extracted into `raw` (train/, test/, the sample csv)."""
    files = {}
    for folder in ("train", "test"):
        if (raw / folder).is_dir():
            with os.scandir(raw / folder) as entries:
                for entry in entries:
                    if entry.is_file():
                        info = entry.stat()
                        files[f"{folder}/{entry.name}"] = [info.st_size, info.st_mtime_ns]
    if (raw / SAMPLE).is_file():
        info = (raw / SAMPLE).stat()
        files[SAMPLE] = [info.st_size, info.st_mtime_ns]
    return files


def manifest_changes(recorded: dict, now: dict) -> str | None:
    """What differs between two manifests ('test/5.jpg changed; 1 changed, 0 missing, 0 added'), or None."""
    changed = sorted(name for name in recorded.keys() & now.keys() if list(recorded[name]) != list(now[name]))
    missing, added = sorted(recorded.keys() - now.keys()), sorted(now.keys() - recorded.keys())
    if not (changed or missing or added):
        return None
    first = (f"{changed[0]} changed" if changed else f"{missing[0]} is missing" if missing
             else f"{added[0]} was added")
    return f"{first}; {len(changed)} changed, {len(missing)} missing, {len(added)} added"


def complete_marker(raw: Path, identity: dict | None = None) -> dict | None:
    """The marker of a finished extraction whose files are all still as extracted (and, if given, from `identity`)."""
    try:
        marker = json.loads((raw / MARKER).read_text())
        if {"train", "test"} - set(marker["counts"]):
            raise KeyError("counts")
    except (OSError, ValueError, KeyError, TypeError):
        if raw.exists():
            print(f"{raw} has no valid {MARKER} (an interrupted extraction?): extracting again", flush=True)
        return None
    recorded = marker.get("files")
    if not isinstance(recorded, dict):
        print(f"{raw} was extracted by an older kit that did not record its files, so a changed or damaged file "
              f"cannot be noticed: extracting again", flush=True)
        return None
    if identity is not None and marker.get("source") != identity:
        print(f"{raw} was extracted from {marker.get('source', {}).get('path')} (as it was then): extracting "
              f"{identity['path']} instead", flush=True)
        return None
    changes = manifest_changes(recorded, file_manifest(raw))
    if changes:
        print(f"{raw} changed since it was extracted ({changes}): extracting again", flush=True)
        return None
    return marker


def write_marker(raw: Path, identity: dict, counts: dict, manifest: dict, **extra) -> None:
    """Mark `raw` complete: the source, the counts, when, and its files (`file_manifest(raw)`)."""
    marker = {"source": identity, "counts": counts, **extra,
              "extracted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "files": manifest}
    (raw / MARKER).write_text(json.dumps(marker, separators=(",", ":")) + "\n")
