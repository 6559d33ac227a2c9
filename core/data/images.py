"""THE image loader: every image in the project is opened here.

Applies EXIF orientation and turns any mode (greyscale, palette, RGBA, CMYK, 16-bit, float)
into 8-bit RGB, or raises `ImageError` with a short, named reason. `grey=True` keeps a greyscale
image as 8-bit greyscale (mode L): resizing one channel is a third of the work, and a transform that
copies it into three channels afterwards (`preprocess.eval_transform`) gives exactly the same input.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.base.errors import BadInput

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

try:  # HEIC/HEIF phone photos, through the pillow-heif plugin when it is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    IMAGE_EXTENSIONS |= {".heic", ".heif"}
except ImportError:  # pragma: no cover
    pass

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

# Pixel budget. An image is decoded at most once at up to MAX_PIXELS (a PNG of 64 MP is about
# 200 MB in memory while it decodes); anything larger is refused before decoding. Whatever is
# kept afterwards is at most WORK_PIXELS (JPEGs decode straight at a reduced scale, others are
# reduced right after decoding): the model looks at a few hundred pixels anyway.
MAX_PIXELS = 64_000_000
WORK_PIXELS = 16_000_000


class ImageError(BadInput):
    """An image that cannot be used; `reason` is one of a few short names."""

    def __init__(self, reason: str, detail: str = "", source: str = ""):
        self.reason, self.detail, self.source = reason, detail, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{reason}" + (f" ({detail})" if detail else ""))


@dataclass
class LoadedImage:
    image: Image.Image  # RGB (or L when asked for and greyscale), EXIF-transposed
    original_mode: str
    original_size: tuple[int, int]
    conversions: list[str] = field(default_factory=list)  # e.g. ["exif-rotated", "cmyk"]


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", "") or type(source).__name__


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError("missing", "no such file")
        if path.stat().st_size == 0:
            raise ImageError("zero bytes")
        return Image.open(path)
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError("zero bytes")
        return Image.open(io.BytesIO(source))
    if hasattr(source, "getbuffer") and source.getbuffer().nbytes == 0:
        raise ImageError("zero bytes")
    return Image.open(source)


def _to_rgb(img: Image.Image, conversions: list[str], grey: bool = False) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode != "F" and arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range -> 8-bit
            conversions.append("16-bit")
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P":
        conversions.append("palette")
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        conversions.append("alpha-on-white")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK":
        conversions.append("cmyk")
    elif mode in ("L", "1"):
        conversions.append("greyscale")
        if grey:
            return img.convert("L") if img.mode != "L" else img
    elif mode != "RGB":
        conversions.append(mode.lower())
    return img.convert("RGB") if img.mode != "RGB" else img


def _reduction(size: tuple[int, int], budget: int) -> int:
    """The smallest integer factor that brings `size` within `budget` pixels."""
    factor = 1
    while (size[0] // factor) * (size[1] // factor) > budget:
        factor += 1
    return factor


def _check_budget(img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS and img.format != "JPEG":  # JPEGs decode at a reduced scale
        raise ImageError("too large", f"{width}×{height} is {width * height / 1e6:.0f} megapixels; "
                         f"the limit is {MAX_PIXELS / 1e6:.0f} (downscale it first)")


@dataclass
class Header:
    """What a file's header says, without decoding its pixels (the quick scan's check)."""

    size: tuple[int, int]
    mode: str


def _opened(source: ImageSource, name: str, draft_size: int | None = None, decode: bool = True,
            likely: str | None = None) -> tuple[Image.Image, tuple[int, int], bool]:
    """(the image opened: first frame, pixel budget checked, and when `decode` its pixels loaded, JPEGs at a
    reduced scale; the size stored in the file; whether decoding reduced it). Every failure is an
    ImageError with its reason. `likely`: the format to try first (its extension's), then every format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open_likely(source, likely) if likely else _open(source)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/TIFF: first frame
            original_size, reduced = img.size, False
            _check_budget(img)
            if not decode:
                return img, original_size, reduced
            if img.format == "JPEG":
                factor = _reduction(img.size, WORK_PIXELS)
                target = min(draft_size or 1 << 30, img.size[0] // factor), min(draft_size or 1 << 30, img.size[1] // factor)
                if target != img.size:
                    img.draft(img.mode, target)
                    reduced = factor > 1 and not draft_size
            img.load()
            return img, original_size, reduced
    except ImageError as err:
        err.source = name
        raise ImageError(err.reason, err.detail, name) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError("too large", str(err).split(".")[0], name) from None
    except UnidentifiedImageError:
        raise ImageError("not an image", "Pillow cannot identify the file", name) from None
    except OSError as err:
        text = str(err)
        reason = "truncated" if "truncated" in text else "unreadable"
        raise ImageError(reason, text, name) from None
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as err:
        raise ImageError("unreadable", str(err) or type(err).__name__, name) from None


def _open_likely(source: BytesIO, likely: str) -> Image.Image:
    """Pillow's open trying `likely` (a format name) first, then every format: a JPEG named .png still opens."""
    try:
        return Image.open(source, formats=(likely,))
    except UnidentifiedImageError:
        source.seek(0)
        return _open(source)


def read_header(source: BytesIO, likely: str | None = None) -> Header:
    """The stored size and mode of an in-memory file, read from the header alone (microseconds: no
    pixel is decoded, so a truncated file passes; `open_image` names it). Raises ImageError for what the
    header already shows: not an image, over the pixel budget, unreadable. `likely`: the format to try first."""
    img, _, _ = _opened(source, _describe(source), decode=False, likely=likely)
    return Header(img.size, img.mode)


def open_image(source: ImageSource, draft_size: int | None = None, grey: bool = False) -> LoadedImage:
    """Open, fully decode, EXIF-transpose and convert to RGB (a greyscale image to L when `grey`), or
    raise ImageError.

    `draft_size` lets JPEG decoding skip detail (fast health checks); the whole file is still read,
    so truncation is still detected. `original_size` is always the size stored in the file. Images
    over the pixel budget are reduced (see MAX_PIXELS, WORK_PIXELS).
    """
    name = _describe(source)
    img, original_size, reduced = _opened(source, name, draft_size)
    original_mode = img.mode
    conversions: list[str] = []
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not lose the image
        orientation = 1
    if orientation not in (None, 1):
        img = ImageOps.exif_transpose(img)
        conversions.append("exif-rotated")
    try:
        rgb = _to_rgb(img, conversions, grey)
    except (OSError, ValueError) as err:
        raise ImageError("unreadable", str(err), name) from None
    factor = _reduction(rgb.size, WORK_PIXELS)
    if factor > 1:
        rgb, reduced = rgb.reduce(factor), True
    if reduced:
        conversions.append("reduced")
    return LoadedImage(rgb, original_mode, original_size, conversions)


def load_rgb(source: ImageSource, grey: bool = False) -> Image.Image:
    """The RGB image as a model sees it (before resizing; L when `grey` and greyscale). Raises ImageError."""
    return open_image(source, grey=grey).image


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def fit(image: Image.Image, longest: int = 1024) -> Image.Image:
    """A copy no longer than `longest` pixels on its longer side: what a page shows and explains
    (the browser and the heatmap need no more; the model's own input is smaller still)."""
    copy = image.copy()
    copy.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return copy
