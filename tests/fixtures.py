"""Tiny image files for tests: good ones in every colour mode, and the bad ones users really have."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


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
