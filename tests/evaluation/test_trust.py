"""Which answers to trust (fer_core/evaluation/trust.py): risk-coverage, error AUROC, the review rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fer_core.evaluation import trust


def test_risk_coverage_by_hand():
    # risks 0.1 < 0.2 < 0.3 < 0.4; the 2nd and 4th most trusted answers are wrong
    curve = trust.risk_coverage(np.array([0.3, 0.1, 0.4, 0.2]), np.array([True, True, False, False]))
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["risk"] == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert curve["aurc"] == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    assert curve["accuracy_at"] == {"0.90": pytest.approx(2 / 3), "0.80": pytest.approx(2 / 3)}


def test_error_auroc_is_sklearns_and_undefined_without_both_kinds():
    rng = np.random.default_rng(0)
    risk, correct = rng.random(200), rng.random(200) < 0.7
    assert trust.error_auroc(risk, correct) == pytest.approx(roc_auc_score(~correct, risk))
    assert trust.error_auroc(risk, np.ones(200, bool)) is None


def _answers(n: int, seed: int, informative: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answers whose errors the `informative` signal predicts and the other does not."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.8
    signal = np.where(correct, rng.normal(0, 1, n), rng.normal(1.5, 1, n))
    noise = rng.normal(0, 1, n)
    if informative == "uncertainty":
        uncertainty, confidence = np.exp(signal), 1 / (1 + np.exp(noise))
    else:
        uncertainty, confidence = np.exp(noise), 1 / (1 + np.exp(signal))
    return confidence, uncertainty, correct


@pytest.mark.parametrize("informative", ["uncertainty", "confidence"])
def test_the_rule_takes_the_signal_that_ranks_errors_best_and_flags_the_target_share(informative):
    confidence, uncertainty, correct = _answers(2000, 1, informative)
    rule = trust.choose_review_rule(confidence, uncertainty, correct, target_flagged=0.2)
    assert rule.signal == informative
    flagged = rule.flags(confidence, uncertainty)
    assert flagged.mean() == pytest.approx(0.2, abs=0.01) == rule.validation["flagged_share"]
    assert correct[~flagged].mean() > correct.mean() + 0.05  # the unflagged answers are right more often
    # on answers it has not seen, drawn alike: about the same share flagged, the same gain
    confidence2, uncertainty2, correct2 = _answers(2000, 2, informative)
    flagged2 = rule.flags(confidence2, uncertainty2)
    assert abs(flagged2.mean() - 0.2) < 0.04 and correct2[~flagged2].mean() > correct2.mean() + 0.05


def test_the_combination_is_chosen_only_when_both_signals_carry_information():
    rng = np.random.default_rng(3)
    n = 3000
    correct = rng.random(n) < 0.8
    # each signal sees half of what makes an answer wrong
    a, b = (np.where(correct, rng.normal(0, 1, n), rng.normal(1.2, 1, n)) for _ in range(2))
    rule = trust.choose_review_rule(1 / (1 + np.exp(b)), np.exp(a), correct)
    assert rule.signal == "combined" and rule.combination is not None
    assert rule.validation["error_auroc"]["combined_cross_validated"] > max(
        rule.validation["error_auroc"]["uncertainty"], rule.validation["error_auroc"]["confidence"])
    again = trust.ReviewRule.from_dict(rule.to_dict())
    assert again == rule and again.flag(0.5, 1.0) == rule.flag(0.5, 1.0)


def test_a_recorded_rule_is_checked():
    good = {"signal": "confidence", "threshold": 0.2, "target_flagged": 0.2}
    assert trust.ReviewRule.from_dict(good).flag(0.7, 1.0) is True  # 1 - 0.7 > 0.2
    for bad, match in [({"signal": "vibes"}, "unknown signal"), ({"threshold": "x"}, "malformed"),
                       ({"signal": "combined"}, "combination"), ({"target_flagged": 1.5}, "out of range"),
                       ({"threshold": float("nan")}, "out of range")]:
        with pytest.raises(ValueError, match=match):
            trust.ReviewRule.from_dict({**good, **bad})
    with pytest.raises(ValueError, match="target_flagged"):
        trust.choose_review_rule(np.ones(4), np.ones(4), np.array([True, False, True, True]), target_flagged=0)
