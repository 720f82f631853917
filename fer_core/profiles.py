"""Named sets of config overrides: the CPU profile of the method, shared by `fer demo` (`make run`),
the benchmark calibration (bench/calibrate_synth.py), the ablation (bench/ablation.py) and the
behavioural model tests, so all of them measure the same model.

params.yaml holds the paper's GPU profile (224 px, ImageNet stem, 60 epochs, METHOD's learning
rates) and stays as it is. The CPU profile keeps the method (ResNet-18, CBAM in every block, mu/logvar
heads, mixing, class-weighted add-up loss) and changes only what the input size and a from-scratch
CPU budget call for (docs/method.md, section 5):

- 48 px input and the `small` stem (conv3x3 stride 2, no max pool): the final map is 3x3, where the
  ImageNet stem would shrink 64 px to 16 px before the first block and leave 2x2;
- head pooling 1 (global average): at a 3x3 map the 7x7 pooling of the paper would upsample 9 numbers
  per channel into a 25,088 -> 64 Linear;
- lr 1e-3 / 1e-2 (5x METHOD's) decaying by 0.85 per epoch: from scratch, with no pretrained backbone
  to fine-tune, METHOD's rates barely move in a few epochs;
- class weights clipped at `weights.max_weight` 3 (unclipped inverse weights, a 17x spread on
  RAF-DB's counts, collapsed short runs onto the minority classes at the old 64 px profile);
- 12 epochs, the first 4 without mixing (`train.mixing_warmup_epochs`): mixing from step 0 slows a
  from-scratch run like mixup does (docs/method.md, section 5, has the runs: 0.808 test accuracy
  without warmup at 8 epochs, 0.875 with this profile).
"""

from __future__ import annotations

from typing import Any

CPU_PROFILE: dict[str, Any] = {
    "train.image_size": 48,
    "model.stem": "small",
    "model.head_pool": 1,
    "train.epochs": 12,
    "train.mixing_warmup_epochs": 4,
    "train.batch_size": 32,
    "train.lr": 1e-3,
    "train.lr_fc": 1e-2,
    "train.lr_gamma": 0.85,
    "train.workers": 0,
    "train.early_stopping_patience": 0,
    "train.checkpoint_every_steps": 0,
    "weights.max_weight": 3.0,
}

PROFILES: dict[str, dict[str, Any]] = {"cpu": CPU_PROFILE, "gpu": {}}


def profile_overrides(name: str) -> dict[str, Any]:
    """The overrides of a named profile (a copy); `gpu` is params.yaml itself."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return dict(PROFILES[name])
