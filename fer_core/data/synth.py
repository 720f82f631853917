"""`fer data synth`: a synthetic dataset in RAF-DB basic's own layout, read by the real RAF-DB reader.

Why RAF-DB's layout and list: the demo and the tests then go through exactly the ingest path real
users take, and the class imbalance, split sizes and noisy-label protocol are RAF-DB's own. Output:

    OUT/EmoLabel/list_patition_label.txt   <name> <code 1..7>, labels as given (noisy if noise chosen)
    OUT/Image/aligned/<stem>_aligned.jpg   size x size RGB JPEG faces (fer_core.data.synth_render)
    OUT/synth_truth.csv                    name,split,label,clean_label,flipped,intensity,label_name,
                                           clean_label_name,cue_partner   (label/clean_label are RAF-DB
                                           codes 1..7, the *_name columns canonical names; flipped is
                                           0/1; cue_partner the class a weak face borrows cues from)
    OUT/synth.json                         the synth config and counts (how it was made)

Each image depends only on (seed, its row index in the full list), so a scaled set holds the very same
pictures as the full one, and one process or many give the same bytes. The folder appears atomically.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np

from fer_core.config import SynthConfig
from fer_core.io import PRODUCER_KEY, OutputError, atomic_dir, atomic_write_text, check_output_dir, write_json
from fer_core.data.formats import parse_rafdb_line
from fer_core.data.prepared import TRUTH, TRUTH_COLUMNS
from fer_core.labels import RAFDB_CODES

LIST_NAME = "list_patition_label.txt"
NOISE_PROTOCOLS: tuple[str, ...] = ("noise01", "noise02", "noise03")
NOISE_KINDS: tuple[str, ...] = ("uniform", "confusable")
# Class-dependent noise (synth.noise_kind=confusable): a flipped label becomes the class a person most
# often confuses it with (the same pairs whose cues the renderer shares).
FLIP_PARTNER: dict[str, str] = {"neutral": "sad", "happy": "neutral", "sad": "neutral", "surprise": "fear",
                                "fear": "surprise", "disgust": "anger", "anger": "disgust"}
MARKER = "synth.json"  # marks a folder as ours (its "producer"), so an existing one may be replaced
PRODUCER = "fer data synth"
_CHUNK = 64
# Independent random streams per row (the row index is the other part of the seed).
_STREAM_INTENSITY, _STREAM_RENDER = 0, 1
_STREAM_SCALE, _STREAM_NOISE = 2, 3


class SynthError(ValueError):
    """Bad synth input (list file, noise choice, scale); the message names the file/row/value."""


@dataclass(frozen=True)
class ListRow:
    """One line of a RAF-DB partition/label list."""

    index: int          # position in the list: with the seed, it fixes the image
    name: str           # e.g. train_00001.jpg
    split: str          # train | test (from the name's prefix)
    code: int           # RAF-DB code 1..7


@dataclass(frozen=True)
class Sample:
    """One image to render and the label it is published with."""

    index: int
    name: str
    split: str
    clean_code: int
    code: int
    intensity: float
    partner: str = "neutral"   # the class whose cues a weak face borrows

    @property
    def flipped(self) -> bool:
        return self.code != self.clean_code

    @property
    def image_name(self) -> str:
        return f"{Path(self.name).stem}_aligned.jpg"


def parse_label_list(text: str, source: str, *, expect_split: str | None = None) -> list[ListRow]:
    """Parse `<name> <code>` lines (fer_core.data.formats.parse_rafdb_line, the parser ingest uses);
    every bad line is an error naming `source`, the row and the value; a name listed twice is refused.

    `expect_split` (e.g. "train" for noise protocol files) rejects rows of another split.
    """
    rows: list[ListRow] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = parse_rafdb_line(line)
        if entry is None:
            continue
        if isinstance(entry, str):
            raise SynthError(f"{source} row {number}: {entry}")
        if expect_split is not None and entry.split != expect_split:
            raise SynthError(f"{source} row {number}: {entry.name!r} is not a {expect_split} row")
        if entry.name in seen:
            raise SynthError(f"{source} row {number}: {entry.name!r} is listed twice")
        seen.add(entry.name)
        rows.append(ListRow(len(rows), entry.name, entry.split, entry.code))
    if not rows:
        raise SynthError(f"{source}: no rows")
    return rows


def _package_list(file_name: str) -> tuple[str, str]:
    resource = resources.files("fer_core.data").joinpath("rafdb_lists", file_name)
    return resource.read_text(encoding="utf-8"), f"fer_core/data/rafdb_lists/{file_name}"


def rafdb_list() -> list[ListRow]:
    """The real RAF-DB basic partition list shipped as package data (15,339 rows)."""
    return parse_label_list(*_package_list(LIST_NAME))


def noise_protocol(name: str) -> dict[str, int]:
    """A noisy-label protocol file (train rows only): name -> the label it replaces the clean one with."""
    if name not in NOISE_PROTOCOLS:
        raise SynthError(f"unknown noise protocol {name!r}; expected one of {', '.join(NOISE_PROTOCOLS)}")
    rows = parse_label_list(*_package_list(f"{name}.txt"), expect_split="train")
    return {row.name: row.code for row in rows}


def stratified_subset(rows: list[ListRow], scale: float, seed: int) -> list[ListRow]:
    """A `scale` fraction of every (split, class) group, at least one row each, in list order.

    Rounded per group, so per-split class proportions stay RAF-DB's; the pick depends only on the seed.
    """
    if not 0.0 < scale <= 1.0:
        raise SynthError(f"synth.scale must be in (0, 1], got {scale}")
    if scale == 1.0:
        return list(rows)
    groups: dict[tuple[str, int], list[ListRow]] = {}
    for row in rows:
        groups.setdefault((row.split, row.code), []).append(row)
    rng = np.random.default_rng([seed, _STREAM_SCALE])
    keep: list[ListRow] = []
    for key in sorted(groups):
        members = groups[key]
        count = max(1, int(round(len(members) * scale)))
        picked = rng.permutation(len(members))[:count]
        keep.extend(members[i] for i in picked)
    return sorted(keep, key=lambda row: row.index)


def noisy_codes(rows: list[ListRow], noise: str, noise_rate: float, seed: int, kind: str = "uniform") -> list[int]:
    """The published label of each row: clean, from a protocol file, or flipped at `noise_rate`.

    A protocol replaces train labels by the file's (rows absent from the file stay clean). A rate flips
    round(rate * #train) train rows, chosen by the seed, each to a uniformly drawn other class
    (kind "uniform") or to its confusable partner `FLIP_PARTNER` (kind "confusable", class-dependent
    noise). Test rows are never touched: evaluation needs clean labels.
    """
    if kind not in NOISE_KINDS:
        raise SynthError(f"synth.noise_kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    codes = [row.code for row in rows]
    if noise and noise_rate:
        raise SynthError(f"choose one kind of label noise: synth.noise={noise!r} or "
                         f"synth.noise_rate={noise_rate}, not both")
    if noise:
        protocol = noise_protocol(noise)
        return [protocol.get(row.name, row.code) if row.split == "train" else row.code for row in rows]
    if not 0.0 <= noise_rate < 1.0:
        raise SynthError(f"synth.noise_rate must be in [0, 1), got {noise_rate}")
    train = [i for i, row in enumerate(rows) if row.split == "train"]
    flips = int(round(noise_rate * len(train)))
    if flips == 0:
        return codes
    rng = np.random.default_rng([seed, _STREAM_NOISE])
    all_codes = sorted(RAFDB_CODES)
    for position in sorted(rng.choice(len(train), size=flips, replace=False).tolist()):
        i = train[position]
        others = [code for code in all_codes if code != codes[i]]
        drawn = others[int(rng.integers(len(others)))]  # drawn for either kind: the same rows flip
        codes[i] = _CODE_OF[FLIP_PARTNER[RAFDB_CODES[codes[i]]]] if kind == "confusable" else drawn
    return codes


_CODE_OF = {name: code for code, name in RAFDB_CODES.items()}


def plan_samples(config: SynthConfig, rows: list[ListRow] | None = None) -> list[Sample]:
    """Which images to render, with their clean and published labels and intensities (no pixels yet)."""
    from fer_core.data.synth_render import sample_intensity, sample_partner

    if config.seed < 0:
        raise SynthError(f"synth.seed must be a non-negative integer, got {config.seed}")
    rows = rafdb_list() if rows is None else rows
    chosen = stratified_subset(rows, config.scale, config.seed)
    published = noisy_codes(chosen, config.noise, config.noise_rate, config.seed, config.noise_kind)
    samples = []
    for row, code in zip(chosen, published):
        rng = np.random.default_rng([config.seed, row.index, _STREAM_INTENSITY])
        intensity = round(sample_intensity(rng, RAFDB_CODES[row.code]), 4)
        partner = sample_partner(rng, RAFDB_CODES[row.code])
        samples.append(Sample(row.index, row.name, row.split, row.code, code, intensity, partner))
    return samples


def _render_chunk(job: tuple[str, int, int, list[tuple[int, str, str, float, str]]]) -> int:
    """Worker: render and write one chunk of images; returns how many it wrote."""
    from fer_core.data.synth_render import render_jpeg

    folder, seed, size, items = job
    for index, image_name, expression, intensity, partner in items:
        rng = np.random.default_rng([seed, index, _STREAM_RENDER])
        data = render_jpeg(expression, intensity, rng, size, partner)
        with open(os.path.join(folder, image_name), "wb") as handle:
            handle.write(data)
    return len(items)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def render_images(samples: list[Sample], folder: Path, *, seed: int, size: int, workers: int | None = None,
                  progress: bool = True) -> None:
    """Render every sample's JPEG into `folder`, in a process pool when workers > 1."""
    from tqdm import tqdm

    if size < 16:
        raise SynthError(f"synth.image_size must be at least 16, got {size}")
    workers = _available_cores() if not workers else workers
    items = [(s.index, s.image_name, RAFDB_CODES[s.clean_code], s.intensity, s.partner) for s in samples]
    jobs = [(str(folder), seed, size, items[i:i + _CHUNK]) for i in range(0, len(items), _CHUNK)]
    with tqdm(total=len(items), desc="synth faces", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                bar.update(_render_chunk(job))
            return
        # spawn, not fork: the parent may hold torch/MLflow threads that a fork would copy half-way.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for done in pool.map(_render_chunk, jobs):
                bar.update(done)


def list_text(samples: Iterable[Sample]) -> str:
    """The RAF-DB partition/label list of the published labels."""
    return "".join(f"{s.name} {s.code}\n" for s in samples)


def truth_csv(samples: Iterable[Sample]) -> str:
    """The sidecar: clean label, whether it was flipped, the intensity and the cue partner, per image."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    for s in samples:
        writer.writerow([s.name, s.split, s.code, s.clean_code, int(s.flipped), f"{s.intensity:.4f}",
                         RAFDB_CODES[s.code], RAFDB_CODES[s.clean_code], s.partner])
    return buffer.getvalue()


def counts_by_split(samples: Iterable[Sample], clean: bool = False) -> dict[str, dict[str, int]]:
    """{split: {class name: count}} of the published (or clean) labels."""
    counts: dict[str, Counter] = {}
    for s in samples:
        counts.setdefault(s.split, Counter())[RAFDB_CODES[s.clean_code if clean else s.code]] += 1
    return {split: dict(sorted(c.items())) for split, c in sorted(counts.items())}


def synthesize(out_dir: str | os.PathLike, config: SynthConfig, *, progress: bool = True,
               workers: int | None = None, list_file: str | os.PathLike | None = None) -> dict:
    """Write a synthetic RAF-DB basic dataset to `out_dir` (replaced atomically) and return a summary.

    `list_file`: another list in RAF-DB's format to take names/splits/labels from (default: the real
    RAF-DB list shipped with the package). `workers`: render processes (default: one per core).
    """
    try:
        out_dir = check_output_dir(out_dir, producer=PRODUCER, marker=MARKER,
                                   sources=(list_file,) if list_file is not None else ())
    except OutputError as exc:
        raise SynthError(str(exc)) from None
    rows = None
    if list_file is not None:
        try:
            rows = parse_label_list(Path(list_file).read_text(encoding="utf-8"), str(list_file))
        except FileNotFoundError:
            raise SynthError(f"label list not found: {list_file}") from None
    samples = plan_samples(config, rows)
    started = time.perf_counter()
    with atomic_dir(out_dir, producer=PRODUCER, marker=MARKER) as tmp:
        images = tmp / "Image" / "aligned"
        images.mkdir(parents=True)
        render_images(samples, images, seed=config.seed, size=config.image_size, workers=workers,
                      progress=progress)
        seconds = time.perf_counter() - started
        atomic_write_text(tmp / "EmoLabel" / LIST_NAME, list_text(samples))
        atomic_write_text(tmp / TRUTH, truth_csv(samples))
        # synth.json holds only what fixes the bytes (no paths, no timing): same seed, same folder.
        recipe = {
            PRODUCER_KEY: PRODUCER,
            "config": {name: getattr(config, name) for name in config.__dataclass_fields__},
            "list_source": str(list_file) if list_file is not None else f"fer_core/data/rafdb_lists/{LIST_NAME}",
            "num_images": len(samples),
            "num_flipped": sum(s.flipped for s in samples),
            "num_train": sum(s.split == "train" for s in samples),
            "counts": counts_by_split(samples),
            "clean_counts": counts_by_split(samples, clean=True),
        }
        write_json(tmp / MARKER, recipe)
    return {**recipe, "out_dir": str(out_dir.resolve()), "render_seconds": round(seconds, 3),
            "images_per_second": round(len(samples) / seconds, 1) if seconds > 0 else None}
