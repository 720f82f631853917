"""Fixtures for the serving tests: a real exported FERNet run folder and images of every kind."""

from __future__ import annotations

import dataclasses
import io
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core.config import ModelConfig
from fer_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fer_core.labels import CLASS_NAMES_7

IMAGE_SIZE = 32


def make_run(run_dir: Path, seed: int) -> Path:
    """A run folder as `fer train` leaves it for serving: model.safetensors, model.pt2, meta.json."""
    from fer_core.model.export import write_model_files
    from fer_core.model.network import build_model

    torch.manual_seed(seed)
    model_config = ModelConfig()
    model = build_model(model_config, len(CLASS_NAMES_7)).eval()
    meta = {"class_names": list(CLASS_NAMES_7), "num_classes": len(CLASS_NAMES_7), "image_size": IMAGE_SIZE,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "model": dataclasses.asdict(model_config),
            "best_epoch": 0, "seed": seed}
    write_model_files(model, run_dir, meta, IMAGE_SIZE)
    return run_dir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_run(tmp_path_factory.mktemp("run_a"), seed=0)


@pytest.fixture(scope="session")
def run_dir_b(tmp_path_factory) -> Path:
    """A second run (other weights): a new model version to swap in."""
    torch.set_num_threads(1)
    return make_run(tmp_path_factory.mktemp("run_b"), seed=1)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def face_array(width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """An asymmetric RGB test pattern (orientation matters for it)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    array[: height // 3, : width // 2] = (250, 30, 30)
    return array


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes claiming 10 gigapixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def good_images() -> dict[str, bytes]:
    """One image per decodable kind."""
    rgb = Image.fromarray(face_array())
    gray = rgb.convert("L")
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)
    return {
        "rgb_jpeg": encode(rgb, "JPEG", quality=95),
        "rgb_png": encode(rgb),
        "gray_png": encode(gray),
        "gray16_png": encode(sixteen),
        "rgba_png": encode(rgb.convert("RGBA")),
        "cmyk_jpeg": encode(rgb.convert("CMYK"), "JPEG"),
        "palette_png": encode(rgb.convert("P")),
    }


@pytest.fixture(scope="session")
def bad_images(good_images) -> dict[str, bytes]:
    """Bodies that are not a usable image, each with the problem its error must name."""
    jpeg, png = good_images["rgb_jpeg"], good_images["rgb_png"]
    middle = len(png) // 2
    big = encode(Image.new("L", (1200, 1000)))  # 1.2 Mpx: over the tests' 1 Mpx limit
    return {
        "empty": b"",
        "text": b"hello, this is not an image",
        "truncated": jpeg[: len(jpeg) // 3],
        "corrupt": png[:middle] + bytes(255 - b for b in png[middle:middle + 64]) + png[middle + 64:],
        "too_many_pixels": big,
        "bomb": png_header_bomb(),
    }


BAD_REASONS = {
    "empty": "empty",
    "text": "not an image",
    "truncated": "truncated or corrupt",
    "corrupt": "corrupt",
    "too_many_pixels": "too large",
    "bomb": "decompression bomb",
}


def new_request_id() -> str:
    return str(uuid.uuid4())
