"""Decode any image a user may hand us into RGB, or fail with a reason a person can read.

Shared by ingest (files of every dataset format) and the TorchServe handler (request bodies), so a
served image goes through exactly the decoding the training data went through.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Pillow's own bomb guard warns at 89 Mpx and raises at twice that; we decide ourselves, earlier.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """An input that is not a usable image; the message says why."""


ORIENTATION_TAG = 0x0112  # EXIF Orientation; 2..8 ask for a flip or rotation


@dataclass(frozen=True)
class Decoded:
    """A decoded file: its RGB pixels, and whether those are the file's own pixels as stored."""

    image: Image.Image   # RGB, EXIF orientation applied
    format: str          # the container as Pillow names it: JPEG, PNG, MPO, ... ("" if unknown)
    native: bool         # True when the file already held RGB pixels and no EXIF rotation/flip applied:
                         # decoding the same bytes again gives exactly `image`


def _what_it_looks_like(data: bytes) -> str:
    """A hint for bytes Pillow does not know, never the bytes themselves: JSON, text or unknown."""
    head = data[:512].lstrip()
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised format"
    if text[:1] in ("{", "["):
        return "the body is JSON text; send the raw image bytes"
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "the body is text; send the raw image bytes"
    return "unrecognised format"


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> an RGB PIL image, EXIF orientation applied.

    Handles grayscale (L), 16-bit (I;16, I), float (F), palette, LA/RGBA (composited on white),
    CMYK and YCbCr. Raises ImageDecodeError for empty, non-image, truncated or corrupt data and for
    images over `max_pixels` (checked from the header, before decoding a byte of pixels).
    """
    return decode(data, max_pixels=max_pixels).image


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int = 0) -> Decoded:
    """`decode_image`, also saying what the file was (see `Decoded`): ingest stores a native file as is.

    `draft_size` > 0: a JPEG at least twice that size on both sides is decoded by libjpeg's DCT scaling
    at 1/2, 1/4 or 1/8, never below `draft_size` on either side (for a caller that will downscale to
    it anyway); the result is then not `native`.
    """
    if not data:
        raise ImageDecodeError("empty input (0 bytes)")
    try:
        # No warnings.catch_warnings() here: it swaps the process-wide filter list and is not
        # thread-safe (ingest decodes in threads). Pillow's own bomb warning (between its limit and
        # twice that) may print; the explicit check below refuses the image all the same.
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"image too large: {width}x{height} = {width * height} pixels > limit {max_pixels}"
            )
        if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
            raise ImageDecodeError(f"decompression bomb refused: {width}x{height} pixels > Pillow's limit "
                                   f"{Image.MAX_IMAGE_PIXELS}")
        drafted = False
        if draft_size > 0 and image.format == "JPEG" and min(width, height) >= 2 * draft_size:
            image.draft(None, (draft_size, draft_size))
            drafted = image.size != (width, height)
        image.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(f"not an image ({_what_it_looks_like(data)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"truncated or corrupt image: {exc}") from None
    file_format = image.format or ""
    native = image.mode == "RGB" and not drafted
    try:
        # ImageOps.exif_transpose copies the whole image even when there is nothing to turn: ask first
        if image.getexif().get(ORIENTATION_TAG, 1) in (2, 3, 4, 5, 6, 7, 8):
            image = ImageOps.exif_transpose(image)
            native = False
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        native = False
    return Decoded(to_rgb(image), file_format, native)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, keeping the visual content (16-bit scaled, alpha on white)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):
        # 16-bit gray: the high byte is the 8-bit value (v * 255 / 65535 rounded down, within 1), in
        # integer arithmetic: no float copy of the image (a float64 path cost 8 bytes per pixel and
        # seconds per 20-megapixel request)
        array = np.asarray(image)
        gray = np.right_shift(array, 8, dtype=array.dtype).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        array -= low
        array *= scale
        gray = np.clip(array, 0, 255, out=array).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image_file(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A file -> RGB image; a missing file is an ImageDecodeError naming the path."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ImageDecodeError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"is a directory, not an image: {path}") from None
    return decode_image(data, max_pixels=max_pixels)
