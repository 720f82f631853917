"""Ingest: a raw dataset in its public format -> the prepared dataset every later step reads.

Output (docs/architecture.md): manifest.csv, images/, rejected.csv, dataset.json, written into a
temporary sibling folder and renamed into place at the end, so a killed run leaves no half dataset.
Every input row or file lands in exactly one of manifest.csv and rejected.csv (checked before the
rename). Output bytes depend only on the inputs and the config: sorted rows, no timestamps, fixed
encoder settings, a seeded per-class carve of the validation split.

Speed (bench/bench_ingest.py, docs/benchmarks.md): each input is read once and decoded once; a source
JPEG that already is RGB at the storage size with storage format jpeg (RAF-DB's aligned faces) is
stored byte for byte after that verifying decode; PNG storage defaults to stored deflate blocks
(data.png_compress_level=0); each image is one open/write/close with no per-file fsync, because the
atomic unit is the dataset folder.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import random
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from fer_core import labels
from fer_core.config import ConfigError, DataConfig
from fer_core.data import faces as face_step
from fer_core.data.formats import DROPPED, ERROR, SPLITS, FER2013_SIDE, Rejection, Sample, leaves_root, read_dataset
from fer_core.data.images import Decoded, ImageDecodeError, decode
from fer_core.data.prepared import (DATASET_JSON, FACES, FACES_COLUMNS, IMAGES_DIR, MANIFEST, MANIFEST_COLUMNS,
                                    REJECTED, REJECTED_COLUMNS)
from fer_core.data.sources import open_source
from fer_core.io import PRODUCER_KEY, atomic_dir, atomic_write_text, check_output_dir, write_json

PRODUCER = "fer data ingest"
MARKER = DATASET_JSON  # records PRODUCER: an existing output is replaced only when ingest made it
IMAGE_FORMATS: dict[str, tuple[str, str]] = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg")}
PNG_ZLIB_LEVEL = 0           # default of data.png_compress_level. 0 = stored deflate blocks: ~60 us per
                             # 100x100 face (pixel copy + checksums), files ~30 kB. 1 (run-length deflate
                             # after the Up filter) is ~250-330 us, files ~20 % smaller: it halves ingest's
                             # rate on 2 cores (docs/benchmarks.md)
JPEG_QUALITY = 95
THREAD_WORKERS = 2           # up to this many ingest workers are threads (image files only), see _prepare_all
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class _Job:
    sample: Sample
    path: str                # output path relative to the dataset folder


@dataclass(frozen=True)
class _Prepared:
    sha256: str = ""
    width: int = 0
    height: int = 0
    error: str = ""
    no_face: bool = False            # data.faces=detect found no face: dropped, not an error
    face: dict[str, Any] | None = None  # the aligned face's record (FACES_COLUMNS)


# --- decoding (runs in worker processes) ---------------------------------------------------------

def pixels_to_image(text: str) -> Image.Image:
    """A FER2013 pixel string (2304 space-separated 0..255) -> a 48x48 RGB image."""
    tokens = text.split()
    expected = FER2013_SIDE * FER2013_SIDE
    if len(tokens) != expected:
        raise ImageDecodeError(f"expected {expected} pixel values, got {len(tokens)}")
    try:
        values = np.array(tokens, dtype=np.int64)
    except ValueError:
        bad = next((token for token in tokens if not (token.isascii() and token.lstrip("-").isdigit())), "?")
        raise ImageDecodeError(f"pixel value {bad!r} is not a whole number") from None
    if values.min() < 0 or values.max() > 255:
        raise ImageDecodeError(f"pixel values must lie in 0..255, found {values.min()}..{values.max()}")
    return Image.fromarray(values.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE), mode="L").convert("RGB")


def crop_box(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Crop a face box, clipped to the image; a box wholly outside the image is an error."""
    x, y, width, height = box
    if x >= image.width or y >= image.height:
        raise ImageDecodeError(f"face box {list(box)} lies outside the {image.width}x{image.height} image")
    return image.crop((x, y, min(x + width, image.width), min(y + height, image.height)))


