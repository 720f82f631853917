"""The model learns expressions, not noise: a short CPU run on a small balanced synthetic set.

- learning: test accuracy far above the majority-class rate, through the real data path, so a broken
  label-image link (shuffled manifest, wrong label order) or a broken loss fails here;
- minimum functionality: clear faces of every class are recognised;
- invariance: a horizontal flip keeps the prediction on nearly all clear faces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_core.config import Config, DataConfig, SynthConfig
from fer_core.data.ingest import ingest
from fer_core.data.synth import synthesize
from fer_core.data.synth_render import render_face
from fer_core.data.transforms import eval_transform
from fer_core.evaluation.evaluate import evaluate_run, load_best_model
from fer_core.labels import CLASS_NAMES_7, RAFDB_CODES
from fer_core.profiles import CPU_PROFILE
from fer_core.training.engine import train

pytestmark = [pytest.mark.behaviour, pytest.mark.slow]

# 150 faces per class at 32 px, 8 epochs (4 before mixing): ~100 s on one core. Smaller sets do not
# learn: 56 per class stayed near 0.3 accuracy even after 30 epochs (identities outnumber the cues).
TRAIN_PER_CLASS, TEST_PER_CLASS = 150, 15
SIZE = 32
# The short run's own schedule (not the profile's 12 epochs at lr_gamma 0.85): measured with these.
SHORT_RUN = {**CPU_PROFILE, "train.image_size": SIZE, "train.epochs": 8, "train.mixing_warmup_epochs": 4,
             "train.lr_gamma": 0.8, "train.device": "cpu", "train.batch_size": 32, "data.image_size": 48}


def balanced_list() -> str:
    """A RAF-DB-format list with the same number of faces per class (names as RAF-DB's own)."""
    lines, train_index, test_index = [], 0, 0
    for code in sorted(RAFDB_CODES):
        for _ in range(TRAIN_PER_CLASS):
            train_index += 1
            lines.append(f"train_{train_index:05d}.jpg {code}")
        for _ in range(TEST_PER_CLASS):
            test_index += 1
            lines.append(f"test_{test_index:04d}.jpg {code}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("behaviour")
    list_file = work / "list.txt"
    list_file.write_text(balanced_list())
    synthesize(work / "raw", SynthConfig(image_size=48, seed=5), progress=False, workers=1, list_file=list_file)
    data = work / "data"
    ingest("rafdb", work / "raw", data, DataConfig(image_size=48, workers=1), progress=False)
    config = Config().override(SHORT_RUN)
    torch.manual_seed(0)
    train(config, data, work / "run", resume=False, export=False)
    report = evaluate_run(work / "run", data, split="test", config=config)
    model, meta = load_best_model(work / "run")
    return report, model, meta


def clear_faces(per_class: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh faces (identities never seen in training) at full intensity, every class."""
    transform = eval_transform(SIZE)
    images, labels = [], []
    for label, name in enumerate(CLASS_NAMES_7):
        for index in range(per_class):
            face = render_face(name, 1.0, np.random.default_rng([991, label, index]), 48)
            images.append(transform(face))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_short_training_learns_far_above_the_majority_rate(trained):
    report, _, _ = trained
    # balanced test split of 105: chance is 1/7; a shuffled label link stays below ~0.25 (measured:
    # this run reaches 0.62)
    majority = 1 / len(CLASS_NAMES_7)
    assert report["accuracy"] >= majority + 0.3, report["per_class_recall"]
    assert report["mean_class_accuracy"] >= majority + 0.3


def test_clear_faces_of_every_class_are_recognised(trained):
    _, model, _ = trained
    images, labels = clear_faces()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    recall = {name: float((predicted[labels == i] == i).float().mean()) for i, name in enumerate(CLASS_NAMES_7)}
    assert float((predicted == labels).float().mean()) >= 0.45, recall  # measured 0.6 (chance 0.14)
    assert min(recall.values()) >= 0.1, recall  # no class is invisible (measured: each class 0.3 or more)


def test_horizontal_flip_keeps_the_prediction(trained):
    _, model, _ = trained
    images, _ = clear_faces()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
        flipped = model(torch.flip(images, dims=[3])).argmax(dim=1)
    assert len(set(predicted.tolist())) >= 5  # a model answering one class would agree with itself
    assert float((predicted == flipped).float().mean()) >= 0.65  # measured 0.76 after this short run


def test_served_through_the_face_step_the_answers_stay_as_good(trained):
    """Unseen faces of the dataset's kind (aligned crops) sent as JPEG bytes through the serving path:
    with serve.faces=auto those the detector finds are re-aligned to the template measured on the training
    images, and the answers stay as right as classifying each crop whole (serve.faces=off, what the
    model was trained on). A template that did not reproduce the training crops would lose accuracy."""
    import io

    from fer_core.serving.inference import face_policy, prepare_batch

    _, model, meta = trained
    assert meta["faces"]["template_source"] == "measured"
    bodies, labels = [], []
    for label, name in enumerate(CLASS_NAMES_7):
        for index in range(12):
            buffer = io.BytesIO()
            render_face(name, 1.0, np.random.default_rng([992, label, index]), 48).save(buffer, "JPEG", quality=90)
            bodies.append(buffer.getvalue())
            labels.append(label)
    labels = torch.tensor(labels)
    transform = eval_transform(SIZE)
    accuracy, detected = {}, {}
    for mode in ("off", "auto"):
        batch = prepare_batch(bodies, transform, 1_000_000, face_policy(meta, mode))
        with torch.no_grad():
            logits = model(batch.tensor)  # the training model's forward: logits (the served export adds uncertainty)
        first = [batch.indices.index(image) for image in range(len(bodies))]  # each image's largest face
        accuracy[mode] = float((logits[first].argmax(dim=1) == labels).float().mean())
        detected[mode] = sum(batch.faces[row]["detected"] for row in first) / len(bodies)
    # measured: a face found in 36 % of these 48 px faces; accuracy 0.46 whole, 0.48 through the face step
    assert detected["off"] == 0 and detected["auto"] >= 0.25, detected
    assert accuracy["auto"] >= accuracy["off"] - 0.08, accuracy
