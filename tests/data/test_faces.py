"""The face step on real photos (fer_core/data/faces.py): detection, alignment, the template, limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from fer_core.data import faces as F
from tests import photos as P

pytestmark = pytest.mark.data

SETTINGS = F.FaceSettings()


def test_the_portrait_face_is_found_with_its_box_on_the_face():
    [face] = F.detect(P.portrait(), SETTINGS)
    assert P.overlap(face.box, P.PORTRAIT_FACE) > 0.8
    assert face.score >= SETTINGS.min_score
    x, y, w, h = face.box
    for px, py in face.landmarks:  # every landmark inside the box
        assert x <= px <= x + w and y <= py <= y + h
    (left_x, left_y), (right_x, right_y) = face.landmarks[:2]
    assert left_x < right_x and abs(left_y - right_y) < 0.1 * (right_x - left_x)  # image-left eye first, level
    assert face.landmarks[3][1] > face.landmarks[2][1] > left_y  # mouth below the nose below the eyes


def test_several_faces_come_largest_first_each_on_its_face():
    group = P.group_photo()
    faces = F.detect(group.image, SETTINGS)
    assert len(faces) == 3
    assert [face.area for face in faces] == sorted((face.area for face in faces), reverse=True)
    for face, truth in zip(faces, group.faces):
        assert P.overlap(face.box, truth) > 0.7


@pytest.mark.parametrize("side", [32, 64])
def test_a_small_face_in_a_larger_scene_is_found(side):
    scene = P.small_face_photo(side)
    faces = F.detect(scene.image, SETTINGS)
    assert len(faces) == 1 and P.overlap(faces[0].box, scene.faces[0]) > 0.7


@pytest.mark.parametrize("name", sorted(P.no_face_photos()))
def test_photos_without_a_face_give_none(name):
    assert F.detect(P.no_face_photos()[name], SETTINGS) == []


def test_grayscale_tiny_and_huge_images():
    assert len(F.detect(P.portrait().convert("L"), SETTINGS)) == 1
    assert F.detect(Image.new("RGB", (10, 10)), SETTINGS) == []
    assert F.detect(Image.new("RGB", (1, 500)), SETTINGS) == []
    huge = P.portrait().resize((512 * 8, 600 * 8))  # 19.7 Mpx: the detector sees 640 px, boxes come back in 4096 px
    [face] = F.detect(huge, SETTINGS)
    assert P.overlap([value / 8 for value in face.box], P.PORTRAIT_FACE) > 0.8


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -30.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = source @ (scale * rotation).T + shift
    matrix = F.similarity(source, target)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)
    with pytest.raises(F.FaceError, match="coincide"):
        F.similarity(np.ones((5, 2)), target)


def _landmarks_in_crop(crop: Image.Image) -> np.ndarray:
    [face] = F.detect(crop.resize((200, 200), Image.Resampling.BICUBIC), SETTINGS)
    return np.asarray(face.landmarks) / 200


@pytest.mark.parametrize("degrees", [0, 25])
def test_the_aligned_crop_puts_the_landmarks_on_the_template(degrees):
    photo = P.rotated_portrait(degrees)
    [face] = F.detect(photo, SETTINGS)
    crop = F.align(photo, face.landmarks, SETTINGS)
    assert crop.size == (SETTINGS.crop_size, SETTINGS.crop_size) and crop.mode == "RGB"
    # the detector, run again on the crop, finds the landmarks where the fitted transform put them, near
    # the template (the fit's residual: this face is not the template's average face)...
    size = SETTINGS.crop_size
    forward = F.similarity(np.asarray(face.landmarks), np.asarray(SETTINGS.template) * size)
    placed = (np.asarray(face.landmarks) @ forward[:, :2].T + forward[:, 2]) / size
    found = _landmarks_in_crop(crop)  # the detector's own scatter on a tight crop is up to ~6 % of its side
    assert np.linalg.norm(found - placed, axis=1).max() < 0.08
    assert np.linalg.norm(found - np.asarray(SETTINGS.template), axis=1).max() < 0.1
    # ...and a rotated face comes out upright: its eyes level
    assert abs(found[0, 1] - found[1, 1]) < 0.03


def test_a_face_much_larger_than_the_crop_is_reduced_without_aliasing():
    photo = P.portrait()
    [face] = F.detect(photo, SETTINGS)
    reference = np.asarray(F.align(photo, face.landmarks, SETTINGS), dtype=np.float32)
    # the same photo and landmarks at 8x: the face is ~1,300 px wide for a 100 px crop
    big = photo.resize((photo.width * 8, photo.height * 8), Image.Resampling.NEAREST)
    landmarks = [(x * 8, y * 8) for x, y in face.landmarks]
    crop = np.asarray(F.align(big, landmarks, SETTINGS), dtype=np.float32)
    # a plain bilinear warp samples 1 of 64 pixels per output pixel (aliasing: the print of the
    # photo's noise and texture); the reduced one averages them and matches the 1x crop
    aliased = np.asarray(big.transform((100, 100), Image.Transform.AFFINE, _inverse_coefficients(landmarks),
                                       resample=Image.Resampling.BILINEAR), dtype=np.float32)
    # (measured: 3.7 grey levels against the 1x crop, whose own reduction blocks fall elsewhere; 7.3 aliased)
    assert np.abs(crop - reference).mean() < 5
    assert np.abs(crop - reference).mean() < 0.6 * np.abs(aliased - reference).mean()


def _inverse_coefficients(landmarks) -> tuple[float, ...]:
    forward = F.similarity(np.asarray(landmarks), np.asarray(SETTINGS.template) * SETTINGS.crop_size)
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    return tuple(float(v) for v in inverse.ravel())


def test_standard_template_and_settings_are_checked_and_round_trip():
    assert np.allclose(F.standard_template(0.0), F.STANDARD_POINTS)
    looser = np.asarray(F.standard_template(0.5))
    assert np.linalg.norm(looser[0] - looser[1]) == pytest.approx(
        np.linalg.norm(np.subtract(F.STANDARD_POINTS[0], F.STANDARD_POINTS[1])) / 1.5)
    record = SETTINGS.to_dict()
    assert F.FaceSettings.from_dict(record) == F.FaceSettings.from_dict(F.FaceSettings.from_dict(record).to_dict())
    for bad, match in [({"template": [[0.5, 0.5]] * 5}, "coincide"), ({"template": [[0, 0]]}, "five"),
                       ({"crop_size": 4}, "crop_size"), ({"min_score": 0}, "min_score"),
                       ({"detect_side": 8}, "detect_side"), ({"template_source": "guess"}, "template_source"),
                       ({"detector": "mtcnn"}, "detector"), ({"template": "abc"}, "five")]:
        with pytest.raises(F.FaceError, match=match):
            F.FaceSettings.from_dict({**record, **bad})
    with pytest.raises(F.FaceError):
        F.standard_template(-0.1)


def test_the_template_of_aligned_faces_is_measured_from_them():
    from fer_core.data.synth_render import render_face

    faces = [render_face("happy", 0.8, np.random.default_rng([3, i])) for i in range(60)]
    template, record = F.measure_template(faces, SETTINGS)
    assert record["images"] == 60 and record["faces"] >= 30
    points = np.asarray(template)
    assert points[0, 0] < 0.5 < points[1, 0] and points[2, 1] > points[0, 1] and points[3, 1] > points[2, 1]
    # too few faces found: no template, and the record says how many
    none, record = F.measure_template([Image.new("RGB", (100, 100))] * 30, SETTINGS)
    assert none is None and record == {"images": 30, "faces": 0}
