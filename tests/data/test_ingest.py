"""ingest(): the prepared dataset contract, broken inputs, determinism, atomicity and the CLI."""

from __future__ import annotations

from dataclasses import replace

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fer_core import labels
from fer_core.config import ConfigError, DataConfig
from fer_core.data import ingest as ingest_module
from fer_core.data.ingest import MANIFEST_COLUMNS, ingest, png_bytes
from fer_core.data.sources import SourceError
from fer_cli.main import cli
from tests.data.fixtures import (affectnet_row, encode, face, odd_but_good_images, pixel_string, rafdb_rows,
                                 truncated, votes_for, write_affectnet, write_fer2013, write_ferplus,
                                 write_imagefolder, write_rafdb)

SMALL = DataConfig(image_size=24, workers=1, val_fraction=0.25)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def load(out: Path) -> tuple[list[dict], list[dict], dict]:
    return read_csv(out / "manifest.csv"), read_csv(out / "rejected.csv"), json.loads((out / "dataset.json").read_text())


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_contract(out: Path, image_size: int) -> tuple[list[dict], list[dict], dict]:
    """What every later step relies on: columns, files, hashes, sizes, and no input lost."""
    manifest, rejected, info = load(out)
    assert list(manifest[0]) == list(MANIFEST_COLUMNS)
    assert list(rejected[0] if rejected else ["source", "row", "kind", "reason"]) == ["source", "row", "kind", "reason"]
    for row in manifest:
        stored = out / row["path"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row["sha256"]
        with Image.open(stored) as image:
            assert image.mode == "RGB" and image.size == (image_size, image_size)
        assert (int(row["width"]), int(row["height"])) == (image_size, image_size)
        assert info["class_names"][int(row["label"])] == row["label_name"]
        assert row["split"] in ("train", "val", "test")
    assert info["num_inputs"] == len(manifest) + len(rejected)
    assert info["num_rejected"] == len(rejected)
    assert info["num_errors"] == sum(r["kind"] == "error" for r in rejected)
    assert sum(sum(c.values()) for c in info["counts"].values()) == len(manifest)
    assert len({row["path"] for row in manifest}) == len(manifest)
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary folders left behind
    return manifest, rejected, info


def test_rafdb_broken_and_odd_inputs(tmp_path):
    rows = rafdb_rows(per_class_train=4, per_class_test=1)
    root = write_rafdb(tmp_path / "raf", rows)
    aligned = root / "Image" / "aligned"
    odd = odd_but_good_images()
    for stem, data in zip(("train_00001", "train_00002", "train_00003", "train_00004"), odd.values()):
        (aligned / f"{stem}_aligned.jpg").write_bytes(data)          # CMYK, RGBA, 16-bit, gray: all good
    (aligned / "train_00005_aligned.jpg").write_bytes(b"")            # zero bytes
    (aligned / "train_00006_aligned.jpg").write_bytes(truncated(encode(face(6, 64), "JPEG")))
    (aligned / "train_00007_aligned.jpg").unlink()                    # listed, missing
    (aligned / "train_00008_aligned.jpg").unlink()                    # missing aligned, original present
    (root / "Image" / "original").mkdir()
    (root / "Image" / "original" / "train_00008.jpg").write_bytes(encode(face(8, 50), "JPEG"))
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00099.jpg 0\n")

    out = tmp_path / "prepared"
    summary = ingest("rafdb", root, out, SMALL, progress=False)
    manifest, rejected, info = assert_contract(out, 24)

    assert summary["path"] == str(out.resolve()) and summary["num_inputs"] == len(rows) + 1 == info["num_inputs"]
    kept = {row["source_id"] for row in manifest}
    assert {"train_00001", "train_00002", "train_00003", "train_00004", "train_00008"} <= kept
    line = {Path(name).stem: str(number) for number, (name, _) in enumerate(rows, start=1)}
    reasons = {row["row"]: row["reason"] for row in rejected}
    assert set(reasons) == {line["train_00005"], line["train_00006"], line["train_00007"], str(len(rows) + 1)}
    assert "train_00005_aligned.jpg" in reasons[line["train_00005"]] and "0 bytes" in reasons[line["train_00005"]]
    assert "train_00006_aligned.jpg" in reasons[line["train_00006"]] and "truncated" in reasons[line["train_00006"]]
    assert "missing: none of Image/aligned/train_00007_aligned.jpg" in reasons[line["train_00007"]] and "Image/original/train_00007.jpg" in reasons[line["train_00007"]]
    assert "out of range" in reasons[str(len(rows) + 1)]
    assert {row["kind"] for row in rejected} == {"error"}
    assert all(row["source"] == "EmoLabel/list_patition_label.txt" for row in rejected)
    # RAF-DB code 1 is surprise: canonical index 3
    first = next(row for row in manifest if row["source_id"] == "train_00001")
    assert (first["label"], first["label_name"]) == ("3", "surprise")
    # the 16-bit ramp keeps its contrast after the RGB conversion
    ramp = next(row for row in manifest if row["source_id"] == "train_00003")
    assert np.ptp(np.asarray(Image.open(out / ramp["path"]))) > 200


def test_rafdb_val_is_carved_stratified_and_recorded(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=4, per_class_test=1))
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, SMALL, progress=False)
    manifest, _, info = assert_contract(out, 24)
    assert info["counts"]["val"] == {name: 1 for name in labels.CLASS_NAMES_7}   # 25 % of 4 per class
    assert info["counts"]["train"] == {name: 3 for name in labels.CLASS_NAMES_7}
    assert info["carved_val"]["total"] == 7 and info["carved_val"]["seed"] == 0
    assert all(row["source_id"].startswith("train_") for row in manifest if row["split"] == "val")
    # a different seed carves different images
    other = tmp_path / "other"
    ingest("rafdb", root, other, DataConfig(image_size=24, workers=1, val_fraction=0.25, split_seed=5), progress=False)
    val = lambda rows: {row["source_id"] for row in rows if row["split"] == "val"}  # noqa: E731
    assert val(manifest) != val(load(other)[0])


