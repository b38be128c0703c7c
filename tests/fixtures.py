"""Tiny image files for tests: good ones in every colour mode, and the bad ones users really have."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kit import fsutil


def image_bytes(mode: str = "RGB", size: int = 32, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A small noisy image in `mode` (RGB, L, RGBA, CMYK) encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    rgb.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


BAD_IMAGES = {
    # name -> (bytes, reason substring the checker must report)
    "zero-byte": (b"", "empty"),
    "truncated": (image_bytes(size=64)[:400], "truncated"),
    "not-an-image": (b"hello, I am a text file, not a photo\n" * 4, "not an image"),
}

ODD_BUT_GOOD = {
    # name -> bytes that must still load as RGB
    "grayscale": image_bytes("L"),
    "rgba-png-named-jpg": image_bytes("RGBA", fmt="PNG"),
    "png-named-jpg": image_bytes("RGB", fmt="PNG"),
    "cmyk": image_bytes("CMYK"),
}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- processes, for the temporaries of killed runs (kit.fsutil.remove_stale_temporaries) ---------------------

def dead_pid() -> int:
    """The process id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@contextlib.contextmanager
def running_process():
    """The process id of another process, running for the duration of the block."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def temporary_name(final: str, pid: int, suffix: str = "") -> str:
    """The name atomic_path gives a temporary for `final` written by process `pid` on this host."""
    return f".{final}.k1lled0x.pid{pid}@{fsutil._host_tag()}.tmp{suffix}"


def free_space(free: float):
    """A stand-in for shutil.disk_usage reporting `free` bytes free on every file system (monkeypatch it in)."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")

    def disk_usage(path):
        return usage(int(free) * 10, int(free) * 9, int(free))
    return disk_usage


def oriented_photo(orientation: int = 6, fmt: str = "JPEG", width: int = 64, height: int = 32) -> bytes:
    """A photo as a phone stores it: pixels on their side plus the EXIF orientation that turns them upright.

    Stored pixels: left half red, right half blue. Orientation 6 (rotate 90 degrees clockwise to view) shows
    red on top, blue below, at height x width; a reader that ignores the tag sees red left, blue right.
    """
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()
