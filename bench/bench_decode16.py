"""16-bit PNG decode cost: the integer conversion in fer_core.data.images.to_rgb against the float64
path it replaced, side by side in one process (issue "Nothing lost, nothing executed", item 9).

    .venv/bin/python -m bench.bench_decode16 [--side 4472] [--repeats 5]

A 4472x4472 16-bit gray PNG is ~46 KB on the wire; prints the median seconds and the traced memory
peak of each conversion and their ratio, and writes bench/results/decode16.json.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_core.data.images import to_rgb  # noqa: E402
from fer_core.io import write_json  # noqa: E402


def float64_to_rgb(image: Image.Image) -> Image.Image:
    """The conversion before: the whole image through float64."""
    array = np.asarray(image, dtype=np.float64)
    gray = ((array - 0.0) * (255.0 / 65535.0)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def measure(convert, image: Image.Image, repeats: int) -> dict[str, float]:
    times, peaks = [], []
    for _ in range(repeats):
        tracemalloc.start()
        started = time.perf_counter()
        convert(image)
        times.append(time.perf_counter() - started)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return {"median_s": statistics.median(times), "peak_mb": max(peaks) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=4472)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    array = np.zeros((args.side, args.side), dtype=np.uint16)
    array[::7, ::5] = 40000
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", optimize=True)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    image.load()
    new, old = measure(to_rgb, image, args.repeats), measure(float64_to_rgb, image, args.repeats)
    result = {"side": args.side, "png_bytes": len(buffer.getvalue()), "integer": new, "float64": old,
              "speedup": old["median_s"] / new["median_s"], "memory_ratio": old["peak_mb"] / new["peak_mb"]}
    print(f"{args.side}x{args.side} 16-bit PNG ({result['png_bytes']} bytes): integer {new['median_s']:.3f} s, "
          f"{new['peak_mb']:.0f} MB; float64 {old['median_s']:.3f} s, {old['peak_mb']:.0f} MB; "
          f"{result['speedup']:.1f}x faster, {result['memory_ratio']:.1f}x less memory")
    write_json(ROOT / "bench" / "results" / "decode16.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
