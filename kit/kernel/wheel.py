"""kit as a wheel, built from the kit package that is running: what a Kaggle kernel installs offline.

    python -c "from kit.kernel.wheel import build_wheel; print(build_wheel('/tmp/w'))"

Built by hand (a wheel is a zip with a .dist-info folder, PEP 427) rather than by setuptools because it
must work where there is no source tree (kit installed with `pip install .`), no build backend and no
network. Entries carry a fixed timestamp and a sorted order, so the same code gives the same bytes and the
same digest: `kit kernel push` uploads the code dataset again only when kit changed.
"""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import kit

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can hold
SUMMARY = "A Kaggle image-competition toolkit: Dogs vs. Cats Redux in three commands."


def package_files(package_dir: Path | None = None) -> list[Path]:
    """Every source file of the kit package (no caches), sorted."""
    root = Path(package_dir or Path(kit.__file__).parent)
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def dist_info(version: str) -> dict[str, bytes]:
    """METADATA, WHEEL and entry_points.txt. No Requires-Dist: the kernel installs with --no-deps onto
    Kaggle's image, which has TensorFlow, Keras, KerasCV and pandas already."""
    return {
        "METADATA": (f"Metadata-Version: 2.1\nName: kit\nVersion: {version}\nSummary: {SUMMARY}\n"
                     "Requires-Python: >=3.11\n").encode(),
        "WHEEL": b"Wheel-Version: 1.0\nGenerator: kit.kernel.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "entry_points.txt": b"[console_scripts]\nkit = kit.__main__:cli\n",
    }


def build_wheel(out_dir: str | Path, package_dir: Path | None = None, version: str | None = None) -> Path:
    """Write kit-<version>-py3-none-any.whl into `out_dir`; return its path."""
    root = Path(package_dir or Path(kit.__file__).parent)
    version = version or kit.__version__
    info = f"kit-{version}.dist-info"
    entries = {f"kit/{p.relative_to(root).as_posix()}": p.read_bytes() for p in package_files(root)}
    entries.update({f"{info}/{name}": data for name, data in dist_info(version).items()})
    record = [_record_line(name, data) for name, data in entries.items()] + [f"{info}/RECORD,,"]
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = Path(out_dir) / f"kit-{version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries.items():
            entry = zipfile.ZipInfo(name, FIXED_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    return out
