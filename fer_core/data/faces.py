"""Faces in a photo: detect, take five landmarks, align to a template, crop.

The one face step of the project. Ingest (`data.faces=detect`, photo datasets) and the TorchServe
handler (`serve.faces`) both call `find_faces` and `align`, with the `FaceSettings` recorded in the
prepared dataset's dataset.json and copied into the model's meta.json, so a served crop is made
exactly as the training crops were (tests/data/test_faces.py checks the two give the same pixels).

The detector is YuNet from libfacedetection (`yuface`, BSD-3): its weights are compiled into the
wheel's shared library, so nothing is downloaded; five landmarks per face (the eyes, the nose tip,
the mouth corners, in image order: the image-left eye first). Why it and not MTCNN: docs/faces.md.

Alignment: the similarity transform (rotation, uniform scale, shift; Umeyama's least squares) that
takes the five landmarks onto the template, whose points are in unit coordinates of the square crop.
Two kinds of template:
- `standard`: the common five-point template of face alignment (ArcFace's 112 px points), shrunk
  around the crop's centre by 1/(1 + margin) so brows and chin stay inside; photo datasets use it.
- `measured`: for datasets whose images are already aligned faces (RAF-DB, the synthetic demo), the
  mean landmarks the detector finds on a sample of the dataset's own images. Serving a photo to a model
  trained on such crops then reproduces the dataset's own crop geometry, as this detector sees it.

Coordinates are continuous pixel coordinates: pixel i spans [i, i+1), so its centre is i + 0.5.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

DETECTOR = "yuface"                         # libfacedetection's YuNet, weights inside the wheel
LANDMARK_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")  # image left/right
# The common five-point template (ArcFace / InsightFace, 112x112 px), in unit coordinates.
ARCFACE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
STANDARD_POINTS: tuple[tuple[float, float], ...] = tuple((x / 112.0, y / 112.0) for x, y in ARCFACE_112)
TEMPLATE_SOURCES = ("standard", "measured")
TEMPLATE_DECIMALS = 5                       # 1e-5 of a 1,000 px crop is a hundredth of a pixel
FILL = (0, 0, 0)                            # pixels of the crop that fall outside the photo
MIN_DETECT_SIDE = 32                        # the detector finds nothing useful in smaller images
# a measured template needs this many faces, found in at least this share of the sampled images
MIN_MEASURED_FACES = 20
MIN_MEASURED_SHARE = 0.25


class FaceError(ValueError):
    """Face settings or a template that cannot be used; the message names the field."""


class DetectorError(RuntimeError):
    """The detector failed on an image (not: found no face)."""


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixels of the image it was found in (EXIF orientation applied)."""

    box: tuple[float, float, float, float]          # x, y, width, height
    landmarks: tuple[tuple[float, float], ...]      # five (x, y), LANDMARK_NAMES order
    score: float                                    # detector confidence, 0..1

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    def box_pixels(self, width: int, height: int) -> list[int]:
        """[x, y, width, height] as whole pixels, clipped to a width x height image."""
        x0 = min(max(0, math.floor(self.box[0])), width)
        y0 = min(max(0, math.floor(self.box[1])), height)
        x1 = min(max(x0, math.ceil(self.box[0] + self.box[2])), width)
        y1 = min(max(y0, math.ceil(self.box[1] + self.box[3])), height)
        return [x0, y0, x1 - x0, y1 - y0]

    def to_json(self, width: int, height: int) -> dict[str, Any]:
        return {"box": self.box_pixels(width, height),
                "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
                "score": round(self.score, 3)}


def standard_template(margin: float) -> tuple[tuple[float, float], ...]:
    """The five-point template shrunk around the crop centre by 1/(1 + margin) (margin 0 = ArcFace's crop)."""
    if not 0.0 <= margin <= 2.0:
        raise FaceError(f"face margin must lie in [0, 2], got {margin}")
    scale = 1.0 / (1.0 + margin)
    return tuple((0.5 + (x - 0.5) * scale, 0.5 + (y - 0.5) * scale) for x, y in STANDARD_POINTS)


