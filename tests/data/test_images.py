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


def test_decode_says_whether_the_file_holds_its_own_rgb_pixels():
    from fer_core.data.images import decode

    rgb = encode(Image.new("RGB", (30, 10), (200, 10, 10)), "JPEG")
    plain = decode(rgb)
    assert (plain.format, plain.native, plain.image.size) == ("JPEG", True, (30, 10))
    assert np.array_equal(np.asarray(plain.image), np.asarray(decode_image(rgb)))
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = decode(encode(Image.new("RGB", (30, 10)), "JPEG", exif=exif.tobytes()))
    assert not turned.native and turned.image.size == (10, 30)
    for mode in ("L", "CMYK"):
        other = decode(encode(Image.new(mode, (30, 10)), "JPEG"))
        assert not other.native and other.image.mode == "RGB"
    assert decode(encode(Image.new("RGB", (30, 10)), "PNG")).format == "PNG"


def test_draft_decodes_large_jpegs_at_a_reduced_scale_never_below_the_target():
    from fer_core.data.images import decode

    data = encode(Image.new("RGB", (400, 240), (90, 120, 150)), "JPEG")
    drafted = decode(data, draft_size=50)
    assert drafted.image.size == (100, 60) and not drafted.native    # 1/4; 1/8 would give 30 < 50
    assert decode(data, draft_size=150).image.size == (400, 240)    # less than 2x the target: full decode
    assert decode(encode(Image.new("RGB", (400, 240)), "PNG"), draft_size=50).image.size == (400, 240)


def test_pillow_bomb_limit_refuses_without_touching_warning_filters(monkeypatch):
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20x20 = 400: Pillow warns (under 2x), we refuse
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImageDecodeError, match="decompression bomb refused"):
            decode_image(encode(Image.new("RGB", (20, 20))), max_pixels=10_000)
        with pytest.raises(ImageDecodeError, match="decompression bomb refused"):  # over 2x: Pillow raises
            decode_image(encode(Image.new("RGB", (40, 40))), max_pixels=10_000)
    assert warnings.filters == before


def test_sixteen_bit_decode_stays_in_integers():
    """A 16-bit PNG converts at a few bytes per pixel (a float64 path used 24): a stream of large
    16-bit requests keeps worker memory flat. The values match the 8-bit scale within 1."""
    import io
    import tracemalloc

    import numpy as np
    from PIL import Image

    from fer_core.data.images import decode_image

    side = 1500
    gray8 = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray8 * 257).save(buffer, "PNG")  # 16-bit gray with the same visual content
    tracemalloc.start()
    image = decode_image(buffer.getvalue())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image)[..., 0], gray8.astype(np.uint8))
    assert peak < 12 * side * side, f"{peak / side / side:.1f} bytes per pixel"
