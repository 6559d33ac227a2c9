"""The one image loader and the scan's handling of every bad file kind, on generated images."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.data import catalog
from core.data.images import ImageError, load_rgb, open_image
from core.models import preprocess


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    arr = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90, np.uint8)], -1)
    return Image.fromarray(arr, "RGB")


@pytest.fixture
def bad_and_odd(tmp_path):
    folder = tmp_path / "ds" / "things"
    folder.mkdir(parents=True)
    good = gradient()
    good.save(folder / "good.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture\n")
    png = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(png, format="PNG")
    raw = bytearray(png.getvalue())
    raw[1000:1200] = bytes(range(200))  # damage the compressed pixel data, keep the header
    (folder / "corrupt.png").write_bytes(bytes(raw))
    full = jpeg_bytes(gradient(256, 256))
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "notes.txt").write_text("a stray file")
    good.convert("CMYK").save(folder / "cmyk.jpg")
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 30))
    rgba.save(folder / "rgba.png")
    arr16 = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    Image.fromarray(arr16).save(folder / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    (folder / "rotated.jpg").write_bytes(jpeg_bytes(gradient(64, 48), exif=exif.tobytes()))
    Image.new("P", (20, 20), 3).save(folder / "palette.gif")
    return tmp_path / "ds"


@pytest.mark.parametrize("name,reason", [
    ("zero.jpg", "zero bytes"), ("text.jpg", "not an image"), ("corrupt.png", "unreadable"),
    ("truncated.jpg", "truncated")])
def test_bad_files_raise_a_named_reason(bad_and_odd, name, reason):
    with pytest.raises(ImageError) as err:
        load_rgb(bad_and_odd / "things" / name)
    assert err.value.reason == reason
    assert name in str(err.value)


def test_cmyk_becomes_rgb(bad_and_odd):
    loaded = open_image(bad_and_odd / "things" / "cmyk.jpg")
    assert loaded.image.mode == "RGB" and loaded.original_mode == "CMYK"
    assert "cmyk" in loaded.conversions
    # colours survive the round trip roughly: left edge is red-ish, right edge green-ish
    arr = np.asarray(loaded.image).astype(int)
    assert arr[:, 0, 0].mean() < arr[:, -1, 0].mean()


def test_rgba_is_composited_on_white(bad_and_odd):
    img = load_rgb(bad_and_odd / "things" / "rgba.png")
    assert img.mode == "RGB"
    assert img.getpixel((35, 15)) == (255, 255, 255)  # fully transparent → white, not red or black
    assert img.getpixel((5, 15)) == (0, 0, 255)


def test_16_bit_png_is_scaled_to_8_bit(bad_and_odd):
    loaded = open_image(bad_and_odd / "things" / "deep16.png")
    arr = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB" and "16-bit" in loaded.conversions
    assert arr.max() >= 250 and arr.min() <= 5  # the full range, not clipped to white


def test_exif_orientation_is_applied(bad_and_odd):
    loaded = open_image(bad_and_odd / "things" / "rotated.jpg")
    assert loaded.original_size == (64, 48)
    assert loaded.image.size == (48, 64)
    assert "exif-rotated" in loaded.conversions


def test_loader_accepts_bytes_and_pil(bad_and_odd):
    raw = (bad_and_odd / "things" / "good.jpg").read_bytes()
    assert load_rgb(raw).size == (64, 48)
    assert load_rgb(Image.open(io.BytesIO(raw)).convert("L")).mode == "RGB"


def test_a_greyscale_photo_read_as_one_channel_gives_the_model_the_same_input(bad_and_odd):
    """The cold feature pass keeps greyscale photos as one channel (a third of the resizing); the
    network must see exactly the numbers of their RGB copy. Real ELPV cells, and the 16-bit PNG."""
    import torch

    from core.models import backbones
    from core.models.preprocess import eval_transform

    from helpers import elpv

    transform = eval_transform(backbones.preprocessing_for(backbones.DEFAULT_BACKBONE))
    photos = sorted(elpv().glob("*/*.png"))[:3] + [bad_and_odd / "things" / "deep16.png"]
    for photo in photos:
        grey = load_rgb(photo, grey=True)
        assert grey.mode == "L"
        assert torch.equal(transform(grey), transform(load_rgb(photo))), photo
    colour = load_rgb(bad_and_odd / "things" / "good.jpg", grey=True)
    assert colour.mode == "RGB"  # a colour photo is RGB whatever was asked
    dataset = preprocess.ImageDataset(photos[:1], [0], transform)
    assert dataset.grey and dataset[0][0].shape == (3, 224, 224)
    from core.models.preprocess import train_transform

    augmenting = train_transform(backbones.preprocessing_for(backbones.DEFAULT_BACKBONE), "light")
    assert not preprocess.ImageDataset(photos[:1], [0], augmenting).grey  # augmentation gets RGB, as before


def test_the_scan_on_several_threads_gives_the_same_index_in_the_same_order(bad_and_odd, monkeypatch):
    for n in range(12):
        gradient(32 + n, 40).save(bad_and_odd / "things" / f"extra{n:02d}.png")
    threaded = catalog.scan(bad_and_odd, use_cache=False)
    monkeypatch.setattr(catalog, "SCAN_WORKERS", 1)
    single = catalog.scan(bad_and_odd, use_cache=False)
    assert len(threaded.items) == 18 and len(threaded.skipped) == 5
    assert threaded.items.equals(single.items) and threaded.skipped.equals(single.skipped)  # rows, values, order


def test_scan_skips_each_bad_file_with_its_reason_and_keeps_the_rest(bad_and_odd):
    index = catalog.scan(bad_and_odd)
    reasons = dict(zip(index.skipped["path"], index.skipped["reason"]))
    assert reasons == {"things/zero.jpg": "zero bytes", "things/text.jpg": "not an image",
                       "things/corrupt.png": "unreadable", "things/truncated.jpg": "truncated",
                       "things/notes.txt": "not an image"}
    kept = set(index.items["path"])
    assert kept == {f"things/{n}" for n in ("good.jpg", "cmyk.jpg", "rgba.png", "deep16.png",
                                            "rotated.jpg", "palette.gif")}
    conversions = dict(zip(index.items["path"], index.items["conversions"]))
    assert "exif-rotated" in conversions["things/rotated.jpg"]
    assert conversions["things/good.jpg"] == ""


def test_heic_photos_load_through_the_plugin(tmp_path):
    path = tmp_path / "phone.heic"
    gradient(64, 48).save(path, format="HEIF")
    img = load_rgb(path)
    assert img.size == (64, 48) and img.mode == "RGB"
    assert abs(int(np.asarray(img)[:, 0, 0].mean()) - 0) < 30  # the gradient's dark left edge survives