def test_rerun_and_worker_count_give_identical_bytes(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=3, per_class_test=1))
    (root / "Image" / "aligned" / "train_00002_aligned.jpg").write_bytes(b"not a jpeg")
    first, second = tmp_path / "a", tmp_path / "b"
    ingest("rafdb", root, first, SMALL, progress=False)
    ingest("rafdb", root, second, DataConfig(image_size=24, workers=2, val_fraction=0.25), progress=False)
    digest = tree_digest(first)
    assert digest == tree_digest(second)
    ingest("rafdb", root, first, SMALL, progress=False)   # rerun over an existing output
    assert tree_digest(first) == digest


def test_threads_and_processes_give_identical_bytes(tmp_path, monkeypatch):
    """Image files go to threads (up to 2 workers), pixel strings and more workers to processes;
    either pool gives the same dataset."""
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=3, per_class_test=1))
    config = DataConfig(image_size=24, workers=2, val_fraction=0.25)
    ingest("rafdb", root, tmp_path / "threads", config, progress=False)
    monkeypatch.setattr(ingest_module, "ThreadPoolExecutor", ingest_module.ProcessPoolExecutor)
    ingest("rafdb", root, tmp_path / "processes", config, progress=False)
    assert tree_digest(tmp_path / "threads") == tree_digest(tmp_path / "processes")


def test_killed_run_leaves_previous_output_untouched(tmp_path, monkeypatch):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1))
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, SMALL, progress=False)
    before = tree_digest(out)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill in the middle of writing

    monkeypatch.setattr(ingest_module, "carve_val", boom)
    with pytest.raises(KeyboardInterrupt):
        ingest("rafdb", root, out, SMALL, progress=False)
    assert tree_digest(out) == before
    assert not list(tmp_path.glob(".prepared.*"))


