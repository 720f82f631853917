"""decode_image: every mode a user may send becomes RGB; every bad input is a readable error."""

import io

import numpy as np
import pytest
from PIL import Image

from fer_core.data.images import ImageDecodeError, decode_image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt", [
    ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("P", "PNG"), ("LA", "PNG"),
    ("RGB", "JPEG"), ("1", "PNG"),
])
def test_modes_become_rgb(mode, fmt):
    image = Image.new(mode, (20, 10))
    decoded = decode_image(encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (20, 10)


def test_16bit_keeps_its_contrast():
    ramp = (np.arange(64, dtype=np.uint16) * 1024).reshape(8, 8)
    decoded = np.asarray(decode_image(encode(Image.fromarray(ramp))))
    assert decoded[..., 0].min() == 0 and decoded[..., 0].max() >= 250


def test_rgba_composites_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(decode_image(encode(image))).min() == 255


def test_exif_rotation_applied():
    image = Image.new("RGB", (30, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (10, 30)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"hello, this is text", "not an image"),
])
def test_not_images(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_truncated_image():
    data = encode(Image.new("RGB", (64, 64), (10, 200, 30)), "PNG")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_checked_before_decoding():
    data = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(data, max_pixels=1_000_000)
