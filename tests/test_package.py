"""Packaging: `pip install .` gives a `kit` command and every sub-package, and the pinned set fits the ranges."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the checks below are about files, not the running Python
requirements = pytest.importorskip("packaging.requirements")


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_console_script_is_kit_and_names_a_function_that_exists(project):
    assert project["project"]["scripts"] == {"kit": "kit.__main__:cli"}
    tree = ast.parse((ROOT / "kit" / "__main__.py").read_text())
    assert "cli" in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_package_discovery_finds_kit_and_every_sub_package_and_nothing_else(project):
    find_packages = pytest.importorskip("setuptools").find_packages  # what the build backend runs

    found = set(find_packages(str(ROOT), **project["tool"]["setuptools"]["packages"]["find"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kit").rglob("__init__.py")}
    assert found == on_disk and "kit.data" in found


def test_the_package_needs_no_data_files():
    """Only .py files are installed (no package_data is declared): a data file under kit/ would be missing."""
    extra = [p for p in (ROOT / "kit").rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert not extra, f"non-Python files under kit/ are not installed: {extra}"
    folders = [p for p in (ROOT / "kit").rglob("*") if p.is_dir() and p.name != "__pycache__"
               and any(p.glob("*.py")) and not (p / "__init__.py").exists()]
    assert not folders, f"code folders without __init__.py are not found by setuptools: {folders}"


def pinned(name: str = "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[name.lower()] = version
    return pins


def test_requirements_txt_is_an_exact_set_inside_the_declared_ranges(project):
    """requirements.txt (what `make` installs) pins exactly one version of every dependency pyproject declares,
    and each pin satisfies pyproject's range: the known-good set is one of the sets the package allows."""
    pins = pinned()
    declared = [requirements.Requirement(r) for r in project["project"]["dependencies"]]
    declared += [requirements.Requirement(r) for r in project["project"]["optional-dependencies"]["test"]]
    assert {r.name.lower() for r in declared} == set(pins)
    for req in declared:
        assert req.specifier.contains(pins[req.name.lower()]), f"requirements.txt {req.name}=={pins[req.name.lower()]} " \
                                                               f"is outside pyproject's {req}"


def test_requirements_jax_txt_pins_the_jax_extra_inside_its_range(project):
    """requirements-jax.txt (`make venv-jax`) pins jax and jaxlib; the `jax` extra allows the pinned jax."""
    pins = pinned("requirements-jax.txt")
    assert set(pins) == {"jax", "jaxlib"} and pins["jax"] == pins["jaxlib"]
    for req in map(requirements.Requirement, project["project"]["optional-dependencies"]["jax"]):
        assert req.specifier.contains(pins[req.name.lower()]), f"requirements-jax.txt {req.name} is outside {req}"


def test_the_python_range_matches_the_makefile_gate(project):
    assert project["project"]["requires-python"] == ">=3.11,<3.13"
    assert "(3, 11) <= sys.version_info[:2] <= (3, 12)" in (ROOT / "Makefile").read_text()
