"""Draw one synthetic face with a given expression: the pixels behind `fer data synth`.

Why procedural faces: RAF-DB's images are licensed and never ship with the project, yet the pipeline
must run end to end through the real RAF-DB reader. These faces carry each expression by the facial
cues a person would look for (mouth curve and opening, brow height/angle/squeeze, eye opening, nose
wrinkle, cheek raise, an asymmetric mouth corner), at a per-sample intensity, on varied identities,
poses, lighting, backgrounds, blur and occluders, so that a classifier has real work to do: weak
expressions drift towards neutral and fear/surprise, disgust/anger share most of their cues.

Calibration (docs/synthetic-benchmark.md): the cue magnitudes below times `CUE_GAIN`, the feature sizes in
`sample_identity` and the intensity distribution in `sample_intensity` were set so that, at the CPU
training profile (48 px), a plain ResNet-18 with cross entropy reaches RAF-DB-like accuracy (80-92 %)
with the small classes behind and the confusions between classes that share cues, while a raw-pixel
linear probe stays far below. Before calibration the cues moved ~50-100 of 4,096 pixels at 64 px and
every model stayed near chance.

Everything random comes from the `numpy.random.Generator` the caller passes in, so one seed gives the
same bytes in any process. Shapes are drawn at twice the output size and reduced for antialiasing.
Pure: numpy + Pillow, no files, no globals touched.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Expression cues at full intensity, as offsets from a neutral face. Units: `fh` = face half-height
# for vertical offsets, multipliers for widths, 0..1 strengths for wrinkles/lines.
#   brow_raise   whole brow up (+) / down (-)          brow_inner  inner brow end up (+) / down (-)
#   brow_squeeze inner ends pulled together (0..1)      brow_arch   extra arch of the brow (+)
#   eye_open     eye height / width, added to neutral    lid_slant   upper lid lowered at the inner side
#   mouth_curve  corners up (+) / down (-)              mouth_open  opening between the lips
#   mouth_width  width multiplier, added to 1            upper_lip   upper lip pulled up (shows teeth)
#   lip_press    lips pressed thin (0..1)               teeth       teeth visible when open (0..1)
#   nose_wrinkle lines across the nose bridge (0..1)    folds       nose-to-mouth folds (0..1)
#   cheek_raise  raised cheeks under the eyes (0..1)     glabella    vertical frown lines (0..1)
#   mouth_asym   one corner raised (contempt-like)
CUE_NAMES: tuple[str, ...] = (
    "brow_raise", "brow_inner", "brow_squeeze", "brow_arch", "eye_open", "lid_slant", "mouth_curve",
    "mouth_open", "mouth_width", "upper_lip", "lip_press", "teeth", "nose_wrinkle", "folds",
    "cheek_raise", "glabella", "mouth_asym",
)

EXPRESSION_CUES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"mouth_curve": 0.10, "mouth_width": 0.30, "mouth_open": 0.05, "teeth": 1.0,
              "cheek_raise": 1.0, "folds": 0.7, "eye_open": -0.14, "brow_raise": 0.01},
    "sad": {"mouth_curve": -0.07, "mouth_width": -0.10, "brow_inner": 0.08, "brow_squeeze": 0.25,
            "brow_raise": -0.01, "eye_open": -0.10, "lid_slant": -0.6, "brow_arch": -0.02},
    "surprise": {"brow_raise": 0.09, "brow_arch": 0.05, "eye_open": 0.42, "mouth_open": 0.16,
                 "mouth_width": -0.35},
    "fear": {"brow_raise": 0.06, "brow_inner": 0.05, "brow_squeeze": 0.35, "brow_arch": -0.02,
             "eye_open": 0.48, "mouth_open": 0.06, "mouth_width": 0.30, "mouth_curve": -0.03,
             "teeth": 1.0},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip": 0.05, "mouth_open": 0.025, "mouth_curve": -0.04,
                "brow_raise": -0.04, "brow_inner": -0.02, "brow_squeeze": 0.15, "eye_open": -0.17,
                "teeth": 1.0, "folds": 1.0, "cheek_raise": 0.4, "mouth_asym": 0.025},
    "anger": {"brow_raise": -0.05, "brow_inner": -0.07, "brow_squeeze": 0.40, "glabella": 1.0,
              "eye_open": -0.17, "lid_slant": 1.0, "lip_press": 1.0, "mouth_width": -0.12,
              "mouth_curve": -0.025},
    "contempt": {"mouth_asym": 0.07, "mouth_curve": 0.01, "eye_open": -0.05, "lip_press": 0.4},
}

# Geometric cues (brow, eye, mouth positions and widths) are multiplied by this gain; wrinkles, folds,
# teeth and cheeks are 0..1 strengths and are not. The one knob of the benchmark's difficulty.
CUE_GAIN = 2.8
GEOMETRIC_CUES = frozenset({"brow_raise", "brow_inner", "brow_arch", "eye_open", "mouth_curve", "mouth_open",
                            "mouth_width", "upper_lip", "mouth_asym"})

# Pairs that share most cues: a weak face of one borrows some of the other's cues (sad and happy drift
# towards neutral; a neutral face borrows weak cues of a class drawn per face, see `sample_partner`).
CONFUSABLE: dict[str, str] = {"fear": "surprise", "surprise": "fear", "disgust": "anger",
                              "anger": "disgust", "contempt": "happy", "sad": "neutral", "happy": "neutral"}

NEUTRAL_EYE_OPEN = 0.45


def sample_intensity(rng: np.random.Generator, expression: str) -> float:
    """How strongly the face shows its class, 0..1.

    Expressive classes: mostly clear (mean 0.76), with a tail of weak faces (about 5 % below 0.4) that
    drift towards their confusable partner. Neutral: 1 means a blank face; lower values borrow weak cues
    of another class (an ambiguous neutral).
    """
    if expression == "neutral":
        return float(1.0 - 0.45 * rng.random() ** 2)
    return float(0.15 + 0.85 * rng.beta(2.5, 1.0))


def sample_partner(rng: np.random.Generator, expression: str) -> str:
    """The class a face borrows cues from when weak: its confusable partner, or for a neutral face a
    random expressive class. Recorded in the synth sidecar (`cue_partner`)."""
    if expression == "neutral":
        others = [name for name in EXPRESSION_CUES if name not in ("neutral", "contempt")]
        return others[int(rng.integers(len(others)))]
    return CONFUSABLE.get(expression, "neutral")


@dataclass(frozen=True)
class Identity:
    """The person and the scene, independent of the expression."""

    face_half_width: float
    face_half_height: float
    jaw: float
    center_y: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int
    hairline: float
    eye_y: float
    eye_dx: float
    eye_width: float
    iris: tuple[int, int, int]
    brow_thickness: float
    nose_y: float
    nose_width: float
    mouth_y: float
    mouth_half_width: float
    lip: tuple[int, int, int]
    clothes: tuple[int, int, int]
    resting: dict[str, float]


def _color(values) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(values), 0, 255).round())  # type: ignore[return-value]


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random person: face shape, skin tone, hair, feature placement and a resting expression."""
    tone = rng.random()
    skin = np.array([78, 48, 34]) + tone * np.array([170, 170, 158]) + rng.normal(0, 8, 3)
    hair_palette = np.array([[25, 20, 18], [60, 40, 25], [110, 75, 40], [190, 160, 100],
                             [140, 60, 30], [160, 160, 160], [45, 35, 35]])
    hair = hair_palette[rng.integers(len(hair_palette))] + rng.normal(0, 10, 3)
    iris_palette = np.array([[60, 35, 20], [30, 20, 15], [70, 110, 150], [80, 110, 70]])
    half_height = rng.uniform(0.39, 0.46)  # aligned crops: the face fills the frame
    half_width = half_height * rng.uniform(0.72, 0.9)
    center_y = rng.uniform(0.52, 0.57)
    eye_y = center_y - half_height * rng.uniform(0.08, 0.17)
    lip = skin * np.array([0.82, 0.55, 0.55]) + np.array([30, 0, 5]) + rng.normal(0, 6, 3)
    return Identity(
        face_half_width=half_width,
        face_half_height=half_height,
        jaw=rng.uniform(0.1, 0.4),
        center_y=center_y,
        skin=_color(skin),
        hair=_color(hair),
        hair_style=int(rng.integers(4)),
        hairline=rng.uniform(0.45, 0.7),
        eye_y=eye_y,
        eye_dx=half_width * rng.uniform(0.36, 0.48),
        eye_width=half_width * rng.uniform(0.38, 0.46),
        iris=_color(iris_palette[rng.integers(len(iris_palette))] + rng.normal(0, 8, 3)),
        brow_thickness=rng.uniform(0.02, 0.032),
        nose_y=center_y + half_height * rng.uniform(0.18, 0.3),
        nose_width=half_width * rng.uniform(0.28, 0.4),
        mouth_y=center_y + half_height * rng.uniform(0.47, 0.58),
        mouth_half_width=half_width * rng.uniform(0.38, 0.46),
        lip=_color(lip),
        clothes=_color(rng.uniform(20, 235, 3)),
        # Faces differ at rest: some look a little sad or stern without any expression.
        resting={"mouth_curve": rng.normal(0, 0.012), "brow_raise": rng.normal(0, 0.012),
                 "brow_inner": rng.normal(0, 0.01), "eye_open": rng.normal(0, 0.05)},
    )


