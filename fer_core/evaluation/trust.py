"""Which answers to trust: the learned uncertainty and the softmax confidence as signals of a wrong
answer, measured the way selective classification measures them, and the review rule served with the
model.

A signal is a risk score per answer (higher = trust it less):
- `uncertainty`: the model's learned per-sample uncertainty s(x) (docs/method.md section 2);
- `confidence`: 1 - the top softmax probability;
- `combined`: a logistic regression of "the answer is wrong" on [log s(x), 1 - top probability],
  fitted on the validation split (kept only when it beats both on validation, cross-validated).

For each: the AUROC of ranking the model's errors above its right answers, and the risk-coverage
curve (answers accepted from the most trusted down; risk = error rate of the accepted ones): its area
(AURC, lower is better) and the accuracy kept at 90 % and 80 % coverage.

The review rule: the signal that ranks errors best on validation, and the threshold above which
`target_flagged` of the validation answers fall; written to RUN/review.json, logged and registered
with the model, packaged into the .mar, and applied to every served face (`review: true|false`).
Plain numpy and scikit-learn (its AUROC and logistic regression): no file I/O here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SIGNALS = ("uncertainty", "confidence", "combined")
COVERAGES = (0.9, 0.8)
REVIEW_FILE = "review.json"
DEFAULT_TARGET_FLAGGED = 0.2


def error_auroc(risk: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of `risk` for telling wrong answers from right ones; None when all are right or all wrong."""
    from sklearn.metrics import roc_auc_score

    wrong = ~np.asarray(correct, dtype=bool)
    if wrong.all() or not wrong.any():
        return None
    return float(roc_auc_score(wrong, np.asarray(risk, dtype=np.float64)))