def load_sample(sample: Sample, root: str | os.PathLike, max_pixels: int,
                draft_size: int = 0, crop: bool = True) -> tuple[Image.Image, Decoded | None, bytes]:
    """The sample's RGB pixels (before resizing), how its file decoded, and the file's bytes.

    The Decoded and the bytes are None and b"" for pixels given in a CSV and for a cropped face box:
    only a whole file can be stored as it is. `draft_size` lets a large JPEG without a face box decode
    straight at a reduced scale (see images.decode). `crop=False`: the whole photo, face box ignored
    (the face step aligns from landmarks instead). ImageDecodeError naming the file on failure.
    """
    if sample.pixels or not sample.images:
        try:
            return pixels_to_image(sample.pixels), None, b""
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{sample.image_ref or 'pixels'}: {exc}") from None
    for relative in sample.images:
        if leaves_root(relative):  # every reader refuses these; this guard holds for any future one
            raise ImageDecodeError(f"{relative}: the path leaves the dataset root; not read")
        try:
            with open(os.path.join(root, relative), "rb") as handle:
                data = handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        except OSError as exc:
            raise ImageDecodeError(f"{relative}: cannot read: {exc.strerror}") from None
        try:
            decoded = decode(data, max_pixels=max_pixels, draft_size=0 if sample.box else draft_size)
            if sample.box and crop:
                return crop_box(decoded.image, sample.box), None, b""
            return decoded.image, decoded, data
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{relative}: {exc}") from None
    if len(sample.images) == 1:
        raise ImageDecodeError(f"listed image missing: {sample.images[0]} not found")
    raise ImageDecodeError(f"listed image missing: none of {', '.join(sample.images)} exists")


def load_sample_image(sample: Sample, root: Path, max_pixels: int) -> Image.Image:
    """The sample's pixels as an RGB image (before resizing); ImageDecodeError naming the file on failure."""
    return load_sample(sample, root, max_pixels)[0]