def expression_cues(expression: str, intensity: float, rng: np.random.Generator,
                    partner: str | None = None) -> dict[str, float]:
    """Cue values for one face: the class's cues scaled by intensity, each with its own jitter.

    Weak faces borrow some of `partner`'s cues (default: `sample_partner`, drawn from `rng`); a neutral
    face with intensity below 1 borrows weak cues of its partner. Unknown expressions are a KeyError.
    """
    for name in (expression, partner):
        if name is not None and name not in EXPRESSION_CUES:
            raise KeyError(f"unknown expression {name!r}; expected one of {', '.join(EXPRESSION_CUES)}")
    cues = dict.fromkeys(CUE_NAMES, 0.0)
    partner = sample_partner(rng, expression) if partner is None else partner
    if expression == "neutral":
        own, borrowed = 0.0, 1.0 - intensity
    else:
        own = intensity
        borrowed = rng.uniform(0.0, 0.6) * (1.0 - intensity) ** 1.5
    for name, value in EXPRESSION_CUES[expression].items():
        cues[name] += own * value * rng.uniform(0.65, 1.35)
    for name, value in EXPRESSION_CUES[partner].items():
        cues[name] += borrowed * value * rng.uniform(0.65, 1.35)
    for name in GEOMETRIC_CUES:
        cues[name] *= CUE_GAIN
    return cues


