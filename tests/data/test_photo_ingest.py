"""Photo datasets through ingest's face step (data.faces=detect), and the parity that matters: the crop
the server makes of a photo is, pixel for pixel, the crop ingest stored for training."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fer_cli.main import cli
from fer_core.config import DataConfig
from fer_core.data import faces as F
from fer_core.data.ingest import ingest
from tests import photos as P
from tests.data.fixtures import affectnet_row, write_affectnet

pytestmark = pytest.mark.data


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """An ImageFolder of photographs: one face, a group, a rotated and a small face, grayscale, and a
    photo without a face."""
    root = tmp_path_factory.mktemp("photos")
    files = {
        "train/happy/portrait.jpg": P.jpeg(P.portrait()),
        "train/happy/group.jpg": P.jpeg(P.group_photo().image),
        "train/sad/rotated.jpg": P.jpeg(P.rotated_portrait(20)),
        "train/sad/small.png": P.png(P.small_face_photo(48).image),
        "train/sad/wall.jpg": P.jpeg(P.no_face_photos()["wall"]),
        "test/happy/gray.png": P.png(P.portrait().convert("L")),
        "test/sad/mirrored.jpg": P.jpeg(P.portrait().transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def ingested(photo_folder, tmp_path_factory) -> Path:
    """The command of docs/faces.md, as a user types it (PHOTOS and DIR filled in)."""
    import shlex

    from tests.docs import doc_block

    [command] = doc_block("docs/faces.md", "## Photo datasets: `data.faces=detect`", gap=".*?").strip().splitlines()
    out = tmp_path_factory.mktemp("prepared") / "photos"
    words = shlex.split(command.replace("PHOTOS", str(photo_folder)).replace("DIR", str(out)))
    assert words[:3] == ["fer", "data", "ingest"] and "data.faces=detect" in words
    result = CliRunner().invoke(cli, words[1:])
    assert result.exit_code == 0, result.output
    assert "1 photos without a face" in result.output
    return out


def test_photos_become_aligned_face_crops_and_the_faceless_photo_is_rejected_with_why(ingested):
    manifest = read_csv(ingested / "manifest.csv")
    assert len(manifest) == 6
    for row in manifest:
        with Image.open(ingested / row["path"]) as image:
            assert image.size == (100, 100)
    [rejected] = read_csv(ingested / "rejected.csv")
    assert rejected["row"] == "wall.jpg" and rejected["kind"] == "dropped"
    assert "train/sad/wall.jpg" in rejected["reason"] and "no face found" in rejected["reason"]
    info = json.loads((ingested / "dataset.json").read_text())
    assert info["faces"]["mode"] == "detect" and info["faces"]["template_source"] == "standard"
    assert info["faces"]["crops"] == {"detected": 6, "given_landmarks": 0}
    assert info["dropped"] == {"no face": 1} and info["num_errors"] == 0


def test_faces_csv_records_each_crops_box_on_the_face(ingested):
    faces = {row["source_id"]: row for row in read_csv(ingested / "faces.csv")}
    assert set(faces) == {"train/happy/portrait", "train/happy/group", "train/sad/rotated", "train/sad/small",
                          "test/happy/gray", "test/sad/mirrored"}
    box = [int(v) for v in faces["train/happy/portrait"]["box"].split()]
    assert P.overlap(box, P.PORTRAIT_FACE) > 0.8
    group = P.group_photo()
    assert faces["train/happy/group"]["found"] == "3"  # the largest of the three is the one stored
    assert P.overlap([int(v) for v in faces["train/happy/group"]["box"].split()], group.faces[0]) > 0.7
    assert len(faces["train/sad/small"]["landmarks"].split()) == 10
    assert float(faces["test/happy/gray"]["score"]) >= 0.5


def _run_with_faces(tmp_path: Path, faces_record: dict) -> Path:
    """A model folder whose meta.json records how its training crops were made."""
    from tests.serving.conftest import make_run

    run = make_run(tmp_path / "run", seed=0)
    meta = json.loads((run / "meta.json").read_text())
    meta["faces"] = faces_record
    (run / "meta.json").write_text(json.dumps(meta))
    return run


def test_the_served_crop_of_a_photo_is_the_ingested_crop(ingested, photo_folder, tmp_path):
    from fer_core.serving.inference import LocalPredictor

    info = json.loads((ingested / "dataset.json").read_text())
    predictor = LocalPredictor(_run_with_faces(tmp_path, info["faces"]))
    stored = {row["source_id"]: row["path"] for row in read_csv(ingested / "manifest.csv")}
    for source_id, path in stored.items():
        photo = next(photo_folder.glob(f"{source_id}.*")).read_bytes()
        served_crop, face = predictor.crops(photo)[0]
        with Image.open(ingested / path) as image:
            assert np.array_equal(np.asarray(served_crop), np.asarray(image.convert("RGB"))), source_id
        assert face["detected"] is True
    # and so the served answer on the photo is the model's answer on the training crop
    photo = (photo_folder / "train/happy/portrait.jpg").read_bytes()
    crop_bytes = (ingested / stored["train/happy/portrait"]).read_bytes()
    whole = LocalPredictor(tmp_path / "run", faces="off")
    [from_photo], [from_crop] = predictor.predict([photo]), whole.predict([crop_bytes])
    assert from_photo["probabilities"] == pytest.approx(from_crop["probabilities"], abs=1e-6)


def test_aligned_datasets_record_their_own_measured_template(tmp_path):
    """faces=off (RAF-DB-like aligned crops): nothing is cropped, and the template serving will use is
    measured on the dataset's own images."""
    from fer_core.data.synth_render import render_jpeg

    root = tmp_path / "aligned"
    for index in range(80):
        split = "test" if index % 5 == 0 else "train"
        target = root / split / ("happy" if index % 2 else "sad") / f"{index:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(render_jpeg("happy" if index % 2 else "sad", 0.8, np.random.default_rng([7, index])))
    summary = ingest("imagefolder", root, tmp_path / "out", DataConfig(face_template_sample=64), progress=False)
    faces = summary["faces"]
    assert faces["mode"] == "off" and faces["template_source"] == "measured"
    assert faces["measured_on"]["images"] == 58 and faces["measured_on"]["faces"] >= 20  # every train image
    measured = np.asarray(faces["template"])
    assert not np.allclose(measured, F.standard_template(0.2), atol=0.005)
    assert not (tmp_path / "out" / "faces.csv").exists()
    # with no sample, or no face to measure, the standard template, said plainly
    plain = ingest("imagefolder", root, tmp_path / "out2", DataConfig(face_template_sample=0), progress=False)
    assert plain["faces"]["template_source"] == "standard" and plain["faces"]["measured_on"]["images"] == 0


