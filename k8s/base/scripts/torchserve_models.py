"""TorchServe's config.properties for this pod: the ConfigMap's, plus every archive in the model store
registered with this environment's workers and batching.

Why: the .mar archives carry no workers or batch settings (they are the environment's, not the
model's); a pod loads its archives when it starts, so the registration's settings go into TorchServe's
own `load_models` and `models` properties (the per-model JSON TorchServe 0.12 reads at start). An
initContainer runs this after the model-store sync; TorchServe starts with the file it writes.
Usage: python torchserve_models.py BASE_CONFIG MODEL_STORE OUT_CONFIG
Environment: FER_WORKERS, FER_BATCH_SIZE, FER_MAX_BATCH_DELAY_MS (whole numbers, range-checked).
Standard library only (it runs in the component image beside s3_sync.py).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

SETTINGS = {  # environment variable -> (TorchServe's per-model key, lowest, highest)
    "FER_WORKERS": ("minWorkers", 1, 64),
    "FER_BATCH_SIZE": ("batchSize", 1, 1024),
    "FER_MAX_BATCH_DELAY_MS": ("maxBatchDelay", 0, 60_000),
}


def setting(name: str) -> int:
    key, low, high = SETTINGS[name]
    text = os.environ.get(name, "")
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise SystemExit(f"{name}={text!r}: must be a whole number in [{low}, {high}] ({key} of every model)")
    return int(text)


def archive_model(path: Path) -> tuple[str, str]:
    """(modelName, modelVersion) from a .mar's MAR-INF/MANIFEST.json; a clear error for anything else."""
    try:
        with zipfile.ZipFile(path) as archive:
            model = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
        return str(model["modelName"]), str(model["modelVersion"])
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SystemExit(f"{path}: not a model archive with a MAR-INF/MANIFEST.json ({exc})") from None


def render(base: str, store: Path) -> str:
    workers, batch, delay = (setting(name) for name in SETTINGS)
    models: dict[str, dict[str, dict]] = {}
    archives = sorted(store.glob("*.mar"))
    for path in archives:
        name, version = archive_model(path)
        if version in models.get(name, {}):
            raise SystemExit(f"{path}: {name} version {version} is in the store twice")
        models.setdefault(name, {})[version] = {
            "marName": path.name, "minWorkers": workers, "maxWorkers": workers, "batchSize": batch,
            "maxBatchDelay": delay, "defaultVersion": False}
    for versions in models.values():  # the newest archive of a model is its default version
        newest = max(versions, key=lambda version: (store / versions[version]["marName"]).stat().st_mtime)
        versions[newest]["defaultVersion"] = True
    lines = [line for line in base.splitlines() if not line.startswith(("load_models=", "models="))]
    if archives:  # none yet (a first install): TorchServe starts empty, the probes wait
        lines += [f"load_models={','.join(path.name for path in archives)}", "models=" + json.dumps(models, sort_keys=True)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        raise SystemExit(__doc__.split("\nUsage: ", 1)[1].splitlines()[0])
    base, store, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    text = render(base.read_text(encoding="utf-8"), store)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    print(f"{out}: {len(list(store.glob('*.mar')))} archive(s) registered with workers {os.environ['FER_WORKERS']}, "
          f"batch size {os.environ['FER_BATCH_SIZE']}, max batch delay {os.environ['FER_MAX_BATCH_DELAY_MS']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