def _bezier(p0: tuple[float, float], control: tuple[float, float], p2: tuple[float, float],
            steps: int = 10) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, steps)[:, None]
    points = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(control) + t ** 2 * np.array(p2)
    return [tuple(p) for p in points.tolist()]


def _through(p0: tuple[float, float], mid: tuple[float, float], p2: tuple[float, float],
             steps: int = 10) -> list[tuple[float, float]]:
    """A quadratic curve from p0 to p2 passing through `mid` at its half-way point."""
    control = (2 * mid[0] - (p0[0] + p2[0]) / 2, 2 * mid[1] - (p0[1] + p2[1]) / 2)
    return _bezier(p0, control, p2, steps)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return _color(np.array(a) * (1 - t) + np.array(b) * t)


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    """Flat, gradient, blotchy texture or stripes, in a random colour."""
    base = rng.uniform(15, 240, 3)
    kind = rng.integers(4)
    if kind == 0:
        return Image.new("RGB", (side, side), _color(base))
    if kind == 1:
        other = rng.uniform(15, 240, 3)
        ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
        pixels = base * (1 - ramp) + other * ramp
        pixels = np.broadcast_to(pixels, (side, side, 3))
        image = Image.fromarray(np.ascontiguousarray(pixels.clip(0, 255).astype(np.uint8)))
        return image.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, expand=False,
                            fillcolor=_color(base))
    if kind == 2:
        cells = int(rng.integers(3, 9))
        blotches = base + rng.normal(0, rng.uniform(10, 50), (cells, cells, 3))
        small = Image.fromarray(blotches.clip(0, 255).astype(np.uint8))
        return small.resize((side, side), Image.BICUBIC)
    image = Image.new("RGB", (side, side), _color(base))
    draw = ImageDraw.Draw(image)
    stripe = _color(base + rng.normal(0, 40, 3))
    period = rng.uniform(0.08, 0.25) * side
    offset = rng.uniform(0, period)
    while offset < side * 1.5:
        draw.line([(offset, -side * 0.2), (offset - side * 0.5, side * 1.2)], fill=stripe,
                  width=max(1, int(period * 0.4)))
        offset += period
    return image