@pytest.mark.parametrize("num_classes", [7, 8])
def test_affectnet_crops_and_counts_drops(tmp_path, num_classes):
    train = [affectnet_row(f"1/{code}_{i}.jpg", code) for code in range(11) for i in range(2)]
    root = write_affectnet(tmp_path / "an", train, [affectnet_row("2/t.jpg", 1, box=(40, 40, 100, 100))])
    # a face box over a white square in a black image: the stored image must be all white
    canvas = Image.new("RGB", (64, 64))
    canvas.paste((255, 255, 255), (8, 8, 48, 48))
    (root / "Manually_Annotated_Images" / "1" / "1_0.jpg").write_bytes(encode(canvas, "PNG"))
    out = tmp_path / "prepared"
    ingest("affectnet", root, out, DataConfig(image_size=24, workers=1, num_classes=num_classes), progress=False)
    manifest, rejected, info = assert_contract(out, 24)

    white = next(row for row in manifest if row["source_id"] == "1/1_0.jpg")
    assert np.asarray(Image.open(out / white["path"])).min() >= 250
    clipped = next(row for row in manifest if row["source_id"] == "2/t.jpg")  # box past the edge: clipped
    assert clipped["split"] == "test"
    expected_drops = {"8 none": 2, "9 uncertain": 2, "10 no-face": 2} | ({"7 contempt": 2} if num_classes == 7 else {})
    assert info["dropped"] == expected_drops
    assert sum(row["kind"] == "dropped" for row in rejected) == sum(expected_drops.values())
    assert info["num_errors"] == 0
    assert info["carved_val"] is not None and info["counts"]["val"]["happy"] == 1
    assert ("contempt" in info["class_names"]) == (num_classes == 8)
    if num_classes == 8:
        assert info["counts"]["train"]["contempt"] + info["counts"]["val"]["contempt"] == 2


def test_fer2013_pixels_splits_and_bad_pixel_strings(tmp_path):
    rows = [(code, usage) for code in range(7) for usage in ("Training", "PublicTest", "PrivateTest")]
    root = write_fer2013(tmp_path / "fer", rows)
    csv_file = root / "fer2013.csv"
    good = pixel_string(0).split()
    bad = {"short": " ".join(good[:-1]), "word": " ".join(good[:-1] + ["x"]), "range": " ".join(good[:-1] + ["300"])}
    csv_file.write_text(csv_file.read_text() + "".join(f'3,"{text}",Training\n' for text in bad.values()))
    out = tmp_path / "prepared"
    ingest("fer2013", root, out, DataConfig(image_size=48, workers=2), progress=False)
    manifest, rejected, info = assert_contract(out, 48)

    assert info["carved_val"] is None
    assert all(info["counts"][split] == {name: 1 for name in labels.CLASS_NAMES_7} for split in ("train", "val", "test"))
    reasons = [row["reason"] for row in rejected]
    assert len(reasons) == 3
    assert "expected 2304 pixel values, got 2303" in reasons[0] and "fer2013.csv line 23" in reasons[0]
    assert "'x' is not a whole number" in reasons[1] and "0..255" in reasons[2]
    # the pixels go through unchanged (48 -> 48, gray -> equal RGB channels)
    stored = np.asarray(Image.open(out / next(r["path"] for r in manifest if r["source_id"] == "fer0000000")))
    assert (stored[..., 0] == np.asarray(pixel_string(0).split(), dtype=np.uint8).reshape(48, 48)).all()


def test_ferplus_end_to_end(tmp_path):
    rows = [(usage, votes_for(column)) for column in ("happiness", "sadness", "anger")
            for usage in ("Training", "PublicTest", "PrivateTest")]
    rows += [("Training", votes_for("NF", 10, rest_count=0)), ("Training", [4, 4, 2, 0, 0, 0, 0, 0, 0, 0])]
    out = tmp_path / "prepared"
    ingest("ferplus", write_ferplus(tmp_path / "fp", rows), out, DataConfig(image_size=32, workers=1), progress=False)
    manifest, rejected, info = assert_contract(out, 32)
    assert len(manifest) == 9 and info["dropped"] == {"NF": 1, "no majority": 1}
    assert [row["kind"] for row in rejected] == ["dropped", "dropped"] and info["num_errors"] == 0
    assert info["counts"]["val"]["sad"] == 1


def test_imagefolder_end_to_end_jpeg_storage(tmp_path):
    root = write_imagefolder(tmp_path / "if", {"train": {"happy": 3, "Sadness": 3, "smirk": 1}, "test": {"happy": 1}})
    out = tmp_path / "prepared"
    ingest("imagefolder", root, out, DataConfig(image_size=24, workers=1, image_format="jpeg", val_fraction=0.3),
           progress=False)
    manifest, rejected, info = assert_contract(out, 24)
    assert all(row["path"].endswith(".jpg") for row in manifest)
    assert [(r["source"], r["kind"]) for r in rejected] == [("train/smirk", "error")]
    assert info["counts"]["val"]["happy"] == 1 and info["counts"]["val"]["sad"] == 1