@dataclass(frozen=True)
class FaceSettings:
    """How crops are made; recorded with the dataset (dataset.json `faces`) and the model (meta.json)."""

    template: tuple[tuple[float, float], ...] = field(default_factory=lambda: standard_template(0.2))
    template_source: str = "standard"   # standard | measured
    crop_size: int = 100                # side of the aligned crop in pixels (data.image_size)
    detect_side: int = 640              # the detector sees the image scaled down to this longer side
    min_score: float = 0.5              # faces the detector is less sure of are ignored
    margin: float = 0.2                 # the standard template's margin (recorded for the reader)
    detector: str = DETECTOR

    def __post_init__(self) -> None:
        try:  # one canonical form: what dataset.json and meta.json record is exactly what crops are made with
            template = tuple((round(float(x), TEMPLATE_DECIMALS), round(float(y), TEMPLATE_DECIMALS))
                             for x, y in self.template)
        except (TypeError, ValueError):
            raise FaceError(f"face template must be five (x, y) points, got {self.template!r}") from None
        object.__setattr__(self, "template", template)
        points = np.asarray(self.template, dtype=float)
        if points.shape != (5, 2) or not np.all(np.isfinite(points)):
            raise FaceError(f"face template must be five (x, y) points, got {self.template!r}")
        if points.min() < -0.5 or points.max() > 1.5:
            raise FaceError(f"face template points must be unit crop coordinates, got {self.template!r}")
        spread = np.linalg.norm(points - points.mean(0), axis=1).mean()
        if spread < 0.02:
            raise FaceError("face template points nearly coincide; no alignment can be made from them")
        if self.template_source not in TEMPLATE_SOURCES:
            raise FaceError(f"face template_source {self.template_source!r} is not one of {TEMPLATE_SOURCES}")
        if not 8 <= int(self.crop_size) <= 1024:
            raise FaceError(f"face crop_size must lie in [8, 1024], got {self.crop_size}")
        if not MIN_DETECT_SIDE <= int(self.detect_side) <= 4096:
            raise FaceError(f"face detect_side must lie in [{MIN_DETECT_SIDE}, 4096], got {self.detect_side}")
        if not 0.0 < float(self.min_score) <= 1.0:
            raise FaceError(f"face min_score must lie in (0, 1], got {self.min_score}")
        if self.detector != DETECTOR:
            raise FaceError(f"face detector {self.detector!r} is not available here (this code uses {DETECTOR})")

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["template"] = [list(point) for point in self.template]
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "FaceSettings":
        """A recorded `faces` section back; a FaceError names what is wrong with it."""
        if not isinstance(record, dict):
            raise FaceError(f"faces record must be a mapping, got {type(record).__name__}")
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in record.items() if key in known}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, FaceError):
                raise
            raise FaceError(f"faces record is malformed: {exc}") from None


def settings_for(data_config: Any, template: Sequence[Sequence[float]] | None = None) -> FaceSettings:
    """The FaceSettings of a DataConfig: the standard template with data.face_margin, or `template`
    (a measured one)."""
    margin = float(data_config.face_margin)
    return FaceSettings(
        template=standard_template(margin) if template is None else tuple((float(x), float(y)) for x, y in template),
        template_source="standard" if template is None else "measured",
        crop_size=int(data_config.image_size), detect_side=int(data_config.face_detect_side),
        min_score=float(data_config.face_min_score), margin=margin)


# --- detection -----------------------------------------------------------------------------------

_omp_set_num_threads = None


def _thread_setter():
    """omp_set_num_threads of the OpenMP runtime bundled in the yuface wheel (not torch's), or None."""
    global _omp_set_num_threads
    if _omp_set_num_threads is None:
        import yuface

        setter = False
        libs = os.path.join(os.path.dirname(os.path.dirname(yuface.__file__)), "yuface.libs")
        for path in sorted(glob.glob(os.path.join(libs, "libgomp*.so*"))):
            try:
                setter = ctypes.CDLL(path).omp_set_num_threads
                break
            except (OSError, AttributeError):
                continue
        _omp_set_num_threads = setter
    return _omp_set_num_threads or None


def detect(image: Image.Image, settings: FaceSettings, threads: int = 1) -> list[Face]:
    """Every face the detector is at least `min_score` sure of, largest box first.

    The detector sees the image scaled so that its longer side is at most `detect_side` (its cost is
    bounded whatever the photo's size); boxes and landmarks come back in `image`'s pixels. `threads`:
    the detector's OpenMP threads in the calling thread (0 = its default, every core).
    """
    import yuface

    width, height = image.size
    if min(width, height) < 1:
        return []
    factor = min(1.0, settings.detect_side / max(width, height))
    seen = image.convert("RGB")
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        seen = seen.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if min(seen.size) < MIN_DETECT_SIDE // 2:
        return []
    fx, fy = seen.width / width, seen.height / height
    bgr = np.ascontiguousarray(np.asarray(seen)[:, :, ::-1])
    setter = _thread_setter() if threads > 0 else None
    if setter:
        setter(int(threads))
    try:
        raw = np.asarray(yuface.yuface.detect(bgr))  # rows: score*100, x, y, w, h, 5 x (x, y), angle
    except Exception as exc:  # the C++ side raising anything is the detector failing, not "no face"
        raise DetectorError(f"face detector failed on a {width}x{height} image: {exc}") from None
    faces = []
    for row in raw.reshape(-1, raw.shape[-1] if raw.ndim == 2 else 16).astype(float):
        score = row[0] / 100.0
        if score < settings.min_score:
            continue
        x, y, w, h = row[1:5]
        if w <= 0 or h <= 0:
            continue
        # the detector gives pixel indices; +0.5 is the pixel's centre in continuous coordinates
        points = tuple((float((row[5 + 2 * i] + 0.5) / fx), float((row[6 + 2 * i] + 0.5) / fy)) for i in range(5))
        faces.append(Face(box=(float(x / fx), float(y / fy), float(w / fx), float(h / fy)), landmarks=points,
                          score=float(score)))
    faces.sort(key=lambda face: (-face.area, -face.score, face.box))
    return faces


