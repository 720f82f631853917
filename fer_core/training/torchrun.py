"""`torchrun --nproc-per-node N -m fer_core.training.torchrun --data DIR --out RUN [--set k=v ...]`: the
same `train` as `fer train`, one process per rank, without the click layer (and without MLflow: the
`fer train` command tracks a single-process run)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from fer_core.config import load_config
from fer_core.training.engine import BEST_METRIC, train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_core.training.torchrun", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--params", default=None, help="params.yaml (default: $FER_PARAMS or ./params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--weights", default=None, help="class weights from this weights.json (fer data weights)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.params, args.overrides)
    result = train(config, args.data, args.out, resume=not args.no_resume, export=not args.no_export,
                   weights_file=args.weights)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best epoch {result.best_epoch}: {BEST_METRIC} {result.best_metrics.get(BEST_METRIC, float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
