"""bench/bench_gpu.py runs everywhere: on CPU at small sizes it goes through every part (both steps,
the device data path, the engine's loop) and reports the GPU goals as not measured."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_the_gpu_bench_runs_on_cpu_at_small_sizes(tmp_path):
    from bench import bench_gpu

    out = tmp_path / "gpu.json"
    result = bench_gpu.main(["--device", "cpu", "--size", "32", "--batch", "8", "--iters", "2", "--rounds", "1",
                             "--train-images", "64", "--stored", "40", "--data-epochs", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["steps"]) == {"full", "full, model.head_pool=1", "plain"}   # params.yaml pools 7x7
    for row in result["steps"].values():
        assert row["images_per_s"] > 0 and row["memory_peak_mib"] > 0 and row["parameters"] > 10_000_000
    assert result["steps"]["plain"]["ratio_to_plain"] == 1.0
    assert result["data_path"]["images_per_s"] > 0 and result["data_path"]["images"] == 64
    sixty = result["sixty_epochs"]
    assert sixty["measured_run"]["epochs"] == 1 and sixty["measured_run"]["images"] == 64
    assert sixty["projected_s"] > 0 and sixty["measured_extrapolated_s"] > 0 and not sixty["measured_is_full"]
    assert all(goal["met"] is None and "no GPU" in goal["note"] for goal in result["goals"].values())
