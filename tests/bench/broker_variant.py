"""A broker with stages left out of its order, or with big answers worked on inline on the
event loop, for benchmarks only (what do they cost, what do they save?).

python -m tests.bench.broker_variant --config broker.yaml --without audit,decided [--inline]
"""

from __future__ import annotations

import argparse
import functools
import sys

import broker.pipeline as pipeline
import broker.server as server
from broker.cli import main as broker_main
from broker.workers import Workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--without", default="", help="stage names, comma separated")
    parser.add_argument("--inline", action="store_true", help="no worker processes")
    args = parser.parse_args()
    if args.inline:  # every answer under the threshold, however big
        server.Workers = functools.partial(Workers, threshold=1 << 62)  # type: ignore[misc]
    left_out = {name for name in args.without.split(",") if name}
    order = tuple(name for name in pipeline.CALL_STAGES if name not in left_out)
    server.CALL_STAGES = order  # type: ignore[misc]
    sys.exit(broker_main(["run", "--config", args.config]))


if __name__ == "__main__":
    main()