def _draw_face(draw: ImageDraw.ImageDraw, person: Identity, cues: dict[str, float],
               rng: np.random.Generator, side: int) -> None:
    """Head, hair, eyes, brows, nose and mouth on the face layer (unit coordinates scaled by `side`)."""
    s = float(side)
    cx, cy = 0.5 * s, person.center_y * s
    fw, fh = person.face_half_width * s, person.face_half_height * s
    skin = person.skin
    shade = _mix(skin, (0, 0, 0), 0.28)
    line = _mix(skin, (20, 10, 10), 0.55)

    # Shoulders, neck, hair behind the head, ears.
    draw.ellipse([cx - fw * 2.6, cy + fh * 1.05, cx + fw * 2.6, cy + fh * 2.6], fill=person.clothes)
    draw.rectangle([cx - fw * 0.45, cy + fh * 0.5, cx + fw * 0.45, cy + fh * 1.3], fill=shade)
    if person.hair_style == 2:  # long hair
        draw.rounded_rectangle([cx - fw * 1.25, cy - fh * 1.12, cx + fw * 1.25, cy + fh * 1.1],
                               radius=fw * 0.9, fill=person.hair)
    ear_y = person.eye_y * s + fh * 0.08
    for side_sign in (-1, 1):
        ex = cx + side_sign * fw * 0.97
        draw.ellipse([ex - fw * 0.14, ear_y - fh * 0.16, ex + fw * 0.14, ear_y + fh * 0.16], fill=shade)

    # Face outline: an ellipse whose lower half narrows towards the chin.
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    sin, cos = np.sin(angles), np.cos(angles)
    xs = cx + fw * cos * (1 - person.jaw * np.clip(sin, 0, None) ** 2)
    ys = cy + fh * sin
    draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=skin)

    # Hair on top (not for bald faces, style 0).
    if person.hair_style in (1, 2, 3):
        top = cy - fh * 1.1
        bottom = cy - fh * person.hairline * (0.5 if person.hair_style == 3 else 1.0)
        draw.chord([cx - fw * 1.06, top, cx + fw * 1.06, 2 * bottom - top], 180, 360, fill=person.hair)

    eye_y = person.eye_y * s
    eye_dx = person.eye_dx * s
    eye_w = person.eye_width * s
    eye_open = max(0.08, NEUTRAL_EYE_OPEN + person.resting["eye_open"] + cues["eye_open"])
    eye_h = eye_w * eye_open

    # Raised cheeks: lighter rounded bulges under the eyes and a pushed-up lower lid.
    if cues["cheek_raise"] > 0.05:
        cheek = _mix(skin, (235, 140, 135), 0.22 * min(1.0, cues["cheek_raise"]))
        for side_sign in (-1, 1):
            kx = cx + side_sign * eye_dx * 1.05
            ky = eye_y + fh * (0.32 - 0.08 * cues["cheek_raise"])
            draw.ellipse([kx - eye_w * 0.75, ky - eye_w * 0.45, kx + eye_w * 0.75, ky + eye_w * 0.45], fill=cheek)

    # Eyes: sclera, iris (hidden by the lids as the eye closes), lids; wide eyes show white above.
    gaze = rng.normal(0, 0.08, 2) * eye_w
    for side_sign in (-1, 1):
        ex = cx + side_sign * eye_dx
        box = [ex - eye_w / 2, eye_y - eye_h / 2, ex + eye_w / 2, eye_y + eye_h / 2]
        draw.ellipse(box, fill=(238, 236, 230))
        radius = eye_w * 0.22
        iris_half = min(radius, eye_h / 2)
        ix, iy = ex + gaze[0], eye_y + gaze[1] * 0.3
        draw.ellipse([ix - radius, iy - iris_half, ix + radius, iy + iris_half], fill=person.iris)
        pupil = radius * 0.45
        draw.ellipse([ix - pupil, iy - min(pupil, iris_half), ix + pupil, iy + min(pupil, iris_half)],
                     fill=(12, 10, 10))
        slant = cues["lid_slant"]
        if abs(slant) > 0.05:
            # Lowered upper lid: a skin wedge over the eye, deeper at the inner (anger) or outer (sad) end.
            inner_x, outer_x = ex - side_sign * eye_w * 0.6, ex + side_sign * eye_w * 0.6
            depth = eye_h * 0.7 * abs(slant)
            top = eye_y - eye_h / 2 - 2
            deep_x = inner_x if slant > 0 else outer_x
            shallow_x = outer_x if slant > 0 else inner_x
            draw.polygon([(deep_x, top), (deep_x, top + depth), (shallow_x, top)], fill=skin)
        draw.arc(box, 180, 360, fill=line, width=max(1, int(s * 0.008)))
        if cues["cheek_raise"] > 0.3:
            under = [ex - eye_w * 0.5, eye_y - eye_h * 0.2, ex + eye_w * 0.5, eye_y + eye_h * 0.9]
            draw.arc(under, 20, 160, fill=shade, width=max(1, int(s * 0.012)))

    # Brows: height, inner end raise, squeeze towards the middle, arch.
    thickness = max(2, int(person.brow_thickness * s))
    brow_color = _mix(person.hair, (0, 0, 0), 0.3)
    raise_ = person.resting["brow_raise"] + cues["brow_raise"]
    inner_raise = person.resting["brow_inner"] + cues["brow_inner"]
    squeeze = min(0.9, max(0.0, cues["brow_squeeze"]))
    base_y = eye_y - fh * (0.15 + raise_) - eye_h * 0.15
    for side_sign in (-1, 1):
        ex = cx + side_sign * eye_dx
        inner_x = cx + side_sign * (eye_dx - eye_w * 0.55) * (1 - 0.5 * squeeze)
        outer_x = ex + side_sign * eye_w * 0.65
        inner = (inner_x, base_y - fh * inner_raise)
        outer = (outer_x, base_y + fh * 0.02 - fh * 0.3 * raise_ * 0.5)
        mid = ((inner[0] + outer[0]) / 2, (inner[1] + outer[1]) / 2 - fh * (0.035 + cues["brow_arch"]))
        draw.line(_through(inner, mid, outer, 8), fill=brow_color, width=thickness, joint="curve")
    if cues["glabella"] > 0.15:
        glabella = _mix(skin, (30, 15, 10), 0.45 * min(1.0, cues["glabella"]))
        for offset in (-0.04, 0.04):
            gx = cx + offset * fw
            draw.line([(gx, base_y - fh * inner_raise + fh * 0.02), (gx + offset * fw * 0.3, eye_y)],
                      fill=glabella, width=max(1, int(s * 0.012)))

    # Nose: bridge side line, base, nostrils (flared and lifted by disgust), bridge wrinkles.
    ny = person.nose_y * s - fh * 0.03 * cues["nose_wrinkle"]
    nw = person.nose_width * s * (1 + 0.2 * cues["nose_wrinkle"])
    draw.line([(cx + nw * 0.25, eye_y + eye_w * 0.2), (cx + nw * 0.4, ny - nw * 0.25)], fill=shade,
              width=max(1, int(s * 0.01)))
    draw.arc([cx - nw / 2, ny - nw * 0.35, cx + nw / 2, ny + nw * 0.25], 20, 160, fill=line,
             width=max(1, int(s * 0.008)))
    for side_sign in (-1, 1):
        nx = cx + side_sign * nw * 0.22
        draw.ellipse([nx - nw * 0.1, ny - nw * 0.06, nx + nw * 0.1, ny + nw * 0.06], fill=line)
    if cues["nose_wrinkle"] > 0.15:
        wrinkle = _mix(skin, (30, 15, 10), 0.5 * min(1.0, cues["nose_wrinkle"]))
        top_y = eye_y + eye_w * 0.1
        for k in range(3):
            wy = top_y + k * fh * 0.05
            draw.line(_through((cx - nw * 0.32, wy + 2), (cx, wy - fh * 0.015), (cx + nw * 0.32, wy + 2), 6),
                      fill=wrinkle, width=max(1, int(s * 0.012)))

    # Mouth: corners (curve, asymmetry), opening, upper lip lift, teeth, lips (pressed = thin).
    my = person.mouth_y * s
    half = person.mouth_half_width * s * max(0.3, 1 + cues["mouth_width"])
    curve = (person.resting["mouth_curve"] + cues["mouth_curve"]) * fh
    asym = cues["mouth_asym"] * fh * (1 if rng.random() < 0.5 else -1)
    opening = max(0.0, cues["mouth_open"]) * fh
    lift = max(0.0, cues["upper_lip"]) * fh
    left = (cx - half, my - curve - asym)
    right = (cx + half, my - curve + asym)
    upper = _through(left, (cx, my - opening / 2 - lift), right, 12)
    lower = _through(left, (cx, my + opening / 2 + max(0.0, curve) * 0.35), right, 12)
    if cues["folds"] > 0.15:
        fold = _mix(skin, (30, 15, 10), 0.35 * min(1.0, cues["folds"]))
        for side_sign, corner in ((-1, left), (1, right)):
            start = (cx + side_sign * nw * 0.5, ny)
            end = (corner[0] + side_sign * fw * 0.06, corner[1] + fh * 0.04)
            mid = ((start[0] + end[0]) / 2 + side_sign * fw * 0.05, (start[1] + end[1]) / 2)
            draw.line(_through(start, mid, end, 6), fill=fold, width=max(1, int(s * 0.012)))
    lip_width = max(1, int(s * 0.03 * (1 - 0.7 * min(1.0, max(0.0, cues["lip_press"])))))
    if opening + lift > fh * 0.012:
        draw.polygon(upper + lower[::-1], fill=(70, 22, 28))
        if cues["teeth"] > 0.3:
            band = min(opening * 0.5 + lift, fh * 0.06)
            teeth_edge = [(x, y + band) for x, y in upper]
            draw.polygon(upper + teeth_edge[::-1], fill=(236, 232, 220))
    draw.line(upper, fill=person.lip, width=lip_width, joint="curve")
    draw.line(lower, fill=_mix(person.lip, (255, 255, 255), 0.08), width=int(lip_width * 1.3) + 1,
              joint="curve")


