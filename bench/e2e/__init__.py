"""`oanet bench e2e`: the stream worker's stages alone and together, latency, memory.

The flags and the handler; the run is in bench/e2e/run.py, the stages alone in stages.py, the
end-to-end run and the latencies in endtoend.py, the frames' producer and reader in traffic.py.

One run, on the embedded stack (Tansu broker + tritonserver serving REPO, free ports, a state
folder of its own), with the frames of a dataset folder:

1. **Each stage alone**, one after the other with nothing else running, for `seconds` each:
   consume (one consumer fetching frames from the frames topic), decode (the worker's OCR pool
   processes decoding, fitting to the profile and cutting the object ROI), the OCR pool (the
   worker's stage: decode + OCR + ROI, `ocr_processes` processes), inference (the product's
   Triton client, `window` frames in flight, one frame per request, as the worker sends them),
   produce (verdict messages, acks=all, idempotent, `window` in flight).
2. **End to end**: one `oanet worker` process (`ocr_processes`, `window`) with a standing
   backlog (a producer keeps `backlog` frames ahead of the verdicts) for `duration` seconds
   after a warm-up: verdicts/s, the ratio to the slowest stage alone (target >= 0.8), and the
   worker's resident memory plus its OCR processes', sampled every second (target flat +-5%
   around the median of the first tenth).
3. **Latency** from the producer's send to the verdict's arrival at a reader: one frame alone
   (each after the previous verdict: the median), then frames paced at half the end-to-end
   rate (p50, p99; target p99 <= 3x the median alone).
"""


from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "e2e",
        help="the stream worker's stages alone and end to end (frames/s, ratio), latency, memory over a run",
        description="On the embedded stack (free ports) serving REPO, with DATA's frames: each stage's throughput "
        "alone (consume, decode, OCR pool, Triton inference via the client, produce), then one `oanet worker` with a "
        "standing backlog for --duration seconds (frames/s, ratio to the slowest stage, RSS of the worker and its OCR "
        "processes every second), then produce-to-verdict latency of one frame alone and at half the end-to-end rate. "
        "Prints the figures and the targets (ratio >= 0.8, p99 <= 3x, memory flat +-5%).",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder of the model's line")
    p.add_argument("--repo", type=Path, required=True, metavar="REPO", help="model repository (`oanet export`)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S", help="measuring time of each stage (default 10)")
    p.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help="end-to-end measuring time with a standing backlog; memory is sampled over it (default 60; "
                   "the issue's memory target is for 600)")
    p.add_argument("--warmup", type=float, default=20.0, metavar="S", help="end-to-end warm-up (default 20)")
    p.add_argument("--ocr-processes", type=int, default=2, metavar="N", help="the worker's OCR processes (default 2)")
    p.add_argument("--window", type=int, default=32, metavar="N", help="the worker's in-flight window (default 32)")
    p.add_argument("--alone", type=int, default=20, metavar="N", help="frames sent one at a time (default 20)")
    p.add_argument("--paced", type=float, default=30.0, metavar="S",
                   help="seconds of frames paced at half the end-to-end rate (default 30)")
    p.add_argument("--samples", type=Path, metavar="FILE.csv", help="write the memory samples (seconds, RSS, backlog)")
    p.set_defaults(func=_bench_e2e)


def _bench_e2e(args: argparse.Namespace) -> int:
    from bench.e2e.run import BenchOptions, run

    options = BenchOptions(data=args.data, repo=args.repo, seconds=args.seconds, duration_s=args.duration,
                           warmup_s=args.warmup, ocr_processes=args.ocr_processes, window=args.window,
                           alone=args.alone, paced_s=args.paced, samples=args.samples)
    for line in run(options, progress=lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True)):
        print(line, flush=True)
    return 0
