"""Serving benchmark: TorchServe vs the same exported model in-process, with the same batching.

    python -m bench.bench_serve [--image-size 64] [--requests 240] [--concurrency 1 8 32]

One run: export a FERNet (random weights: speed does not depend on them), package it, start a real
TorchServe on free loopback ports, and at each concurrency send the same images (a) over REST with the
bearer key to TorchServe's inference API, as clients do, and (b) to an in-process dynamic batcher (up to
serve.batch_size requests or serve.max_batch_delay_ms, like TorchServe's) around `LocalPredictor`, which
runs the handler's code.
Prints a table and writes bench/results/serve.json. Goals: TorchServe >= 0.9x in-process throughput at
concurrency 32; p99 < 3x p50 at concurrency 8.

The face step (serve.faces=auto, the default): the 100 px requests above are the crop path (the detector
runs on them and finds no face). Then, in the same run, a 640 px photo of one face (the portrait
matplotlib ships) at --photo-concurrency: detection on 640 px, alignment, one crop; its throughput
beside the crop path's at that concurrency is the cost of finding the face.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from fer_core.config import ModelConfig, ServeConfig
from fer_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fer_core.io import write_json
from fer_core.labels import CLASS_NAMES_7
from fer_core.serving.client import TorchServeClient, read_keys
from fer_core.serving.inference import LocalPredictor
from fer_core.serving.package import build_mar, resolve_run
from fer_core.serving.server import ServerSettings, start_server, stop_server

RESULTS = Path(__file__).with_name("results") / "serve.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_run(run_dir: Path, image_size: int) -> Path:
    import dataclasses

    from fer_core.model.export import write_model_files
    from fer_core.model.network import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(), len(CLASS_NAMES_7)).eval()
    meta = {"class_names": list(CLASS_NAMES_7), "num_classes": len(CLASS_NAMES_7), "image_size": image_size,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "model": dataclasses.asdict(ModelConfig())}
    write_model_files(model, run_dir, meta, image_size, program=False)
    return run_dir


def photo_images(count: int, side: int = 640) -> list[bytes]:
    """A real photo of one face at `side` px on its longer side (matplotlib's public-domain portrait),
    JPEG-encoded at a few qualities so the bodies differ."""
    import matplotlib

    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as source:
        photo = source.convert("RGB")
    scale = side / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
    encoded = []
    for quality in (86, 88, 90, 92):
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=quality)
        encoded.append(buffer.getvalue())
    return [encoded[index % len(encoded)] for index in range(count)]


def sample_images(count: int, side: int = 100) -> list[bytes]:
    """RAF-DB-sized (100x100) JPEGs, the size a client would send."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


class InProcessBatcher:
    """TorchServe's batching, in-process: gather up to `batch_size` requests or wait `delay_s`."""

    def __init__(self, predictor: LocalPredictor, batch_size: int, delay_s: float) -> None:
        self.predictor, self.batch_size, self.delay_s = predictor, batch_size, delay_s
        self.requests: queue.Queue[tuple[bytes, Future] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            first = self.requests.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.delay_s
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self.requests.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    self.requests.put(None)
                    break
                batch.append(item)
            answers = self.predictor.predict([data for data, _ in batch])
            for (_, future), answer in zip(batch, answers):
                future.set_result(answer)

    def predict(self, data: bytes) -> dict:
        future: Future = Future()
        self.requests.put((data, future))
        return future.result(timeout=300)

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(timeout=30)


def measure(call: Callable[[bytes], bool], images: list[bytes], concurrency: int) -> dict:
    """Throughput and latency percentiles of `len(images)` calls at `concurrency` threads."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def one(data: bytes) -> None:
        nonlocal failures
        start = time.perf_counter()
        ok = call(data)
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)
            failures += not ok

    # Warm-up at the same concurrency, so neither side pays one-off costs (JIT, kernel setup per batch
    # shape, connection set-up) inside the measurement. One pool for both: the REST sides keep one
    # connection per sending thread, and a second pool's new threads would open new connections
    # inside the measurement (they did, until this was one pool).
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(call, images[: max(16, 4 * concurrency)]))
        start = time.perf_counter()
        list(pool.map(one, images))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(images), "failures": failures, "wall_s": round(wall, 3),
        "throughput_rps": round(len(images) / wall, 2),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64, help="Model input size (224 = docs/method.md).")
    parser.add_argument("--requests", type=int, default=240, help="Requests per concurrency level and side.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--photo-concurrency", type=int, default=8,
                        help="Concurrency of the 640 px photo rows (0 = skip them).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    serve = ServeConfig()
    images = sample_images(args.requests)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer-bench-serve-") as work:
        work_dir = Path(work)
        run_dir = make_run(work_dir / "run", args.image_size)
        settings = ServerSettings.from_config(serve, home=work_dir / "torchserve", model_store=work_dir / "store",
                                              inference_port=free_port(), management_port=free_port(),
                                              metrics_port=free_port(), grpc_inference_port=free_port(),
                                              grpc_management_port=free_port())
        mar = build_mar(resolve_run(run_dir), settings.model_store, serve)
        if serve.torch_threads > 0:  # the in-process side gets the threads a TorchServe worker gets
            torch.set_num_threads(serve.torch_threads)
        local = LocalPredictor(run_dir, max_image_pixels=serve.max_image_pixels)
        batcher = InProcessBatcher(local, serve.batch_size, serve.max_batch_delay_ms / 1000)
        try:
            start_server(settings, [mar.name], timeout=300)
            keys = read_keys(settings.key_file)
            per_thread = threading.local()

            def rest(url: str) -> Callable[[bytes], bool]:
                """POST to `url` with one kept-alive client per sending thread."""
                def call(data: bytes) -> bool:
                    clients = per_thread.__dict__.setdefault("clients", {})
                    if url not in clients:
                        clients[url] = TorchServeClient(url, settings.management_url, keys, timeout=300)
                    return clients[url].predict(serve.model_name, data).ok
                return call

            via_rest = rest(settings.inference_url)

            def in_process(data: bytes) -> bool:
                return "label" in batcher.predict(data)

            for concurrency in args.concurrency:
                for side, call in (("torchserve", via_rest), ("in_process", in_process)):
                    row = {"side": side, "concurrency": concurrency, **measure(call, images, concurrency)}
                    rows.append(row)
                    print(f"{side:>19}  c={concurrency:<3} {row['throughput_rps']:>8.1f} req/s  "
                          f"p50 {row['p50_ms']:>8.1f} ms  p99 {row['p99_ms']:>8.1f} ms  failures {row['failures']}",
                          flush=True)
            if args.photo_concurrency > 0:
                photos = photo_images(args.requests)
                crops = images[:args.requests]
                for side, call, bodies in (("torchserve_crop100", via_rest, crops),
                                           ("torchserve_photo640", via_rest, photos),
                                           ("in_process_crop100", in_process, crops),
                                           ("in_process_photo640", in_process, photos)):
                    row = {"side": side, "concurrency": args.photo_concurrency,
                           **measure(call, bodies, args.photo_concurrency)}
                    rows.append(row)
                    print(f"{side:>19}  c={args.photo_concurrency:<3} {row['throughput_rps']:>8.1f} req/s  "
                          f"p50 {row['p50_ms']:>8.1f} ms  p99 {row['p99_ms']:>8.1f} ms  failures {row['failures']}",
                          flush=True)
        finally:
            batcher.close()
            stop_server(settings)

    def pick(side: str, concurrency: int) -> dict | None:
        return next((r for r in rows if r["side"] == side and r["concurrency"] == concurrency), None)

    goals = {}
    ts32, local32, ts8 = pick("torchserve", 32), pick("in_process", 32), pick("torchserve", 8)
    if ts32 and local32:
        ratio = ts32["throughput_rps"] / local32["throughput_rps"]
        goals["throughput_ratio_c32"] = {"value": round(ratio, 3), "goal": ">= 0.9", "met": ratio >= 0.9}
    for prefix in ("torchserve", "in_process"):
        photo, crop = pick(f"{prefix}_photo640", args.photo_concurrency), pick(f"{prefix}_crop100", args.photo_concurrency)
        if photo and crop:
            goals[f"{prefix}_photo640_over_crop100"] = {
                "value": round(photo["throughput_rps"] / crop["throughput_rps"], 3),
                "goal": "(what finding and aligning the face in a 640 px photo keeps of the crop path)", "met": None}
    if ts8:
        tail = ts8["p99_ms"] / ts8["p50_ms"]
        goals["p99_over_p50_c8"] = {"value": round(tail, 3), "goal": "< 3", "met": tail < 3}
    result = {
        "benchmark": "serve", "command": " ".join(["python -m bench.bench_serve", *(sys.argv[1:] if argv is None else argv)]),
        "image_size": args.image_size, "batch_size": serve.batch_size,
        "max_batch_delay_ms": serve.max_batch_delay_ms, "workers": serve.workers,
        "torch_threads": serve.torch_threads,
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "platform": platform.platform(), "torch": torch.__version__},
        "rows": rows, "goals": goals,
    }
    write_json(args.out, result)
    print(json.dumps(goals, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