def _occluders(draw: ImageDraw.ImageDraw, person: Identity, rng: np.random.Generator, side: int,
               on_face: bool) -> None:
    """Glasses follow the face (on_face=True); bars and blobs land anywhere on the picture."""
    s = float(side)
    if on_face:
        if rng.random() < 0.12:
            eye_y, eye_dx, eye_w = person.eye_y * s, person.eye_dx * s, person.eye_width * s
            frame = _color(rng.uniform(0, 90, 3))
            sunglasses = rng.random() < 0.35
            for side_sign in (-1, 1):
                ex = 0.5 * s + side_sign * eye_dx
                box = [ex - eye_w * 0.85, eye_y - eye_w * 0.55, ex + eye_w * 0.85, eye_y + eye_w * 0.55]
                if sunglasses:
                    draw.rounded_rectangle(box, radius=eye_w * 0.3, fill=_color(rng.uniform(5, 50, 3)))
                draw.rounded_rectangle(box, radius=eye_w * 0.3, outline=frame, width=max(2, int(s * 0.012)))
            draw.line([(0.5 * s - eye_dx + eye_w * 0.85, eye_y), (0.5 * s + eye_dx - eye_w * 0.85, eye_y)],
                      fill=frame, width=max(2, int(s * 0.012)))
        return
    if rng.random() < 0.05:  # a bar across the picture (a strap, a caption band, a hand's edge)
        width = rng.uniform(0.06, 0.18) * s
        position = rng.uniform(0.15, 0.85) * s
        color = _color(rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            draw.rectangle([0, position - width / 2, s, position + width / 2], fill=color)
        else:
            draw.rectangle([position - width / 2, 0, position + width / 2, s], fill=color)
    if rng.random() < 0.06:  # a blob (a hand, a microphone, another head)
        radius = rng.uniform(0.08, 0.2) * s
        bx, by = rng.uniform(0.2, 0.8, 2) * s
        color = person.skin if rng.random() < 0.5 else _color(rng.uniform(0, 255, 3))
        draw.ellipse([bx - radius, by - radius * rng.uniform(0.6, 1.4), bx + radius,
                      by + radius * rng.uniform(0.6, 1.4)], fill=color)


def _pose(layer: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Small in-plane rotation, scale and shift of the face layer around its centre."""
    side = layer.size[0]
    angle = math.radians(rng.normal(0, 4.0))
    scale = rng.uniform(0.92, 1.08)
    shift_x, shift_y = rng.normal(0, 0.03, 2) * side
    c = side / 2
    # Inverse map (output -> input) for Image.transform: p_in = R(-a)/scale * (p_out - c - t) + c.
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    a, b = cos, sin
    d, e = -sin, cos
    ox, oy = c + shift_x, c + shift_y
    return layer.transform((side, side), Image.AFFINE,
                           (a, b, c - a * ox - b * oy, d, e, c - d * ox - e * oy),
                           resample=Image.BILINEAR)


def _photometric(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lighting gradient, brightness/contrast, colour cast, sensor noise, sometimes grayscale."""
    pixels = np.asarray(image, dtype=np.float32)
    side = pixels.shape[0]
    ramp = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.3)
    light = 1.0 + strength * (np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None])
    pixels = pixels * light[:, :, None]
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.65, 1.25) + mean * rng.uniform(0.7, 1.2)
    pixels = pixels * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    noise_std = rng.uniform(0.0, 7.0)
    pixels = pixels + rng.normal(0.0, noise_std, pixels.shape).astype(np.float32)
    out = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.06:  # RAF-DB has grayscale photos too
        out = out.convert("L").convert("RGB")
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return out


