"""The command line's contract for bad input, as a user meets it: exit status 2 and one `error: ...` line.

    run_kit(tmp_path, "upload", "--file", "x.csv")      # a real `python -m kit` process (about 3 s: keep few)
    refused(capsys, ["upload", ...])                     # the same contract in-process, from capsys

Also `tree`: every file under a folder with its bytes, to show that a refusal changed nothing.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import output_paths

ROOT = Path(__file__).resolve().parents[2]


def overrides(tmp_path: Path, *more: str) -> list[str]:
    """--set arguments putting every output folder inside tmp_path (as the `cfg` fixture does)."""
    return [arg for item in [*output_paths(tmp_path), *more] for arg in ("--set", item)]


def run_kit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m kit <args>` in tmp_path, with kit from this checkout; its result, output as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


# TensorFlow's C++ start-up lines (absl, printed before its logging is set up: TF_CPP_MIN_LOG_LEVEL does not
# reach them in TF 2.21), e.g. "I0000 00:00:1796163243.667467   11778 port.cc:153] oneDNN custom operations ...".
# Not kit's output: left out of the count.
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                           r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] )")


def one_error_line(status: int, stderr: str) -> str:
    """The message of a refused command: exit status 2, no traceback, exactly one line `error: ...`."""
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not TF_NATIVE_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0][len("error: "):]


def refused(capsys, argv: list[str]) -> str:
    """one_error_line for `kit.__main__.main(argv)` run in-process (what was printed before is dropped)."""
    from kit.__main__ import main

    capsys.readouterr()
    status = main(argv)
    return one_error_line(status, capsys.readouterr().err)


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder` (relative name -> bytes, None for a folder): compare before and after."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}
