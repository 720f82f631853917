"""The TorchServe handler without Java: a real ts Context with per-request processors, real model."""

from __future__ import annotations

import math
import uuid

import pytest
import torch
from PIL import Image
from ts.context import Context, RequestProcessor
from ts.metrics.metrics_store import MetricsStore

from fer_core.data.images import decode_image
from fer_core.data.transforms import eval_transform
from fer_core.labels import CLASS_NAMES_7
from fer_core.model.export import load_exported
from fer_core.serving.handler import FerHandler
from fer_core.serving.inference import LocalPredictor, load_meta
from tests.serving.conftest import BAD_REASONS, IMAGE_SIZE, encode, face_array

PIXEL_LIMIT = 1_000_000


def make_context(run_dir, version: str = "7") -> Context:
    """What TorchServe's worker builds (ts/service.py), pointed at a run folder as the model dir."""
    manifest = {"model": {"modelName": "fer", "modelVersion": version, "serializedFile": "model.safetensors",
                          "handler": "handler.py", "configFile": "model-config.yaml"}}
    return Context("fer", str(run_dir), manifest, 8, None, "0.12.0", metrics=MetricsStore(uuid.uuid4(), "fer"),
                   model_yaml_config={"handler": {"max_image_pixels": PIXEL_LIMIT}})


def handle(handler: FerHandler, context: Context, bodies: list) -> list:
    """One TorchServe batch: a request processor per item, as ts/service.py sets them."""
    context.request_processor = [RequestProcessor({}) for _ in bodies]
    context.request_ids = {i: f"req-{i}" for i in range(len(bodies))}
    return handler.handle([{"body": body} for body in bodies], context)


@pytest.fixture(scope="module")
def served(run_dir):
    handler = FerHandler()
    context = make_context(run_dir)
    handler.initialize(context)
    return handler, context


def expected_probabilities(run_dir, data: bytes) -> torch.Tensor:
    """Independent reference: decode, evaluation transform, the exported program (.pt2), softmax."""
    model = load_exported(run_dir / "model.pt2", load_meta(run_dir / "meta.json")["files"]["program"]["sha256"])
    x = eval_transform(IMAGE_SIZE)(decode_image(data)).unsqueeze(0)
    with torch.no_grad():
        logits, _ = model(x)
    return torch.softmax(logits, dim=1)[0]


