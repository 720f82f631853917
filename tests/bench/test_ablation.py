"""bench/ablation.py's statistics: the paired deltas, their 95 % intervals and the verdicts drawn from
them (the ablation itself is a bench, run by hand: docs/results/ablation.md)."""

from __future__ import annotations

import pytest
from scipy import stats

from bench import ablation


def _runs(deltas: list[float]) -> list[dict]:
    """Runs whose +weights row differs from baseline by the given mean-class-accuracy deltas per seed."""
    runs = []
    for seed, delta in enumerate(deltas):
        for row, value in (("baseline", 0.5), ("+weights", 0.5 + delta)):
            runs.append({"row": row, "noise": "clean", "seed": seed, "seconds": 1.0,
                         "metrics": {"accuracy": 0.7, "mean_class_accuracy": value, "macro_f1": 0.6}})
    return runs


def test_the_interval_is_students_t_over_the_paired_seeds():
    diffs = [0.02, 0.05, 0.01, 0.04]
    low, high = ablation.confidence_interval(diffs)
    expected = stats.t.interval(0.95, len(diffs) - 1, loc=stats.tmean(diffs), scale=stats.sem(diffs))
    assert (low + high) / 2 == pytest.approx(sum(diffs) / len(diffs))
    # the t quantiles are tabulated to 3 decimals (3.182 for 3 degrees of freedom)
    assert (high - low) / 2 == pytest.approx((expected[1] - expected[0]) / 2, rel=1e-3)
    assert ablation.confidence_interval([0.1]) is None


@pytest.mark.parametrize(("deltas", "verdict"), [
    ([0.05, 0.06, 0.04], "held"),
    ([-0.05, -0.06, -0.04], "not held"),
    ([0.05, -0.04, 0.01], "inconclusive"),
    ([0.05], "inconclusive (one seed)"),
])
def test_a_claim_is_judged_by_its_interval(deltas, verdict):
    paired = ablation.paired_deltas(_runs(deltas))
    (claim,) = [v for v in ablation.verdicts(paired) if v["row"] == "+weights"]
    assert claim["verdict"] == verdict
    assert claim["mean_delta"] == pytest.approx(sum(deltas) / len(deltas))
    assert claim["seeds"] == list(range(len(deltas)))


@pytest.mark.slow
def test_a_parallel_ablation_continues_where_it_stopped(tmp_path):
    """Two runs at a time in worker processes (`--jobs 2`); a second invocation with one more seed trains
    only that seed's runs and rewrites the report from all of them."""
    import json
    import re
    import subprocess
    import sys

    from tests.docs import ROOT

    def ablate(*seeds: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bench.ablation", "--seeds", *map(str, seeds), "--conditions",
                               "uniform30", "--epochs", "1", "--scale", "0.02", "--jobs", "2", "--out",
                               str(tmp_path / "a.json"), "--report", str(tmp_path / "a.md"), "--work",
                               str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=600)

    first = ablate(0)
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"^4 runs, 2 at a time, \d+ torch thread\(s\) each$", first.stdout, re.M), first.stdout
    second = ablate(0, 1)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "4 runs, 2 at a time" in second.stdout            # seed 0's four were kept
    recorded = json.loads((tmp_path / "a.json").read_text())
    assert [(r["seed"], r["row"]) for r in recorded["runs"]] == [(s, row) for s in (0, 1) for row, _ in ablation.ROWS]
    assert recorded["settings"]["jobs"] == 2 and recorded["wall_seconds"] > 0
    mixing = [r for r in recorded["runs"] if r["row"] == "+mixing"]
    assert all(r["num_flipped_train"] > 0 for r in mixing)   # the noisy condition really flipped labels
    report = (tmp_path / "a.md").read_text()
    assert "mixing raises accuracy under label noise" in report and (tmp_path / "a.png").is_file()
