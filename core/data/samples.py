"""Fetch the bundled real image sets from the package registries (no other internet needed).

- `elpv`: the `elpv-dataset` wheel from PyPI (2,624 real electroluminescence photos of solar
  cells, 4 defect-probability classes) → DEST/defect_000 … defect_100.
- `fashion-mnist`: the Debian package `dataset-fashion-mnist` (70,000 28×28 images,
  10 classes) → DEST/<class>/*.png.

Both are idempotent: a finished folder holds a `.graft-sample` marker and is left alone.
"""
from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from core.base.errors import SampleError
from core.base.storage import cache_home, write_text
from core.data import notes

ELPV_WHEEL = "elpv-dataset==1.0.0.post1"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle_boot"]
MARKER = ".graft-sample"
# ELPV's folders are the experts' defect probabilities; a room reads these names (the Dataset page can change them)
ELPV_CLASSES = {
    "defect_000": ("Working", "Experts judged the cell free of defects (defect probability 0)."),
    "defect_033": ("Possibly defective", "Experts leaned towards no defect (defect probability 1/3)."),
    "defect_067": ("Probably defective", "Experts leaned towards a defect (defect probability 2/3)."),
    "defect_100": ("Defective", "Experts judged the cell defective (defect probability 1)."),
}
NAMES = ("elpv", "fashion-mnist")


def default_dir(name: str) -> Path:
    return cache_home() / "samples" / name


def is_ready(dest: str | Path) -> bool:
    return (Path(dest) / MARKER).is_file()


def fetch(name: str, dest: str | Path | None = None, progress: bool = True) -> Path:
    """Make sure sample set `name` is unpacked at `dest` (default: the cache) and return it."""
    if name not in NAMES:
        raise SampleError(f"unknown sample set {name!r}; choose one of {', '.join(NAMES)}")
    dest = Path(dest) if dest else default_dir(name)
    if not is_ready(dest):
        dest.mkdir(parents=True, exist_ok=True)
        (_fetch_elpv if name == "elpv" else _fetch_fashion_mnist)(dest, progress)
        write_text(dest / MARKER, f"{name}\n")
    if name == "elpv" and not notes.class_notes_file(dest).is_file():  # names the owner changed are kept
        notes.save_class_notes(dest, {label: {"name": n, "description": d} for label, (n, d) in ELPV_CLASSES.items()})
    return dest


def _pip_download(requirement: str) -> Path:
    """The wheel of `requirement`, downloaded once into the cache with pip."""
    folder = cache_home() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    stem = requirement.split("==")[0].replace("-", "_")
    found = sorted(folder.glob(f"{stem}-*.whl"))
    if found:
        return found[-1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(folder), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(f"{stem}-*.whl"))
    if result.returncode != 0 or not found:
        raise SampleError(f"pip could not download {requirement} from the package index:\n"
                          f"{result.stderr.strip()[-800:]}")
    return found[-1]


def _fetch_elpv(dest: Path, progress: bool) -> None:
    wheel = _pip_download(ELPV_WHEEL)
    with zipfile.ZipFile(wheel) as zf:
        labels_name = next(n for n in zf.namelist() if n.endswith("elpv_dataset/data/labels.csv"))
        base = labels_name.rsplit("/", 1)[0]
        text = zf.read(labels_name).decode()
        rows = [r.split() for r in text.splitlines() if r.strip()]
        rows = [r for r in rows if len(r) >= 2 and not r[0].lower().startswith("path")]
        for rel, prob, *_ in tqdm(rows, desc="elpv", unit="img", disable=not progress):
            label = f"defect_{round(float(prob) * 100):03d}"
            target = dest / label / Path(rel).name
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            data = zf.read(f"{base}/{rel}")
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)


def _read_idx(data: bytes) -> np.ndarray:
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise SampleError("unexpected IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fetch_fashion_mnist(dest: Path, progress: bool) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise SampleError("fashion-mnist comes from the Debian package 'dataset-fashion-mnist'; this "
                          "machine has no apt-get/dpkg-deb. On Debian/Ubuntu run: apt-get download "
                          "dataset-fashion-mnist, or use the 'elpv' sample instead.")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            result = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=tmp,
                                    capture_output=True, text=True)
        debs = list(tmp.glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise SampleError(f"apt-get download {FASHION_DEB} failed: {result.stderr.strip()[-500:]}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], check=True)
        files = {p.name: p for p in (tmp / "x").rglob("*.gz")}
        for prefix in ("train", "t10k"):
            images = _read_idx(gzip.decompress(files[f"{prefix}-images-idx3-ubyte.gz"].read_bytes()))
            labels = _read_idx(gzip.decompress(files[f"{prefix}-labels-idx1-ubyte.gz"].read_bytes()))
            for i, (pixels, label) in enumerate(tqdm(list(zip(images, labels)), desc=f"fashion-mnist {prefix}",
                                                     unit="img", disable=not progress)):
                target = dest / FASHION_CLASSES[label] / f"{prefix}_{i:05d}.png"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels, "L").save(buffer, format="PNG")
                    target.write_bytes(buffer.getvalue())


