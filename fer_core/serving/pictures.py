"""An answer drawn on its photo: each face's box, landmarks, label, probability and uncertainty.

For people who would rather look than read JSON (`fer serve predict --draw OUT.png`, `fer demo`). The
boxes are in the pixels of the image as the server decoded it (EXIF orientation applied), so the photo
is decoded here by the same code before drawing.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw, ImageFont

from fer_core.data.images import decode_image

# one colour per canonical class (colour-blind-safe Okabe-Ito palette, plus grey for neutral)
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "neutral": (153, 153, 153), "happy": (230, 159, 0), "sad": (0, 114, 178), "surprise": (86, 180, 233),
    "fear": (204, 121, 167), "disgust": (0, 158, 115), "anger": (213, 94, 0), "contempt": (240, 228, 66),
}
MAX_SIDE = 1600  # larger photos are drawn on a copy scaled down to this side


def face_caption(face: dict[str, Any]) -> str:
    label = face.get("label", "?")
    probability = (face.get("probabilities") or {}).get(label)
    parts = [label if probability is None else f"{label} {probability:.2f}"]
    if face.get("uncertainty") is not None:
        parts.append(f"u {face['uncertainty']:.2f}")
    if face.get("review") is not None:
        parts.append("review" if face["review"] else "ok")
    return "  ".join(parts)


def draw_answer(image_bytes: bytes, answer: dict[str, Any], *, max_pixels: int = 40_000_000) -> Image.Image:
    """The photo with every face of `answer` (a served answer) drawn on it; a face that was not detected
    (`detected: false`, the whole image classified) gets its caption in the top-left corner."""
    image = decode_image(image_bytes, max_pixels=max_pixels).copy()
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    width = max(2, round(side / 250))
    font = ImageFont.load_default(size=max(11, round(side / 40)))
    for face in answer.get("faces") or [answer]:
        colour = CLASS_COLOURS.get(face.get("label", ""), (255, 255, 255))
        caption = face_caption(face)
        if face.get("detected"):
            x, y, w, h = (value * scale for value in face["box"])
            draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
            for px, py in face.get("landmarks") or []:
                radius = width
                draw.ellipse([px * scale - radius, py * scale - radius, px * scale + radius, py * scale + radius],
                             fill=colour)
            anchor = (x, max(0.0, y - width))
            text_anchor = "lb" if y > font.size + 2 * width else "lt"
            if text_anchor == "lt":
                anchor = (x + width, y + width)
        else:
            caption = f"no face found; whole image: {caption}"
            anchor, text_anchor = (width, width), "lt"
        left, top, right, bottom = draw.textbbox(anchor, caption, font=font, anchor=text_anchor)
        draw.rectangle([left - width, top - width, right + width, bottom + width], fill=colour)
        draw.text(anchor, caption, fill=(0, 0, 0), font=font, anchor=text_anchor)
    return image