def test_duplicate_rows_are_rejected_not_merged(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1))
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00001.jpg 2\n")
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, SMALL, progress=False)
    _, rejected, _ = assert_contract(out, 24)
    assert len(rejected) == 1 and "duplicate of EmoLabel/list_patition_label.txt row 1" in rejected[0]["reason"]


def test_source_errors(tmp_path):
    with pytest.raises(SourceError, match="source folder not found"):
        ingest("rafdb", tmp_path / "nowhere", tmp_path / "out", SMALL, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="list_patition_label.txt not found"):
        ingest("rafdb", tmp_path / "empty", tmp_path / "out", SMALL, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_prints_summary_and_exits_2_on_source_error(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1))
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "ingest", "--format", "rafdb", "--source", str(root),
                                 "--out", str(tmp_path / "prepared"), "--set", "data.image_size=16",
                                 "--set", "data.workers=1"])
    assert result.exit_code == 0, result.output
    assert "prepared dataset:" in result.output and "surprise" in result.output
    assert "rejected 0" in result.output
    assert load(tmp_path / "prepared")[2]["image_size"] == 16

    missing = runner.invoke(cli, ["data", "ingest", "--format", "rafdb", "--source", str(tmp_path / "nope"),
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2
    assert "source folder not found" in missing.output and "Traceback" not in missing.output


@pytest.mark.parametrize("level", [0, 1, 9])
@pytest.mark.parametrize("shape", [(1, 1), (13, 29), (100, 100), (200, 120)])
def test_png_writer_is_lossless_and_readable(shape, level):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(pixels), level)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert (np.asarray(image) == pixels).all()
    assert png_bytes(Image.fromarray(pixels), level) == data
    if level == 0:  # stored blocks: 200x120 needs two of them (at most 65535 bytes each)
        assert len(data) > pixels.size + shape[0]


def test_png_compress_level_changes_size_not_pixels(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1))
    stored, packed = tmp_path / "stored", tmp_path / "packed"
    ingest("rafdb", root, stored, replace(SMALL, image_format="png"), progress=False)
    ingest("rafdb", root, packed, DataConfig(image_size=24, workers=1, val_fraction=0.25, png_compress_level=6,
                                             image_format="png"), progress=False)
    a, b = assert_contract(stored, 24)[0], assert_contract(packed, 24)[0]
    assert [row["path"] for row in a] == [row["path"] for row in b]
    for row in a:
        pixels = [np.asarray(Image.open(folder / row["path"])) for folder in (stored, packed)]
        assert np.array_equal(*pixels)
    assert sum((packed / r["path"]).stat().st_size for r in b) < sum((stored / r["path"]).stat().st_size for r in a)
    with pytest.raises(ConfigError, match="png_compress_level"):
        ingest("rafdb", root, tmp_path / "x", DataConfig(png_compress_level=10, image_format="png"), progress=False)


def _exif_turned_jpeg(size: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    return encode(face(77, size), "JPEG", exif=exif.tobytes())


def test_storage_ready_jpegs_are_stored_byte_for_byte(tmp_path, monkeypatch):
    """RGB JPEGs at the storage size with jpeg storage: the source bytes are the stored bytes."""
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=4, per_class_test=1), size=24)
    aligned = root / "Image" / "aligned"
    (aligned / "train_00001_aligned.jpg").write_bytes(_exif_turned_jpeg(24))              # needs turning
    (aligned / "train_00002_aligned.jpg").write_bytes(encode(face(2, 24, "L"), "JPEG"))   # gray
    (aligned / "train_00003_aligned.jpg").write_bytes(encode(face(3, 40), "JPEG"))        # other size
    (aligned / "train_00004_aligned.jpg").write_bytes(encode(face(4, 24), "PNG"))         # a PNG named .jpg
    (aligned / "train_00005_aligned.jpg").write_bytes(b"not a jpeg")                      # still rejected
    config = DataConfig(image_size=24, workers=1, val_fraction=0.25, image_format="jpeg")
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, config, progress=False)
    manifest, rejected, _ = assert_contract(out, 24)
    assert len(rejected) == 1 and "train_00005_aligned.jpg" in rejected[0]["reason"]
    copied = {row["source_id"] for row in manifest
              if (out / row["path"]).read_bytes() == (aligned / f"{row['source_id']}_aligned.jpg").read_bytes()}
    assert copied == {row["source_id"] for row in manifest} - {"train_00001", "train_00002", "train_00003",
                                                               "train_00004"}
    assert len(copied) == len(manifest) - 4
    # the turned one is stored upright (no EXIF left to apply twice)
    turned = next(row for row in manifest if row["source_id"] == "train_00001")
    assert Image.open(out / turned["path"]).getexif().get(0x0112) is None

    # the same facts as re-encoding every image: paths, labels, splits, sizes; only the bytes differ
    reencoded = tmp_path / "reencoded"
    monkeypatch.setattr(ingest_module, "can_store_as_is", lambda *args: False)
    ingest("rafdb", root, reencoded, config, progress=False)
    monkeypatch.undo()
    other, other_rejected, _ = assert_contract(reencoded, 24)
    facts = lambda rows: [{k: v for k, v in row.items() if k != "sha256"} for row in rows]  # noqa: E731
    assert facts(manifest) == facts(other) and rejected == other_rejected
    assert {row["source_id"] for row, again in zip(manifest, other) if row["sha256"] != again["sha256"]} >= copied

    # a rerun and another worker count give the same bytes
    digest = tree_digest(out)
    ingest("rafdb", root, out, config, progress=False)
    assert tree_digest(out) == digest
    ingest("rafdb", root, tmp_path / "two", DataConfig(image_size=24, workers=2, val_fraction=0.25,
                                                         image_format="jpeg"), progress=False)
    assert tree_digest(tmp_path / "two") == digest


