"""Real photographs for the face tests, composed from the public-domain portrait matplotlib ships
(mpl-data/sample_data/grace_hopper.jpg, 512x600): one face, several, rotated, small, grayscale, huge,
and photos without a face. Where each face lies is known, so a test can check a box is on the face."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# The portrait's face (eyes to chin, as a person would box it) in its own 512x600 pixels: the
# detector's box must overlap it well.
PORTRAIT_FACE = (180, 120, 175, 215)   # x, y, width, height
BACKGROUND = (205, 212, 220)


def portrait_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def portrait() -> Image.Image:
    with Image.open(portrait_path()) as image:
        return image.convert("RGB")


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Composed:
    image: Image.Image
    faces: list[tuple[float, float, float, float]]   # where the portrait's face lies in `image`, largest first


def paste_portrait(canvas: Image.Image, at: tuple[int, int], scale: float, faces: list) -> None:
    face = portrait()
    if scale != 1.0:
        face = face.resize((round(face.width * scale), round(face.height * scale)), Image.Resampling.BICUBIC)
    canvas.paste(face, at)
    x, y, w, h = PORTRAIT_FACE
    faces.append((at[0] + x * scale, at[1] + y * scale, w * scale, h * scale))


def group_photo(scales: tuple[float, ...] = (1.0, 0.6, 0.35), width: int = 1100, height: int = 640) -> Composed:
    """Several copies of the portrait side by side at different sizes (largest first in `faces`)."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    faces: list = []
    x = 0
    for scale in scales:
        paste_portrait(canvas, (x, 20), scale, faces)
        x += round(512 * scale) + 20
    return Composed(canvas, sorted(faces, key=lambda box: -box[2] * box[3]))


def small_face_photo(face_side: int = 48, width: int = 640, height: int = 480) -> Composed:
    """One portrait shrunk so that its face box is about `face_side` pixels wide, in a larger scene."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    faces: list = []
    paste_portrait(canvas, (width // 3, height // 3), face_side / PORTRAIT_FACE[2], faces)
    return Composed(canvas, faces)


def rotated_portrait(degrees: float) -> Image.Image:
    return portrait().rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=BACKGROUND)


def no_face_photos() -> dict[str, Image.Image]:
    """Photos without a face: a plain wall, a gradient, noise, and the portrait's flag corner."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 400, dtype=np.float32)
    gradient = np.stack([np.tile(ramp, (300, 1)), np.tile(ramp[::-1], (300, 1)), np.full((300, 400), 128.0)], axis=2)
    return {
        "wall": Image.new("RGB", (400, 300), (120, 80, 40)),
        "gradient": Image.fromarray(gradient.astype(np.uint8)),
        "noise": Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
        "flag": portrait().crop((0, 0, 150, 260)),
    }


def overlap(box: tuple[float, ...] | list[float], truth: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ax, ay, aw, ah = box
    bx, by, bw, bh = truth
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    return inter / (aw * ah + bw * bh - inter)
