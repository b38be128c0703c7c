"""The command line: every stage is reachable, and a bad config is one `error:` line and exit status 2."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from kit.__main__ import ARGUMENTS, STAGES, main

ROOT = Path(__file__).resolve().parent.parent


def module_file(name: str) -> Path:
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_names_a_module_with_a_run_function(stage):
    path = module_file(STAGES[stage][0])  # read, not imported: no TensorFlow start-up here
    assert path.is_file(), f"stage {stage}: {STAGES[stage][0]} is not a module"
    functions = {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
    assert "run" in functions, f"stage {stage}: {path.relative_to(ROOT)} has no top-level run(cfg, ...)"


def test_stage_options_belong_to_known_stages():
    assert set(ARGUMENTS) <= set(STAGES)


@pytest.mark.parametrize("argv, words", [
    (["data", "--set", "data.cache=memroy"], ["'data.cache'", "memroy", "disk, memory, none"]),
    (["data", "--set", "data.image_size=160 train.jit_compile=maybe"], ["'train.jit_compile'", "auto"]),
    (["data", "--set", "train.precompute=true"], ["replaced", "train.head=features"]),
    (["data", "--config", "nowhere.yaml"], ["nowhere.yaml not found"]),
])
def test_a_bad_config_is_one_error_line_and_exit_status_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and all(w in err for w in words), err


def test_help_lists_every_stage():
    result = subprocess.run([sys.executable, "-m", "kit", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert all(stage in result.stdout for stage in STAGES)


@pytest.mark.parametrize("error, words", [
    (OSError(28, "No space left on device", "/data/cache/x.npy"), ["No space left on device (/data/cache/x.npy)",
                                                                   "free some disk space"]),
    (PermissionError(13, "Permission denied", "/runs/r"), ["Permission denied (/runs/r)", "permissions"]),
    (OSError(30, "Read-only file system", "/mnt/ro"), ["Read-only file system", "writable"]),
])
def test_a_file_system_failure_no_stage_named_is_still_one_line_and_exit_2(error, words, capsys, monkeypatch, cfg):
    import kit.submit.upload as stage

    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(stage, "run", fail)
    assert main(["upload", "--set", f"paths.data_dir={cfg.paths.data_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err