def render_face(expression: str, intensity: float, rng: np.random.Generator, size: int = 100,
                partner: str | None = None) -> Image.Image:
    """One RGB face of `size`x`size` showing `expression` (a canonical class name) at `intensity`,
    borrowing weak cues of `partner` (default: drawn by `sample_partner`)."""
    if size < 16:
        raise ValueError(f"image size must be at least 16 pixels, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    # Separate streams for the person, the expression, face details and the scene: the same seed
    # with another expression gives the same person in the same scene (a paired, controlled change).
    person_rng, cue_rng, detail_rng, scene_rng = rng.spawn(4)
    person = sample_identity(person_rng)
    cues = expression_cues(expression, intensity, cue_rng, partner)
    side = 2 * size
    canvas = _background(scene_rng, side)
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    _draw_face(draw, person, cues, detail_rng, side)
    _occluders(draw, person, scene_rng, side, on_face=True)
    layer = _pose(layer, scene_rng)
    if scene_rng.random() < 0.5:
        layer = layer.transpose(Image.FLIP_LEFT_RIGHT)
    canvas.paste(layer, (0, 0), layer)
    _occluders(ImageDraw.Draw(canvas), person, scene_rng, side, on_face=False)
    return _photometric(canvas.reduce(2), scene_rng)


def render_jpeg(expression: str, intensity: float, rng: np.random.Generator, size: int = 100,
                partner: str | None = None) -> bytes:
    """`render_face` encoded as JPEG at a random quality (RAF-DB's files are JPEGs of mixed quality)."""
    quality = int(rng.integers(72, 96))
    image = render_face(expression, intensity, rng, size, partner)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