def can_store_as_is(decoded: Decoded | None, image_size: int, image_format: str) -> bool:
    """True when the source file already is what ingest would store: a JPEG holding RGB pixels at the
    storage size, no EXIF rotation, storage format jpeg (RAF-DB's aligned faces). Its bytes are then
    stored unchanged: no second lossy encode, and decoding them gives exactly the pixels ingest checked.
    Such a file keeps whatever metadata segments the source carried (EXIF without a rotation, ICC,
    comments); the stored bytes are still a pure function of the source bytes.
    """
    return (decoded is not None and decoded.native and decoded.format == "JPEG"
            and IMAGE_FORMATS[image_format][0] == "JPEG"
            and decoded.image.size == (image_size, image_size))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stored_zlib(data: bytes) -> bytes:
    """`data` as a zlib stream of stored (uncompressed) deflate blocks; the same bytes on every zlib."""
    blocks = [b"\x78\x01"]                                   # deflate, 32 KiB window, no dictionary
    for start in range(0, max(len(data), 1), 65535):
        chunk = data[start:start + 65535]
        final = 1 if start + 65535 >= len(data) else 0
        blocks.append(struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    blocks.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(blocks)


def png_bytes(image: Image.Image, level: int = PNG_ZLIB_LEVEL) -> bytes:
    """An RGB image as a minimal 8-bit PNG, no metadata. Level 0: filter None, stored deflate blocks;
    level 1..9: every row Up-filtered, run-length deflate at that zlib level.

    Why not Pillow's writer: PNG encoding is most of ingest's cost, and Pillow's adaptive filtering
    costs ~4 ms per 100x100 face at level 6 (1.2 ms at level 1) against ~0.25 ms here at level 1 and
    ~0.05 ms at level 0; and the bytes depend only on the pixels, the level (and zlib for 1..9), not
    on a Pillow version's encoder choices.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    stride = width * 3
    rows = np.frombuffer(rgb.tobytes(), dtype=np.uint8).reshape(height, stride)
    filtered = np.empty((height, stride + 1), np.uint8)
    if level == 0:
        filtered[:, 0] = 0                                                        # filter type 0 = None
        filtered[:, 1:] = rows
        idat = _stored_zlib(filtered.tobytes())
    else:
        filtered[:, 0] = 2                                                        # filter type 2 = Up
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])                    # uint8 wraps mod 256 as PNG wants
        deflate = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        idat = deflate.compress(filtered.data) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)               # 8-bit RGB, no interlace
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def encode_image(image: Image.Image, image_format: str, png_level: int = PNG_ZLIB_LEVEL) -> bytes:
    """Fixed encoder settings and no metadata: the same pixels always give the same bytes."""
    pil_format, _ = IMAGE_FORMATS[image_format]
    if pil_format == "PNG":
        return png_bytes(image, png_level)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def write_new_file(path: str, data: bytes) -> None:
    """Create `path` (it must not exist) holding `data`: one open, one write, one close.

    No fsync per file: the unit of atomicity is the dataset folder (atomic_dir renames it into place
    only after every file is written), so a crash never exposes a half-written image.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def face_crop(sample: Sample, root: str, max_pixels: int,
              settings: face_step.FaceSettings) -> tuple[Image.Image | None, dict[str, Any] | str]:
    """data.faces=detect: the sample's largest face aligned to the template, and its record; or None and
    why no face was found. The photo is decoded whole (no draft scaling), as the server decodes it, so
    the stored crop is the served crop. A sample with its own plausible landmarks (AffectNet) is aligned
    from them; without (or with points outside the photo) its face is detected."""
    image = load_sample(sample, root, max_pixels, crop=False)[0]
    if sample.landmarks is not None and face_step.plausible_landmarks(sample.landmarks, *image.size):
        crop = face_step.align(image, sample.landmarks, settings)
        return crop, {"found": "given", "score": "", "box": "", "landmarks": sample.landmarks}
    try:
        faces = face_step.detect(image, settings)
    except face_step.DetectorError as exc:
        raise ImageDecodeError(str(exc)) from None
    if not faces:
        return None, (f"no face found (detector {settings.detector}, score >= {settings.min_score}, "
                      f"photo {image.width}x{image.height} seen at <= {settings.detect_side} px)")
    face = faces[0]
    record = {"found": len(faces), "score": round(face.score, 3),
              "box": " ".join(str(v) for v in face.box_pixels(image.width, image.height)),
              "landmarks": face.landmarks}
    return face_step.align(image, face.landmarks, settings), record


def prepare_one(job: _Job, *, root: str, out: str, image_size: int, image_format: str, max_pixels: int,
                png_level: int = PNG_ZLIB_LEVEL, faces: face_step.FaceSettings | None = None) -> _Prepared:
    """Decode, crop, resize to a square, encode and write one sample; an error becomes a reason.

    A source file that already is a storage-ready image (`can_store_as_is`) is stored byte for byte,
    after the same full decode that verifies every other input. A JPEG at least twice the storage
    size decodes at a reduced DCT scale first (libjpeg's draft mode), then resizes as any other.
    With `faces` (data.faces=detect) the stored image is the aligned crop of the largest face
    (`face_crop`). The sha256 is always of the bytes written.
    """
    face = None
    try:
        if faces is not None:
            image, found = face_crop(job.sample, root, max_pixels, faces)
            if image is None:
                return _Prepared(error=f"{job.sample.images[0] if job.sample.images else job.sample.source_id}: "
                                       f"{found}", no_face=True)
            decoded, source_bytes, face = None, b"", found
        else:
            image, decoded, source_bytes = load_sample(job.sample, root, max_pixels, draft_size=image_size)
    except ImageDecodeError as exc:
        return _Prepared(error=str(exc))
    if can_store_as_is(decoded, image_size, image_format):
        data = source_bytes
    else:
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        data = encode_image(image, image_format, png_level)
    # its class folder was made by the main process; inside atomic_dir's temporary folder, which is
    # the atomic unit as a whole
    write_new_file(os.path.join(out, job.path), data)
    return _Prepared(sha256=hashlib.sha256(data).hexdigest(), width=image.width, height=image.height, face=face)


def _prepare_chunk(jobs: list[_Job], **settings: Any) -> list[_Prepared]:
    return [prepare_one(job, **settings) for job in jobs]


def _prepare_all(jobs: list[_Job], *, root: Path, out: Path, config: DataConfig, fmt: str,
                 progress: bool, faces: face_step.FaceSettings | None = None) -> Iterator[_Prepared]:
    """Results in job order, prepared by `config.workers` threads or processes (0 = one per core).

    With up to THREAD_WORKERS workers, image files go to threads: reading, libjpeg/zlib decoding,
    resizing, sha256 and writing release the GIL, and threads cost no process start, pickling or
    result queue (on a busy 2-core machine they beat processes by ~25 %, docs/benchmarks.md). About
    half of each image's work (PIL's header parsing, our Python) holds the GIL, so threads cannot go
    much past 2 cores: more workers, and pixel strings from a CSV (FER2013, FERPlus, parsed with the
    GIL held), go to processes.
    """
    settings = dict(root=str(root), out=str(out), image_size=config.image_size,
                    image_format=config.image_format.lower(), max_pixels=config.max_pixels,
                    png_level=config.png_compress_level, faces=faces)
    workers = config.workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc=f"ingest {fmt}", unit="img", disable=not progress, leave=False)
    with bar:
        if workers == 1 or len(jobs) < 2:
            for job in jobs:
                yield prepare_one(job, **settings)
                bar.update()
            return
        chunksize = max(1, min(64, len(jobs) // (workers * 8)))
        chunks = [jobs[start:start + chunksize] for start in range(0, len(jobs), chunksize)]
        gil_bound = any(job.sample.pixels or not job.sample.images for job in jobs)
        threads = workers <= THREAD_WORKERS and not gil_bound
        pool = (ThreadPoolExecutor if threads else ProcessPoolExecutor)(max_workers=workers)
        try:
            for results in pool.map(functools.partial(_prepare_chunk, **settings), chunks):
                yield from results
                bar.update(len(results))
        finally:  # on an error or Ctrl-C, do not decode the rest of the dataset first
            pool.shutdown(wait=True, cancel_futures=True)


# --- planning (main process) ---------------------------------------------------------------------

def _safe_name(source_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", source_id.replace("/", "__")).strip("._") or "image"


def _plan(samples: list[Sample], num_classes: int, image_format: str) -> tuple[list[_Job], list[Rejection]]:
    """One output path per sample; a repeated source id is an error naming the first occurrence."""
    names = labels.class_names(num_classes)
    _, extension = IMAGE_FORMATS[image_format]
    first_seen: dict[str, Sample] = {}
    used: set[str] = set()
    jobs: list[_Job] = []
    rejections: list[Rejection] = []
    for sample in samples:
        earlier = first_seen.get(sample.source_id)
        if earlier is not None:
            rejections.append(Rejection(sample.source, sample.row, ERROR,
                                        f"duplicate of {earlier.source} row {earlier.row} (source id {sample.source_id!r})"))
            continue
        first_seen[sample.source_id] = sample
        stem = f"{IMAGES_DIR}/{names[sample.label]}/{_safe_name(sample.source_id)}"
        path = stem + extension
        if path in used:  # two ids that differ only in characters the file name cannot hold
            path = f"{stem}-{hashlib.sha1(sample.source_id.encode()).hexdigest()[:10]}{extension}"
        used.add(path)
        jobs.append(_Job(sample, path))
    return jobs, rejections


def carve_val(rows: list[dict[str, Any]], fraction: float, seed: int) -> dict[str, Any]:
    """Move a stratified, seeded `fraction` of each class's train rows to val (in place); returns the record.

    Each class draws from its own seeded generator over its rows sorted by source id, so the carve does
    not shift when another class gains or loses an image. A class with at least 2 train images gives at
    least 1 to val and keeps at least 1.
    """
    by_label: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["split"] == "train":
            by_label.setdefault(row["label"], []).append(row)
    moved: dict[str, int] = {}
    for label in sorted(by_label):
        members = sorted(by_label[label], key=lambda row: row["source_id"])
        count = round(len(members) * fraction)
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        random.Random(f"{seed}:{label}").shuffle(members)
        for row in members[:count]:
            row["split"] = "val"
        moved[members[0]["label_name"]] = count
    return {"from": "train", "fraction": fraction, "seed": seed, "stratified_by": "label",
            "counts": moved, "total": sum(moved.values())}


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _row_order(rejection: Rejection) -> tuple:
    return (rejection.source, 0, int(rejection.row), "") if rejection.row.isdigit() else (rejection.source, 1, 0, rejection.row)


# `auto` keeps each format's own codec: RAF-DB and AffectNet ship JPEGs (stored as JPEG, byte for byte
# when already normalised), FER2013/FERPlus are pixel arrays and ImageFolder trees may hold anything
# (stored losslessly as PNG).
AUTO_FORMATS = {"rafdb": "jpeg", "affectnet": "jpeg", "fer2013": "png", "ferplus": "png", "imagefolder": "png"}


def storage_format(fmt: str, image_format: str) -> str:
    """The storage codec for dataset format `fmt` under data.image_format (auto|png|jpeg)."""
    image_format = image_format.lower()
    return AUTO_FORMATS.get(fmt, "png") if image_format == "auto" else image_format


NO_FACE = "no face"


def _template_sample(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Up to `size` train rows spread evenly over the sorted train split (deterministic)."""
    train = [row for row in rows if row["split"] == "train"]
    if size <= 0 or not train:
        return []
    step = max(1, len(train) // size)
    return train[::step][:size]


def _faces_record(folder: Path, rows: list[dict[str, Any]], config: DataConfig,
                  standard: face_step.FaceSettings, detect: bool, face_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """dataset.json's `faces`: the FaceSettings the stored crops follow (training copies them into the
    model's meta.json, and serving aligns faces with them) and how they were obtained.

    detect: the standard template, and how many crops came from detected faces or given landmarks.
    off: the images are taken as already aligned; their template is measured (the mean landmarks on a
    sample of train images), so a photo served to a model of this dataset is cropped as its images were.
    Too few faces found: the standard template, and the record says so."""
    if detect:
        given = sum(1 for row in face_rows if row["found"] == "given")
        return {"mode": "detect", **standard.to_dict(),
                "crops": {"detected": len(face_rows) - given, "given_landmarks": given}}
    sample = _template_sample(rows, config.face_template_sample)
    images = (Image.open(folder / row["path"]).convert("RGB") for row in sample)
    template, measured = face_step.measure_template(images, standard) if sample else (None, {"images": 0, "faces": 0})
    settings = standard if template is None else face_step.settings_for(config, template)
    return {"mode": "off", **settings.to_dict(), "measured_on": measured}


def _check_config(config: DataConfig) -> None:
    labels.class_names(config.num_classes)
    if config.image_format.lower() not in (*IMAGE_FORMATS, "auto"):
        raise ConfigError(f"data.image_format {config.image_format!r} must be one of auto, png, jpeg")
    if config.image_size < 1:
        raise ConfigError(f"data.image_size must be positive, got {config.image_size}")
    if not 0 <= config.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must lie in [0, 1), got {config.val_fraction}")
    if not 0 <= config.png_compress_level <= 9:
        raise ConfigError(f"data.png_compress_level must lie in 0..9, got {config.png_compress_level}")
    if config.workers < 0:
        raise ConfigError(f"data.workers must be >= 0 (0 = one per core), got {config.workers}")


def ingest(fmt: str, source: str | os.PathLike, out_dir: str | os.PathLike, config: DataConfig,
           *, progress: bool = True) -> dict[str, Any]:
    """Read `source` (a folder or s3://bucket/prefix) in format `fmt` and write the prepared dataset.

    Returns a summary: path, counts per split and class, num_inputs, num_images, num_rejected
    (rows in rejected.csv), num_errors, num_dropped. Raises SourceError for an unusable source.
    """
    _check_config(config)
    config = replace(config, image_format=storage_format(fmt, config.image_format))
    detect = config.faces == "detect"
    face_settings = face_step.settings_for(config)
    # before anything is read: never replace a folder we did not make, never write into the source
    out = check_output_dir(out_dir, producer=PRODUCER, marker=MARKER, sources=(source,))
    names = labels.class_names(config.num_classes)
    with open_source(source, out) as root:
        read = read_dataset(fmt, root, config.num_classes)
        jobs, duplicates = _plan(read.samples, config.num_classes, config.image_format)
        rejections = list(read.rejections) + duplicates
        with atomic_dir(out, producer=PRODUCER, marker=MARKER) as tmp:
            for folder in sorted({job.path.rpartition("/")[0] for job in jobs}):
                (tmp / folder).mkdir(parents=True, exist_ok=True)
            rows: list[dict[str, Any]] = []
            face_rows: list[dict[str, Any]] = []
            for job, prepared in zip(jobs, _prepare_all(jobs, root=root, out=tmp, config=config, fmt=fmt,
                                                        progress=progress, faces=face_settings if detect else None)):
                sample = job.sample
                if prepared.no_face:
                    read.dropped[NO_FACE] += 1
                    rejections.append(Rejection(sample.source, sample.row, DROPPED, prepared.error))
                    continue
                if prepared.error:
                    rejections.append(Rejection(sample.source, sample.row, ERROR, prepared.error))
                    continue
                if prepared.face is not None:
                    face = prepared.face
                    face_rows.append({"path": job.path, "source_id": sample.source_id, "found": face["found"],
                                      "score": face["score"], "box": face["box"],
                                      "landmarks": " ".join(f"{x:.1f} {y:.1f}" for x, y in face["landmarks"])})
                rows.append({"path": job.path, "label": sample.label, "label_name": names[sample.label],
                             "split": sample.split, "source_id": sample.source_id, "sha256": prepared.sha256,
                             "width": prepared.width, "height": prepared.height})
            carved = None
            if "val" not in read.native_splits and any(row["split"] == "train" for row in rows):
                carved = carve_val(rows, config.val_fraction, config.split_seed)
            rows.sort(key=lambda row: (SPLITS.index(row["split"]), row["path"]))
            faces_record = _faces_record(tmp, rows, config, face_settings, detect, face_rows)
            rejections.sort(key=_row_order)
            if read.num_inputs != len(rows) + len(rejections):  # a bug, never a data problem
                raise RuntimeError(f"ingest lost inputs: {read.num_inputs} read, {len(rows)} kept + "
                                   f"{len(rejections)} rejected")
            counts = {split: {name: 0 for name in names} for split in SPLITS}
            for row in rows:
                counts[row["split"]][row["label_name"]] += 1
            kinds = Counter(rejection.kind for rejection in rejections)
            summary = {
                PRODUCER_KEY: PRODUCER, "format": fmt.lower(), "source": str(source), "num_classes": config.num_classes,
                "class_names": list(names), "image_size": config.image_size,
                "image_format": config.image_format, "counts": counts, "num_inputs": read.num_inputs,
                "num_images": len(rows), "num_rejected": len(rejections), "num_errors": kinds[ERROR],
                "num_dropped": len(rejections) - kinds[ERROR], "carved_val": carved,
                "dropped": dict(sorted(read.dropped.items())), "faces": faces_record,
            }
            _write_csv(tmp / MANIFEST, MANIFEST_COLUMNS, rows)
            _write_csv(tmp / REJECTED, REJECTED_COLUMNS,
                       ({"source": r.source, "row": r.row, "kind": r.kind, "reason": r.reason} for r in rejections))
            if detect:
                face_rows.sort(key=lambda row: row["path"])
                _write_csv(tmp / FACES, FACES_COLUMNS, face_rows)
            write_json(tmp / DATASET_JSON, summary)
    return {**summary, "path": str(out)}