def test_affectnet_aligns_from_its_own_landmarks(tmp_path):
    photo = P.portrait()
    [face] = F.detect(photo, F.FaceSettings())
    # AffectNet's 68 points (pixel indices): eyes 36-41 / 42-47 around the eye centres, nose tip 30,
    # mouth corners 48 / 54; the rest anywhere
    points = [(10.0, 10.0)] * 68
    (lx, ly), (rx, ry), nose, mouth_l, mouth_r = [(x - 0.5, y - 0.5) for x, y in face.landmarks]
    for index in range(36, 42):
        points[index] = (lx + (index % 2) * 2 - 1, ly)
    for index in range(42, 48):
        points[index] = (rx + (index % 2) * 2 - 1, ry)
    points[30], points[48], points[54] = nose, mouth_l, mouth_r
    row = affectnet_row("1/portrait.jpg", 1, box=(150, 100, 250, 260))
    row[5] = ";".join(f"{value:.2f}" for point in points for value in point)
    no_landmarks = affectnet_row("1/other.jpg", 2, box=(150, 100, 250, 260))
    no_landmarks[5] = ""
    root = write_affectnet(tmp_path / "affectnet", [row, no_landmarks], [affectnet_row("2/x.jpg", 1)])
    for name in ("1/portrait.jpg", "1/other.jpg"):
        (root / "Manually_Annotated_Images" / name).write_bytes(P.jpeg(photo, quality=95))
    summary = ingest("affectnet", root, tmp_path / "out", dataclasses.replace(DataConfig(), faces="detect"),
                     progress=False)
    faces = {row["source_id"]: row for row in read_csv(tmp_path / "out" / "faces.csv")}
    assert faces["1/portrait.jpg"]["found"] == "given" and faces["1/other.jpg"]["found"] == "1"
    assert summary["faces"]["crops"] == {"detected": 1, "given_landmarks": 1}
    # x.jpg (the fixture's 64 px pattern) has landmarks outside its image, so it goes to the detector,
    # which finds no face: dropped, named
    [rejected] = read_csv(tmp_path / "out" / "rejected.csv")
    assert "2/x.jpg" in rejected["reason"] and "no face" in rejected["reason"]
    manifest = {row["source_id"]: row["path"] for row in read_csv(tmp_path / "out" / "manifest.csv")}
    decoded = Image.open(root / "Manually_Annotated_Images" / "1/portrait.jpg").convert("RGB")
    expected = F.align(decoded, face.landmarks, F.settings_for(DataConfig()))
    with Image.open(tmp_path / "out" / manifest["1/portrait.jpg"]) as stored:
        # stored as JPEG (AffectNet's codec): within its quantisation
        assert np.abs(np.asarray(stored, dtype=np.float32) - np.asarray(expected, dtype=np.float32)).mean() < 3