# --- alignment -----------------------------------------------------------------------------------

def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) that takes `source` points onto `target` in
    the least-squares sense (Umeyama 1991, no reflection)."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    mean_s, mean_t = source.mean(0), target.mean(0)
    s, t = source - mean_s, target - mean_t
    variance = (s ** 2).sum() / len(s)
    if variance <= 1e-12:
        raise FaceError("landmarks coincide; no alignment can be made from them")
    covariance = t.T @ s / len(s)
    u, d, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / variance)
    shift = mean_t - scale * rotation @ mean_s
    return np.hstack([scale * rotation, shift[:, None]])


def align(image: Image.Image, landmarks: Sequence[Sequence[float]], settings: FaceSettings) -> Image.Image:
    """The crop_size x crop_size RGB crop whose five landmarks sit on the template.

    A face much larger than the crop is first reduced by a whole factor with a box filter (over the
    region the crop covers only), so the bilinear warp never aliases.
    """
    size = int(settings.crop_size)
    target = np.asarray(settings.template, dtype=np.float64) * size
    forward = similarity(np.asarray(landmarks, dtype=np.float64), target)   # photo -> crop
    scale = math.hypot(forward[0, 0], forward[1, 0])
    inverse = np.linalg.inv(np.vstack([forward, [0.0, 0.0, 1.0]]))[:2]     # crop -> photo
    region = image
    origin = np.zeros(2)
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor >= 2:
        corners = inverse @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], dtype=np.float64)
        # the region starts on a multiple of the factor: the reduced pixels are the photo's own blocks
        x0 = max(0, (math.floor(corners[0].min()) - factor) // factor * factor)
        y0 = max(0, (math.floor(corners[1].min()) - factor) // factor * factor)
        x1 = min(image.width, math.ceil(corners[0].max()) + factor)
        y1 = min(image.height, math.ceil(corners[1].max()) + factor)
        if x1 - x0 >= factor and y1 - y0 >= factor:
            region = image.crop((x0, y0, x1, y1)).reduce(factor)
            origin = np.array([x0, y0], dtype=np.float64)
        else:
            factor = 1
    # crop pixel -> region pixel: (inverse @ p - origin) / factor
    coefficients = np.vstack([inverse[0], inverse[1]])
    coefficients[:, 2] -= origin
    coefficients /= factor
    return region.convert("RGB").transform(
        (size, size), Image.Transform.AFFINE, tuple(float(v) for v in coefficients.ravel()),
        resample=Image.Resampling.BILINEAR, fillcolor=FILL)


def plausible_landmarks(points: Sequence[Sequence[float]], width: int, height: int) -> bool:
    """Five given points (a dataset's own annotation) that can be aligned from: inside the image, the
    image-left eye left of the other, the eyes at least 4 px apart and above the mouth."""
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (5, 2) or not np.all(np.isfinite(array)):
        return False
    inside = np.all((array[:, 0] >= 0) & (array[:, 0] <= width) & (array[:, 1] >= 0) & (array[:, 1] <= height))
    eyes = array[1] - array[0]
    return bool(inside and eyes[0] >= 4 and array[3:, 1].mean() > array[:2, 1].mean())


def largest_face(image: Image.Image, settings: FaceSettings, threads: int = 1) -> Face | None:
    faces = detect(image, settings, threads)
    return faces[0] if faces else None


def measure_template(images: Iterable[Image.Image], settings: FaceSettings,
                     threads: int = 1) -> tuple[tuple[tuple[float, float], ...] | None, dict[str, Any]]:
    """The mean landmarks (unit coordinates) of the largest face in each already-aligned image, and a
    record of how many images were looked at and had a face. None when too few faces were found
    (fewer than MIN_MEASURED_FACES, or under MIN_MEASURED_SHARE of the images)."""
    points, seen = [], 0
    for image in images:
        seen += 1
        face = largest_face(image, settings, threads)
        if face is not None:
            points.append(np.asarray(face.landmarks) / np.asarray(image.size, dtype=np.float64))
    record: dict[str, Any] = {"images": seen, "faces": len(points)}
    if len(points) < MIN_MEASURED_FACES or len(points) < MIN_MEASURED_SHARE * seen:
        return None, record
    stacked = np.stack(points)
    mean = stacked.mean(0)
    record["spread"] = round(float(np.linalg.norm(stacked - mean, axis=2).mean()), 4)  # mean distance, unit
    return tuple((float(x), float(y)) for x, y in mean), record
