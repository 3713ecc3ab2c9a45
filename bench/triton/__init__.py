"""`oanet bench triton`: throughput and latency of the served `oanet` ensemble per client
concurrency, with Triton's dynamic batching on and off, and the in-process model (TorchScript
CNN + `FusionCore`) on the same frames in the same run.

`on` serves the repository as exported, `off` a copy of its latest version whose encoder and
fusion configs lack `dynamic_batching`, so every request runs alone; each has its own
tritonserver (the embedded stack's, on free ports), and both stay up, idle while the other is
measured. Load comes from the product's own client (`stream.triton_client.TritonClient`):
`concurrency` tasks, each sending one frame per request back to back, as the stream worker
does. The in-process baseline runs batches of `concurrency` frames, the batch Triton could
form at that concurrency, with the served thread count. The three alternate level by level,
so a change in the machine's load (it is shared) hits them alike.
"

The flags and the handler; the run and its report are in bench/triton/run.py, the measurements in
measure.py, the repository it serves (and its unbatched copy) in repository.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "triton",
        help="throughput and p50/p95/p99 latency of the served ensemble per concurrency, dynamic batching on/off, "
        "against the in-process model",
        description="Starts tritonserver (embedded stack, free ports) over REPO's latest version, drives it with the "
        "stream client (one frame per request, N concurrent tasks) and prints frames/s and latency per concurrency; "
        "--batching both also serves a copy with dynamic batching off and prints the on/off ratio. The in-process "
        "model (TorchScript + fusion core) runs batches of N frames afterwards for the serving-overhead ratio.",
    )
    p.add_argument("--repo", type=Path, required=True, metavar="REPO",
                   help="model repository written by `oanet export`")
    p.add_argument("--concurrency", default="1,4,16,64", metavar="N,N,...",
                   help="concurrent requests to measure (default 1,4,16,64)")
    p.add_argument("--batching", choices=("on", "off", "both"), default="both",
                   help="dynamic batching as exported (on), removed (off), or both in one run (default both)")
    p.add_argument("--seconds", type=float, default=5.0, metavar="S", help="measuring time per level (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, metavar="S", help="warm-up per level (default 1)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from bench.triton.run import parse_concurrency, run

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for line in run(args.repo, parse_concurrency(args.concurrency), args.batching, args.seconds, args.warmup,
                    progress=progress):
        print(line)
    return 0