def risk_coverage(risk: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """The risk-coverage curve of accepting answers from the lowest risk up (ties broken by order):
    coverage k/N, risk = error rate among the first k; AURC (mean risk over k = 1..N) and the accuracy
    of the accepted answers at each of COVERAGES."""
    risk = np.asarray(risk, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n = len(risk)
    if n == 0:
        raise ValueError("risk_coverage needs at least one answer")
    order = np.argsort(risk, kind="stable")
    errors = np.cumsum(~correct[order])
    accepted = np.arange(1, n + 1)
    curve_risk = errors / accepted
    accuracy_at = {}
    for coverage in COVERAGES:
        k = max(1, int(math.floor(coverage * n)))
        accuracy_at[f"{coverage:.2f}"] = float(1.0 - curve_risk[k - 1])
    return {"coverage": (accepted / n).tolist(), "risk": curve_risk.tolist(), "aurc": float(curve_risk.mean()),
            "accuracy_at": accuracy_at}


def _features(confidence: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    return np.stack([np.log(np.maximum(np.asarray(uncertainty, dtype=np.float64), 1e-12)),
                     1.0 - np.asarray(confidence, dtype=np.float64)], axis=1)


@dataclass(frozen=True)
class Combination:
    """P(wrong) = sigmoid(intercept + w_u * log s(x) + w_c * (1 - top probability)), fitted on validation."""

    intercept: float
    log_uncertainty: float
    one_minus_confidence: float

    def score(self, confidence: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
        x = _features(confidence, uncertainty)
        z = self.intercept + x[:, 0] * self.log_uncertainty + x[:, 1] * self.one_minus_confidence
        return 1.0 / (1.0 + np.exp(-z))


def fit_combination(confidence: np.ndarray, uncertainty: np.ndarray, correct: np.ndarray) -> Combination | None:
    from sklearn.linear_model import LogisticRegression

    wrong = ~np.asarray(correct, dtype=bool)
    if wrong.all() or not wrong.any():
        return None
    model = LogisticRegression(C=1.0, max_iter=1000).fit(_features(confidence, uncertainty), wrong)
    (w_u, w_c), = model.coef_
    return Combination(float(model.intercept_[0]), float(w_u), float(w_c))


def signal_risk(signal: str, confidence: np.ndarray, uncertainty: np.ndarray,
                combination: Combination | None = None) -> np.ndarray:
    """The risk score of `signal` for each answer (higher = trust less)."""
    if signal == "uncertainty":
        return np.asarray(uncertainty, dtype=np.float64)
    if signal == "confidence":
        return 1.0 - np.asarray(confidence, dtype=np.float64)
    if signal == "combined":
        if combination is None:
            raise ValueError("the combined signal needs its fitted combination")
        return combination.score(confidence, uncertainty)
    raise ValueError(f"unknown trust signal {signal!r}; known: {', '.join(SIGNALS)}")


def _cross_validated_combined_auroc(confidence: np.ndarray, uncertainty: np.ndarray, correct: np.ndarray,
                                   folds: int = 5, seed: int = 0) -> float | None:
    """The combined signal's error AUROC on validation answers it was not fitted on (k-fold)."""
    n = len(correct)
    if n < 2 * folds:
        return None
    order = np.random.default_rng(seed).permutation(n)
    risk = np.empty(n)
    for fold in range(folds):
        held = order[fold::folds]
        fit = np.setdiff1d(order, held)
        combination = fit_combination(confidence[fit], uncertainty[fit], correct[fit])
        if combination is None:
            return None
        risk[held] = combination.score(confidence[held], uncertainty[held])
    return error_auroc(risk, correct)


@dataclass(frozen=True)
class ReviewRule:
    """Flag an answer for review when its `signal` risk is above `threshold` (chosen on validation so
    that `target_flagged` of those answers were flagged)."""

    signal: str
    threshold: float
    target_flagged: float
    combination: Combination | None = None
    validation: dict[str, Any] = field(default_factory=dict)  # flagged share, accuracies, AUROCs behind it

    def flags(self, confidence: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
        return signal_risk(self.signal, confidence, uncertainty, self.combination) > self.threshold

    def flag(self, confidence: float, uncertainty: float) -> bool:
        return bool(self.flags(np.array([confidence]), np.array([uncertainty]))[0])

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["combination"] = asdict(self.combination) if self.combination else None
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "ReviewRule":
        """A recorded rule back; ValueError naming what is wrong with it."""
        try:
            signal, threshold = str(record["signal"]), float(record["threshold"])
            target = float(record.get("target_flagged", DEFAULT_TARGET_FLAGGED))
            combination = Combination(**record["combination"]) if record.get("combination") else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"review rule is malformed: {exc!r}") from None
        if signal not in SIGNALS:
            raise ValueError(f"review rule: unknown signal {signal!r}; known: {', '.join(SIGNALS)}")
        if signal == "combined" and combination is None:
            raise ValueError("review rule: the combined signal needs its combination")
        if not math.isfinite(threshold) or not 0.0 < target < 1.0:
            raise ValueError(f"review rule: threshold {threshold} / target_flagged {target} out of range")
        return cls(signal, threshold, target, combination, dict(record.get("validation") or {}))


def signals_report(confidence: np.ndarray, uncertainty: np.ndarray, correct: np.ndarray,
                   combination: Combination | None = None, ambiguous: np.ndarray | None = None) -> dict[str, Any]:
    """Per signal: error AUROC, AURC, accuracy at 90 % / 80 % coverage, its curve, and (when `ambiguous`
    marks weak faces) the AUROC of ranking ambiguous faces above clear ones."""
    report: dict[str, Any] = {"answers": int(len(correct)), "accuracy": float(np.mean(correct)) if len(correct) else None}
    for signal in SIGNALS:
        if signal == "combined" and combination is None:
            continue
        risk = signal_risk(signal, confidence, uncertainty, combination)
        curve = risk_coverage(risk, correct)
        entry = {"error_auroc": error_auroc(risk, correct), "aurc": curve["aurc"], "accuracy_at": curve["accuracy_at"],
                 "curve": {"coverage": curve["coverage"], "risk": curve["risk"]}}
        if ambiguous is not None:
            entry["ambiguous_auroc"] = error_auroc(risk, ~np.asarray(ambiguous, dtype=bool))
        report[signal] = entry
    return report


def choose_review_rule(confidence: np.ndarray, uncertainty: np.ndarray, correct: np.ndarray,
                       target_flagged: float = DEFAULT_TARGET_FLAGGED) -> ReviewRule:
    """The validation split's review rule; its `validation` record says what was compared to choose it.

    The signal with the highest validation error AUROC (the combined one only when its cross-validated
    AUROC beats both plain ones); the threshold flags `target_flagged` of the validation answers."""
    if not 0.0 < target_flagged < 1.0:
        raise ValueError(f"target_flagged must lie in (0, 1), got {target_flagged}")
    confidence, uncertainty = np.asarray(confidence, dtype=np.float64), np.asarray(uncertainty, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    aurocs = {signal: error_auroc(signal_risk(signal, confidence, uncertainty), correct)
              for signal in ("uncertainty", "confidence")}
    combined_cv = _cross_validated_combined_auroc(confidence, uncertainty, correct)
    combination = fit_combination(confidence, uncertainty, correct)
    plain_best = max(aurocs, key=lambda name: -1.0 if aurocs[name] is None else aurocs[name])
    signal = plain_best
    if combined_cv is not None and combination is not None and all(
            value is None or combined_cv > value for value in aurocs.values()):
        signal = "combined"
    used = combination if signal == "combined" else None
    risk = signal_risk(signal, confidence, uncertainty, used)
    threshold = float(np.quantile(risk, 1.0 - target_flagged, method="higher"))
    flagged = risk > threshold
    kept = correct[~flagged]
    validation = {
        "answers": int(len(correct)), "flagged_share": float(flagged.mean()),
        "accuracy_all": float(correct.mean()), "accuracy_unflagged": float(kept.mean()) if len(kept) else None,
        "error_auroc": {**aurocs, "combined_cross_validated": combined_cv},
    }
    return ReviewRule(signal, threshold, float(target_flagged), used, validation)
