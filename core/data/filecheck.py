"""One file of a dataset folder checked for the scan. The quick check reads the file once for its SHA-1 and
its header (tens of microseconds); the full check also decodes it (a draft decode: truncation, conversions)
and takes its dhash (near-duplicates), about a millisecond. Kept apart from `catalog` (pandas) so the scan's
worker processes start light."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import imagehash
import numpy as np

from core.data.images import IMAGE_EXTENSIONS, ImageError, open_image, read_header


def check_file(root: Path, rel: str, label: str | None, split: str, size: int, mtime_ns: int,
               decode: bool = True) -> dict:
    """One file's index row, or a skip row (has 'reason'). Without `decode`, the header only: `decoded`
    is False and the dhash and conversions are left for the full check."""
    base = {"path": rel, "label": label, "given_split": split, "bytes": size, "mtime_ns": mtime_ns}
    suffix = os.path.splitext(rel)[1].lower()  # os.path, not pathlib: a tenth of a header check's time
    if suffix not in IMAGE_EXTENSIONS:
        return {**base, "reason": "not an image", "detail": f"extension {suffix or '(none)'}"}
    if size == 0:
        return {**base, "reason": "zero bytes", "detail": ""}
    try:
        with open(os.path.join(root, rel), "rb") as file:
            data = file.read()
        if not decode:
            header = read_header(io.BytesIO(data), FORMATS.get(suffix))
            sha1 = hashlib.sha1(data).hexdigest()
            return {**base, "sha1": sha1, "unit0": float(unit_numbers([sha1])[0]), "width": header.size[0],
                    "height": header.size[1], "mode": header.mode, "decoded": False}
        loaded = open_image(io.BytesIO(data), draft_size=64)
    except ImageError as err:
        return {**base, "reason": err.reason, "detail": err.detail}
    except OSError as err:
        return {**base, "reason": "unreadable", "detail": str(err)}
    width, height = loaded.original_size
    sha1 = hashlib.sha1(data).hexdigest()
    return {**base, "sha1": sha1, "unit0": float(unit_numbers([sha1])[0]), "dhash": dhash(loaded.image),
            "width": width, "height": height, "mode": loaded.original_mode,
            "conversions": "+".join(loaded.conversions), "decoded": True}


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
           ".tiff": "TIFF", ".webp": "WEBP"}  # the format an extension names: tried first by a header check


def unit_numbers(shas: list[str], seed: int = 0) -> np.ndarray:
    """Each content hash's number in [0, 1) for the seeded split: the first 13 hex digits (52 bits) of
    SHA-1("seed:sha1"), a microsecond a photo. The scan keeps seed 0's (the default split), so a split of a
    million photos hashes nothing again."""
    base, from_bytes, numbers = hashlib.sha1(f"{seed}:".encode()), int.from_bytes, []
    for sha in shas:
        digest = base.copy()
        digest.update(sha.encode())
        numbers.append(from_bytes(digest.digest()[:7], "big"))
    return (np.array(numbers, dtype=np.int64) >> 4) / 16 ** 13


def dhash(image, size: int = 16) -> str:
    """`str(imagehash.dhash(image, size))`, the same hex string, without imagehash's bit-by-bit string
    building (a quarter of a small photo's scan)."""
    grey = image.convert("L").resize((size + 1, size), imagehash.ANTIALIAS)
    pixels = np.asarray(grey)
    return np.packbits(pixels[:, 1:] > pixels[:, :-1]).tobytes().hex()


def check_chunk(root: Path, rows: list[tuple], columns: list[str], decode: bool = True) -> list[tuple]:
    """`check_file` for a chunk of listing rows (path, label, given split, bytes, mtime_ns) → compact tuples
    in `columns`' order (a scan worker's task)."""
    return [tuple(checked.get(c) for c in columns) for checked in (check_file(root, *r, decode) for r in rows)]
