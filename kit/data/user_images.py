"""Images a user names (files and folders, not an index): listed, then decoded exactly as training does.

    python -m kit predict photo.jpg more-photos/        (kit/submit/predict.py; kit/submit/export.py reads too)

`image_files` turns the names into (path, reason) entries: folders are searched recursively, sorted,
hidden files and non-image extensions skipped. `read_images` decodes and resizes each entry with
kit.data.pipeline.decode_resize at a given size; formats TensorFlow cannot decode (WebP, TIFF, ...) go
through a temporary PNG copy, as in the data stage. A file that cannot be read gets its reason instead
of pixels, so one broken file never stops the others.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from kit.data.listing import IMAGE_EXTENSIONS


def image_files(items: Sequence[str]) -> list[tuple[str, str]]:
    """(path, reason) per input: files as given, folders replaced by the image files inside them.

    Folders are searched recursively, sorted, hidden files and non-image extensions skipped. `reason`
    is '' for a file to try, else why there is nothing to predict (missing path, empty folder).
    """
    entries = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            entries += [(str(p), "") for p in inside] or [(item, "folder holds no image files")]
        else:
            entries.append((item, "" if path.is_file() else "file not found"))
    return entries


def read_image(path: str, size: int, converted_dir: Path) -> tuple[np.ndarray | None, str]:
    """(size x size x 3 uint8 pixels, '') decoded as in training, or (None, why it cannot be read)."""
    import tensorflow as tf

    from kit.data.images import check_image
    from kit.data.pipeline import decode_resize

    ok, reason, load_path = check_image(path, str(converted_dir))
    if not ok:
        return None, reason
    try:
        return decode_resize(tf.constant(load_path), size).numpy(), ""
    except tf.errors.OpError as error:
        return None, f"cannot decode: {str(error).splitlines()[0][:120]}"


def read_images(entries: list[tuple[str, str]], size: int) -> tuple[np.ndarray, list[str]]:
    """(pixels of the readable images, in order; the reason per entry, '' where it was read)."""
    reasons, pixels = [], []
    with tempfile.TemporaryDirectory(prefix="kit-predict-") as converted:
        for path, reason in entries:
            image = None
            if not reason:
                image, reason = read_image(path, size, Path(converted))
            reasons.append(reason)
            if image is not None:
                pixels.append(image)
    return np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8), reasons