def test_auto_keeps_each_formats_codec(tmp_path):
    from fer_core.data.ingest import storage_format

    assert [storage_format(fmt, "auto") for fmt in ("rafdb", "affectnet", "fer2013", "ferplus", "imagefolder")] == \
        ["jpeg", "jpeg", "png", "png", "png"]
    assert storage_format("rafdb", "PNG") == "png"
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1), size=24)
    ingest("rafdb", root, tmp_path / "prepared", SMALL, progress=False)  # SMALL: image_format auto
    manifest, _, _ = assert_contract(tmp_path / "prepared", 24)
    for row in manifest:  # RAF-DB's aligned JPEGs at the storage size: stored byte for byte
        source = root / "Image" / "aligned" / f"{row['source_id']}_aligned.jpg"
        assert (tmp_path / "prepared" / row["path"]).read_bytes() == source.read_bytes()


def test_png_storage_never_keeps_jpeg_bytes(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1), size=24)
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, replace(SMALL, image_format="png"), progress=False)
    manifest, _, _ = assert_contract(out, 24)
    for row in manifest:
        stored = out / row["path"]
        source = root / "Image" / "aligned" / f"{row['source_id']}_aligned.jpg"
        assert stored.read_bytes().startswith(b"\x89PNG")
        assert np.array_equal(np.asarray(Image.open(stored)), np.asarray(Image.open(source).convert("RGB")))


def test_large_jpeg_decodes_at_reduced_scale_close_to_a_full_decode(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1), size=24)
    big = encode(face(9, 200), "JPEG", quality=95)
    (root / "Image" / "aligned" / "train_00001_aligned.jpg").write_bytes(big)
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, SMALL, progress=False)
    manifest, _, _ = assert_contract(out, 24)
    row = next(row for row in manifest if row["source_id"] == "train_00001")
    full = Image.open(io.BytesIO(big)).convert("RGB").resize((24, 24), Image.Resampling.BICUBIC)
    difference = np.abs(np.asarray(Image.open(out / row["path"]), np.int16) - np.asarray(full, np.int16))
    assert difference.mean() < 8


def test_write_new_file_never_overwrites(tmp_path):
    target = tmp_path / "a.png"
    ingest_module.write_new_file(str(target), b"first")
    with pytest.raises(FileExistsError):
        ingest_module.write_new_file(str(target), b"second")
    assert target.read_bytes() == b"first"


def test_oversized_image_is_rejected_before_decoding(tmp_path):
    root = write_rafdb(tmp_path / "raf", rafdb_rows(per_class_train=2, per_class_test=1))
    (root / "Image" / "aligned" / "train_00001_aligned.jpg").write_bytes(encode(face(1, 64), "JPEG"))
    out = tmp_path / "prepared"
    ingest("rafdb", root, out, DataConfig(image_size=24, workers=1, max_pixels=40 * 40), progress=False)
    _, rejected, _ = assert_contract(out, 24)
    assert len(rejected) == 1 and "64x64 = 4096 pixels > limit 1600" in rejected[0]["reason"]
