"""metrics.py against values worked out by hand, and against sklearn where it defines the same thing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fer_core import metrics as M

# 3 classes; y_true counts 3/2/1; hand-built so every number below can be checked on paper.
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_by_hand():
    confusion = M.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_scores_by_hand():
    confusion = M.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert M.accuracy(confusion) == pytest.approx(4 / 6)
    assert M.per_class_recall(confusion) == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert M.per_class_precision(confusion) == pytest.approx([1.0, 1 / 2, 1 / 2])
    # F1 = 2PR/(P+R): class 0: 2*(1*2/3)/(5/3) = 0.8; class 1: 0.5; class 2: 2*(0.5)/(1.5) = 2/3
    assert M.per_class_f1(confusion) == pytest.approx([0.8, 0.5, 2 / 3])
    assert M.mean_class_accuracy(confusion) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert M.macro_f1(confusion) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_agrees_with_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    confusion = M.confusion_matrix(y_true, y_pred, 7)
    assert np.array_equal(confusion, skm.confusion_matrix(y_true, y_pred, labels=range(7)))
    assert M.accuracy(confusion) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert M.mean_class_accuracy(confusion) == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert M.macro_f1(confusion) == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert M.per_class_precision(confusion) == pytest.approx(skm.precision_score(y_true, y_pred, average=None))


def test_absent_class_is_nan_and_left_out_of_the_mean():
    confusion = M.confusion_matrix([0, 0, 1], [0, 1, 1], 3)  # class 2 never occurs
    recall = M.per_class_recall(confusion)
    assert math.isnan(recall[2])
    assert M.mean_class_accuracy(confusion) == pytest.approx((0.5 + 1.0) / 2)
    assert M.nan_to_none({"r": recall.tolist()}) == {"r": [0.5, 1.0, None]}


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="outside 0..2"):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        M.confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="integer"):
        M.confusion_matrix([0.5], [0.0], 3)


def test_ece_by_hand():
    # two bins: (0, .5] and (.5, 1]. Samples: conf .9 right, .9 wrong, .8 right -> bin 2: acc 2/3, conf 13/15
    # one sample conf .4 (3 classes, max .4) wrong -> bin 1: acc 0, conf .4
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3]])
    y_true = [0, 1, 1, 2]
    expected = 3 / 4 * abs(2 / 3 - (0.9 + 0.9 + 0.8) / 3) + 1 / 4 * abs(0 - 0.4)
    assert M.expected_calibration_error(probs, y_true, num_bins=2) == pytest.approx(expected)
    bins = M.reliability_bins(probs, y_true, num_bins=2)
    assert bins["count"].tolist() == [1, 3]


def test_perfectly_confident_and_right_has_zero_ece():
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert M.expected_calibration_error(probs, [0, 1, 2, 1]) == pytest.approx(0.0)


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    probs = M.softmax([[1000.0, 0.0], [1.0, 1.0]])
    assert probs.sum(axis=1) == pytest.approx([1, 1])
    assert probs[1] == pytest.approx([0.5, 0.5])


def test_uncertainty_stats_split_correct_and_wrong():
    stats = M.uncertainty_stats([1.0, 2.0, 3.0, 10.0], [True, True, False, False])
    assert stats["mean_correct"] == pytest.approx(1.5)
    assert stats["median_wrong"] == pytest.approx(6.5)
    assert stats["count_wrong"] == 2


def test_classification_report_names_classes():
    probs = np.eye(3)[Y_PRED]
    report = M.classification_report(Y_TRUE, Y_PRED, probs, ["a", "b", "c"])
    assert report["per_class_recall"]["a"] == pytest.approx(2 / 3)
    assert report["per_class_support"] == {"a": 3, "b": 2, "c": 1}
    assert report["num_samples"] == 6
