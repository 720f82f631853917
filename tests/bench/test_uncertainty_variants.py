"""bench/uncertainty_variants.py: each variant is METHOD's CPU profile with exactly one valid setting
changed, and a run folder's figures reach the report (the sweep itself is a bench, run by hand:
docs/results/uncertainty_variants.md)."""

from __future__ import annotations

import pytest

from bench import uncertainty_variants as uv
from fer_core.config import load_config
from fer_core.io import write_json


def test_each_variant_changes_one_setting_of_the_method_and_loads():
    method = load_config(None, uv.overrides("method")).flat()
    for name, (change, _) in uv.VARIANTS.items():
        flat = load_config(None, uv.overrides(name)).flat()
        changed = sorted(key for key in flat if flat[key] != method[key])
        assert changed == sorted(change), name


def test_figures_reach_the_report(tmp_path):
    run = tmp_path / "lam-loss"
    signals = {"uncertainty": {"error_auroc": 0.812, "aurc": 0.0401, "ambiguous_auroc": 0.7},
               "confidence": {"error_auroc": 0.845, "aurc": 0.0389, "ambiguous_auroc": 0.76}}
    write_json(run / "metrics.json", {
        "accuracy": 0.861, "mean_class_accuracy": 0.843, "macro_f1": 0.84, "best_epoch": 12,
        "trust": {"test": signals, "review": {
            "signal": "confidence", "test": {"flagged_share": 0.19, "accuracy_unflagged": 0.926},
            "validation": {"error_auroc": {"uncertainty": 0.73, "confidence": 0.85}}}}})
    write_json(run / "history.json", [{"epoch_seconds": 40.0}, {"epoch_seconds": 50.0}])
    write_json(run / "config.json", {"model": {"logvar_bn": True}, "train": {"mix_loss": "lam"}})
    # 40 answers: the uncertainty ranks the 10 wrong ones first, the confidence puts 5 of them last
    rows = ["path,label,prediction,confidence,uncertainty"]
    for i in range(40):
        wrong = i < 10
        rows.append(f"f{i}.jpg,anger,{'fear' if wrong else 'anger'},{0.99 if wrong and i < 5 else 0.5 + i / 100},"
                    f"{2.0 - i / 100 if wrong else 1.0 - i / 100}")
    (run / "predictions_test.csv").write_text("\n".join(rows) + "\n")
    result = uv.figures("lam-loss", run, 1.0, threads=1)
    assert result["test_error_auroc_difference"] > 0
    low, high = result["test_error_auroc_difference_ci95"]
    assert low <= result["test_error_auroc_difference"] <= high
    assert result["test_error_auroc_uncertainty"] == pytest.approx(0.812)
    assert result["val_error_auroc_confidence"] == pytest.approx(0.85)
    assert result["epoch_seconds"] == pytest.approx(45.0)
    row = [line for line in uv.report_markdown([result], "cmd").splitlines() if line.startswith("| lam-loss")]
    assert row and "**0.812** / 0.845" in row[0] and "`train.mix_loss=lam`" in row[0] and "0.9260" in row[0]


def test_an_earlier_run_with_other_settings_is_refused_not_read(tmp_path):
    run = tmp_path / "runs" / "warmup-2"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    settings = {"model": {}, "train": {}, "weights": {}}
    for key, value in uv.CPU_PROFILE.items():  # the profile's own warmup (4), not the variant's 2
        section, field = key.split(".")
        settings[section][field] = value
    write_json(run / "config.json", settings)
    with pytest.raises(RuntimeError, match="train.mixing_warmup_epochs=4, not variant warmup-2's 2"):
        uv.run_variant("warmup-2", tmp_path / "data", run, threads=1)
