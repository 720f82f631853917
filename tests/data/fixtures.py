"""Writers of tiny datasets in each real format's own layout, names and codes (for tests and bench).

They write GOOD data; a test breaks what it wants afterwards (truncate a file, delete one, add a bad
row), so each test shows exactly which defect it checks.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from fer_core import labels


def face(seed: int, size: int = 32, mode: str = "RGB") -> Image.Image:
    """A deterministic face-like picture: a bright ellipse with two dark eyes on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = rng.integers(0, 60, (size, size, 3)).astype(np.float64)
    inside = ((xx - 0.5) / 0.35) ** 2 + ((yy - 0.5) / 0.45) ** 2 < 1
    pixels[inside] += 150 + rng.integers(0, 40, 3)
    for eye_x in (0.35, 0.65):
        pixels[((xx - eye_x) ** 2 + (yy - 0.4) ** 2) < 0.003] = 20
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def odd_but_good_images(size: int = 32) -> dict[str, bytes]:
    """Images in modes a real dataset holds (CMYK, RGBA, 16-bit, grayscale) that must ingest as RGB."""
    ramp = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 60)
    return {
        "cmyk": encode(face(101, size, "CMYK"), "JPEG"),
        "rgba": encode(face(102, size, "RGBA"), "PNG"),
        "gray16": encode(Image.fromarray(ramp), "PNG"),
        "gray": encode(face(103, size, "L"), "JPEG"),
    }


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# --- RAF-DB basic -------------------------------------------------------------------------------

def write_rafdb(root: Path, rows: list[tuple[str, int]], *, size: int = 32) -> Path:
    """EmoLabel/list_patition_label.txt `<name> <code>` + Image/aligned/<stem>_aligned.jpg for each row."""
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (name, code) in enumerate(rows):
        lines.append(f"{name} {code}\n")
        stem = Path(name).stem
        (root / "Image" / "aligned" / f"{stem}_aligned.jpg").write_bytes(encode(face(index, size), "JPEG", quality=90))
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(lines))
    return root


def rafdb_rows(per_class_train: int, per_class_test: int) -> list[tuple[str, int]]:
    """Names in RAF-DB's own pattern (train_00001.jpg, test_0001.jpg), codes 1..7 round robin."""
    rows, train, test = [], 0, 0
    for code in sorted(labels.RAFDB_CODES):
        for _ in range(per_class_train):
            train += 1
            rows.append((f"train_{train:05d}.jpg", code))
        for _ in range(per_class_test):
            test += 1
            rows.append((f"test_{test:04d}.jpg", code))
    return rows


# --- AffectNet ----------------------------------------------------------------------------------

AFFECTNET_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal"]


def affectnet_row(relative: str, code: int | str, box=(8, 8, 40, 40)) -> list[str]:
    landmarks = ";".join(str(v) for v in range(20, 20 + 136))  # 68 points, as the real files hold
    return [relative, *(str(v) for v in box), landmarks, str(code), "0.1", "-0.2"]


def write_affectnet(root: Path, train: list[list[str]], validation: list[list[str]], *, size: int = 64) -> Path:
    """training.csv / validation.csv + a face image under Manually_Annotated_Images/ for each row."""
    root.mkdir(parents=True, exist_ok=True)
    for file_name, rows in (("training.csv", train), ("validation.csv", validation)):
        with open(root / file_name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(AFFECTNET_HEADER)
            writer.writerows(rows)
        for index, row in enumerate(rows):
            image_path = root / "Manually_Annotated_Images" / row[0]
            image_path.parent.mkdir(parents=True, exist_ok=True)
            image_path.write_bytes(encode(face(index + (0 if file_name == "training.csv" else 500), size), "JPEG"))
    return root


# --- FER2013 / FERPlus --------------------------------------------------------------------------

def pixel_string(seed: int) -> str:
    return " ".join(str(v) for v in np.asarray(face(seed, 48, "L")).ravel())


def write_fer2013(root: Path, rows: list[tuple[int | str, str]]) -> Path:
    """fer2013.csv: emotion,pixels,Usage, one 48x48 face per row."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "fer2013.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for index, (emotion, usage) in enumerate(rows):
            writer.writerow([emotion, pixel_string(index), usage])
    return root


def write_ferplus(root: Path, rows: list[tuple[str, list[int]]]) -> Path:
    """fer2013new.csv (Usage, Image name, 10 vote columns) row-aligned with a fer2013.csv of the same length."""
    write_fer2013(root, [(0, usage) for usage, _ in rows])
    with open(root / "fer2013new.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Usage", "Image name", *labels.FERPLUS_VOTE_COLUMNS])
        for index, (usage, votes) in enumerate(rows):
            writer.writerow([usage, f"fer{index:07d}.png", *votes])
    return root


def votes_for(column: str, count: int = 8, rest: str = "neutral", rest_count: int = 2) -> list[int]:
    """Ten-vote row with `count` votes for `column` and the rest for another column."""
    votes = [0] * len(labels.FERPLUS_VOTE_COLUMNS)
    votes[labels.FERPLUS_VOTE_COLUMNS.index(column)] += count
    votes[labels.FERPLUS_VOTE_COLUMNS.index(rest)] += rest_count
    return votes


# --- ImageFolder --------------------------------------------------------------------------------

def write_imagefolder(root: Path, layout: dict[str, dict[str, int]], *, size: int = 32) -> Path:
    """`<split>/<class folder>/<n>.png` with the given number of images per folder."""
    seed = 0
    for split, classes in layout.items():
        for folder, count in classes.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                seed += 1
                (root / split / folder / f"img_{index:03d}.png").write_bytes(encode(face(seed, size), "PNG"))
    return root
