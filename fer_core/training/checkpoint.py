"""Resume state: state_dicts and plain data only, written atomically, read with weights_only=True.

`capture_rng`/`restore_rng` cover every RNG a step can draw from (torch CPU and CUDA, numpy, python,
and the mixing permutation's generator). Saved at a step boundary and restored before the next step,
they make a resumed run continue the exact random stream of an uninterrupted one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer_core.io import atomic_write_bytes

CHECKPOINT_FORMAT = 1


def capture_rng(mix_generator: torch.Generator) -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's state holds an ndarray; a list of ints keeps the checkpoint loadable with weights_only
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": random.getstate(),
        "mix": mix_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], mix_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    mix_generator.set_state(state["mix"])


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy (CUDA or channels_last tensors would pin the device/layout)."""
    return {key: value.detach().to("cpu").contiguous().clone() for key, value in module.state_dict().items()}


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save into memory, then one atomic rename: a kill never leaves half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_torch(path: str | Path) -> Any:
    """torch.load with weights_only=True: a checkpoint can hold data, never code."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable checkpoint (weights_only): {exc}") from exc
