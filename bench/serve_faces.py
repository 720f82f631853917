"""A trained model's answers on its test split through the serving path, with and without the face step.

    .venv/bin/python -m bench.serve_faces --run RUN --data PREPARED [--split test] [--out FILE]

RUN holds model.safetensors + meta.json (`fer train`'s run folder, or the pipeline's train/model
artifact); PREPARED is the prepared dataset it was trained on. Every image of the split is sent as
its stored bytes to `LocalPredictor` (the TorchServe handler's code, in-process) under serve.faces=off
(the whole image is one crop: what the server did before the face step) and serve.faces=auto (faces
found are aligned to the model's template, the rest classified whole). Prints and writes accuracy and
mean class accuracy of each, the share of images where a face was detected, how often the two
answers agree, and, when the model carries its review rule (RUN/review.json, written by evaluation),
the share of answers flagged for review and the accuracy of the answers that were not. The question it answers: does serving through the face step keep the model's figures on
crops like its training crops (issue "Real photos in")?
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fer_core.data.prepared import read_class_names, read_manifest
from fer_core.io import write_json
from fer_core.metrics import accuracy, confusion_matrix, mean_class_accuracy
from fer_core.serving.inference import LocalPredictor

RESULTS = Path(__file__).with_name("results") / "serve_faces.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="Folder with model.safetensors and meta.json.")
    parser.add_argument("--data", type=Path, required=True, help="The prepared dataset the model was trained on.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = read_class_names(args.data)
    rows = [row for row in read_manifest(args.data) if row.split == args.split]
    truth = np.array([row.label for row in rows])
    bodies = [(args.data / row.path).read_bytes() for row in rows]
    result: dict = {"benchmark": "serve_faces", "run": str(args.run), "data": str(args.data), "split": args.split,
                    "images": len(rows), "modes": {}}
    answers_by_mode = {}
    for mode in ("off", "auto"):
        predictor = LocalPredictor(args.run, faces=mode)
        started = time.perf_counter()
        answers = []
        for start in range(0, len(bodies), args.batch):
            answers += predictor.predict(bodies[start:start + args.batch])
        seconds = time.perf_counter() - started
        predicted = np.array([names.index(answer["label"]) for answer in answers])
        confusion = confusion_matrix(truth, predicted, len(names))
        report = {"accuracy": accuracy(confusion), "mean_class_accuracy": mean_class_accuracy(confusion)}
        detected = sum(answer["faces"][0]["detected"] for answer in answers)
        answers_by_mode[mode] = predicted
        result["modes"][mode] = {
            "accuracy": round(float(report["accuracy"]), 4),
            "mean_class_accuracy": round(float(report["mean_class_accuracy"]), 4),
            "detected": detected, "detected_share": round(detected / len(rows), 4),
            "seconds": round(seconds, 1),
        }
        print(f"serve.faces={mode:<5} accuracy {report['accuracy']:.4f}  mean class accuracy "
              f"{report['mean_class_accuracy']:.4f}  face detected in {detected} of {len(rows)}  ({seconds:.1f} s)")
        flags = [answer["review"] for answer in answers]
        if None not in flags:  # the model carries a review rule (RUN/review.json): the answers a client keeps
            flagged = np.array(flags, dtype=bool)
            kept = float((predicted == truth)[~flagged].mean()) if (~flagged).any() else None
            result["modes"][mode]["review"] = {"flagged_share": round(float(flagged.mean()), 4),
                                               "accuracy_unflagged": None if kept is None else round(kept, 4)}
            print(f"  review: {flagged.mean():.1%} flagged; accuracy of the unflagged answers "
                  f"{kept:.4f} (all: {report['accuracy']:.4f})")
    result["agreement"] = round(float((answers_by_mode["off"] == answers_by_mode["auto"]).mean()), 4)
    result["template"] = json.loads((args.run / "meta.json").read_text()).get("faces")
    print(f"the two answers agree on {result['agreement']:.1%} of the images")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