def test_prediction_schema_and_values(served, run_dir, good_images):
    handler, context = served
    [answer] = handle(handler, context, [good_images["rgb_png"]])
    assert context.get_response_status(0) == (200, None)
    assert set(answer) == {"label", "probabilities", "uncertainty", "review", "faces", "faces_found", "model_name",
                           "model_version"}
    # a test pattern has no face: under serve.faces=auto the whole image is the one crop, said plainly
    [face] = answer["faces"]
    assert face["detected"] is False and face["box"] == [0, 0, 48, 40] and answer["faces_found"] == 0
    assert {key: face[key] for key in ("label", "probabilities", "uncertainty")} == {
        key: answer[key] for key in ("label", "probabilities", "uncertainty")}
    assert list(answer["probabilities"]) == list(CLASS_NAMES_7)
    assert math.isclose(sum(answer["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert answer["uncertainty"] > 0
    assert (answer["model_name"], answer["model_version"]) == ("fer", "7")
    reference = expected_probabilities(run_dir, good_images["rgb_png"])
    assert torch.allclose(torch.tensor(list(answer["probabilities"].values())), reference, atol=1e-5)


def test_every_image_mode_is_served(served, good_images):
    handler, context = served
    names = list(good_images)
    answers = handle(handler, context, [good_images[name] for name in names])
    for index, (name, answer) in enumerate(zip(names, answers)):
        assert context.get_response_status(index)[0] == 200, name
        assert math.isclose(sum(answer["probabilities"].values()), 1.0, rel_tol=1e-5), name
    by_name = dict(zip(names, answers))
    # Lossless re-encodings of the same gray pixels must give the same answer.
    for other in ("gray16_png",):
        assert by_name[other]["probabilities"] == pytest.approx(by_name["gray_png"]["probabilities"], abs=1e-5)
    assert by_name["rgba_png"]["probabilities"] == pytest.approx(by_name["rgb_png"]["probabilities"], abs=1e-6)


def test_exif_rotation_is_applied(served):
    handler, context = served
    image = Image.fromarray(face_array(60, 36))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    tagged = encode(image, "PNG", exif=exif.tobytes())
    upright = encode(image.transpose(Image.Transpose.ROTATE_270))
    plain = encode(image)
    rotated, expected, unrotated = handle(handler, context, [tagged, upright, plain])
    assert rotated["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert rotated["probabilities"] != pytest.approx(unrotated["probabilities"], abs=1e-6)


@pytest.mark.parametrize("kind", list(BAD_REASONS))
def test_bad_input_gets_its_own_400_in_a_batch(served, good_images, bad_images, kind):
    handler, context = served
    answers = handle(handler, context, [good_images["rgb_png"], bad_images[kind], good_images["gray_png"]])
    assert context.get_response_status(0)[0] == 200
    assert context.get_response_status(2)[0] == 200
    code, phrase = context.get_response_status(1)
    assert code == 400
    assert answers[1]["code"] == 400 and answers[1]["type"] == "InvalidImage"
    assert BAD_REASONS[kind] in answers[1]["message"].lower(), answers[1]["message"]
    assert phrase == answers[1]["message"]
    assert "label" in answers[0] and "label" in answers[2]


def test_text_and_json_bodies_are_refused(served):
    """TorchServe hands text/* bodies over as str and application/json as parsed objects."""
    handler, context = served
    answers = handle(handler, context, ["some text", {"image": "base64?"}, ""])
    assert [context.get_response_status(i)[0] for i in range(3)] == [400, 400, 400]
    assert "text" in answers[0]["message"]
    assert "json" in answers[1]["message"].lower()
    assert "empty" in answers[2]["message"]


def test_whole_batch_of_bad_inputs(served, bad_images):
    handler, context = served
    answers = handle(handler, context, list(bad_images.values()))
    assert all(answer["code"] == 400 for answer in answers)


def test_local_predictor_matches_handler(served, run_dir, good_images):
    handler, context = served
    bodies = list(good_images.values())
    local = LocalPredictor(run_dir, model_name="fer", model_version="7", max_image_pixels=PIXEL_LIMIT)
    assert local.predict(bodies) == handle(handler, context, bodies)


def test_meta_mismatch_is_refused(tmp_path, run_dir):
    (tmp_path / "model.safetensors").symlink_to(run_dir / "model.safetensors")
    meta = load_meta(run_dir / "meta.json")
    meta["mean"] = [0.5, 0.5, 0.5]
    import json

    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="mean/std"):
        FerHandler().initialize(make_context(tmp_path))


def test_meta_missing_keys_named(tmp_path):
    (tmp_path / "meta.json").write_text('{"class_names": ["a"]}')
    with pytest.raises(ValueError, match="image_size"):
        load_meta(tmp_path / "meta.json")


# --- photos: the face step in the handler ------------------------------------------------------------

def _handler(run_dir, faces: str = "auto", max_faces: int = 8) -> tuple[FerHandler, Context]:
    context = make_context(run_dir)
    context.model_yaml_config = {"handler": {"max_image_pixels": 20_000_000, "faces": faces,
                                             "max_faces": max_faces, "torch_threads": 1}}
    handler = FerHandler()
    handler.initialize(context)
    return handler, context


def test_a_group_photo_is_answered_face_by_face_largest_first(run_dir):
    from tests import photos as P

    handler, context = _handler(run_dir)
    group = P.group_photo()
    [answer] = handle(handler, context, [P.jpeg(group.image)])
    assert context.get_response_status(0)[0] == 200
    assert answer["faces_found"] == 3 and len(answer["faces"]) == 3
    for face, truth in zip(answer["faces"], group.faces):
        assert face["detected"] is True and P.overlap(face["box"], truth) > 0.7
        assert len(face["landmarks"]) == 5 and 0.5 <= face["score"] <= 1
        assert math.isclose(sum(face["probabilities"].values()), 1.0, rel_tol=1e-5)
    first = answer["faces"][0]
    assert (answer["label"], answer["probabilities"], answer["uncertainty"]) == (
        first["label"], first["probabilities"], first["uncertainty"])
    # serve.max_faces caps the faces answered, not the count found
    capped, context = _handler(run_dir, max_faces=2)
    [answer] = handle(capped, context, [P.jpeg(group.image)])
    assert answer["faces_found"] == 3 and [face["box"] for face in answer["faces"]] == [
        face["box"] for face in handle(handler, context, [P.jpeg(group.image)])[0]["faces"][:2]]


def test_required_answers_422_for_a_photo_without_a_face_and_serves_the_rest_of_the_batch(run_dir):
    from tests import photos as P

    handler, context = _handler(run_dir, faces="required")
    wall = P.jpeg(P.no_face_photos()["wall"])
    answers = handle(handler, context, [P.jpeg(P.portrait()), wall, P.png(P.portrait().convert("L"))])
    assert [context.get_response_status(i)[0] for i in range(3)] == [200, 422, 200]
    assert answers[1]["type"] == "NoFace" and "no face found in the 400x300 image" in answers[1]["message"]
    assert answers[0]["faces"][0]["detected"] and answers[2]["faces"][0]["detected"]
    # auto: the same photo is classified whole and says so; off: no detection at all
    auto, context = _handler(run_dir, faces="auto")
    [answer] = handle(auto, context, [wall])
    assert answer["faces"][0]["detected"] is False and answer["faces"][0]["box"] == [0, 0, 400, 300]
    off, context = _handler(run_dir, faces="off")
    [answer] = handle(off, context, [P.jpeg(P.portrait())])
    assert answer["faces"][0]["detected"] is False and answer["faces_found"] == 0


def test_a_detector_failure_is_a_422_for_that_image_not_a_dead_worker(run_dir, monkeypatch):
    import yuface.yuface

    from tests import photos as P

    handler, context = _handler(run_dir)
    photo = P.jpeg(P.portrait())
    real = yuface.yuface.detect
    calls = []

    def flaky(image):
        calls.append(image.shape)
        if len(calls) == 1:
            raise RuntimeError("simulated failure inside the detector")
        return real(image)

    monkeypatch.setattr(yuface.yuface, "detect", flaky)
    answers = handle(handler, context, [photo, photo])
    assert [context.get_response_status(i)[0] for i in range(2)] == [422, 200]
    assert answers[0]["type"] == "FaceDetectionFailed" and "simulated failure" in answers[0]["message"]
    assert answers[1]["faces"][0]["detected"] is True


def test_a_bad_face_setting_in_the_archive_fails_at_load(run_dir):
    with pytest.raises(ValueError, match="serve.faces"):
        _handler(run_dir, faces="sometimes")
    with pytest.raises(ValueError, match="serve.max_faces"):
        _handler(run_dir, max_faces=0)


def test_every_face_says_whether_to_review_it_by_the_models_rule(run_dir, tmp_path, good_images):
    """review.json (the rule evaluation chose on validation) travels with the model; each face's `review`
    is that rule applied to its answer; a model without one says `review: null`."""
    import json
    import shutil

    from tests import photos as P

    bodies = [good_images["rgb_png"], P.jpeg(P.group_photo().image)]
    assert all(answer["review"] is None for answer in LocalPredictor(run_dir).predict(bodies))
    for threshold, expected in ((0.0, True), (0.99, False)):
        model = tmp_path / f"model-{threshold}"
        shutil.copytree(run_dir, model)
        (model / "review.json").write_text(json.dumps({"signal": "confidence", "threshold": threshold,
                                                       "target_flagged": 0.2}))
        handler, context = _handler(model)
        answers = handle(handler, context, bodies)
        assert answers == LocalPredictor(model, model_name="fer", model_version="7").predict(bodies)
        for answer in answers:
            for face in answer["faces"]:
                assert face["review"] is (1 - max(face["probabilities"].values()) > threshold) is expected
            assert answer["review"] is answer["faces"][0]["review"]
    (model / "review.json").write_text(json.dumps({"signal": "vibes", "threshold": 1}))
    with pytest.raises(ValueError, match="review.json.*unknown signal"):
        LocalPredictor(model)
