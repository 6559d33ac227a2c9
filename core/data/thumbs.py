"""Thumbnails cached on disk (JPEG, keyed by content hash and size), so a page shows a grid of
50,000 images without ever sending a full image to the browser."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from core.base.storage import atomic_write, cache_home
from core.data.images import ImageError, open_image


def thumbnail(path: str | Path, sha1: str, size: int = 160) -> bytes | None:
    """JPEG bytes of the image shrunk to fit `size`×`size` (None when it cannot be read)."""
    file = cache_home() / "thumbs" / f"{size}" / sha1[:2] / f"{sha1}.jpg"
    try:
        return file.read_bytes()
    except OSError:
        pass
    try:
        image = open_image(path, draft_size=size * 2).image
    except ImageError:
        return None
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    atomic_write(file, lambda f: f.write(data))
    return data
