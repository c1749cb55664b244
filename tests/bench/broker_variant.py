"""A broker with stages left out of its order, for benchmarks only (what do they cost?).

python -m tests.bench.broker_variant --config broker.yaml --without audit,decided
"""

from __future__ import annotations

import argparse
import sys

import broker.pipeline as pipeline
import broker.server as server
from broker.cli import main as broker_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--without", default="", help="stage names, comma separated")
    args = parser.parse_args()
    left_out = {name for name in args.without.split(",") if name}
    order = tuple(name for name in pipeline.CALL_STAGES if name not in left_out)
    server.CALL_STAGES = order  # type: ignore[misc]
    sys.exit(broker_main(["run", "--config", args.config]))


if __name__ == "__main__":
    main()
