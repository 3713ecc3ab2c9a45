"""The `oanet bench triton` run and its report (the method: bench/triton/__init__.py)."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import ExitStack
from pathlib import Path

from google.protobuf import json_format

from bench.common import BenchError, machine_line
from bench.triton.measure import InProcess, Level, interleaved, serve
from bench.triton.repository import bench_frames, check_servable, latest_version, read_config, unbatched_copy
from triton_models.oanet_fusion import core, serving

MODES = {"on": (True,), "off": (False,), "both": (True, False)}


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--concurrency must be comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise BenchError(f"--concurrency needs integers of at least 1, got {text!r}")
    return levels


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def report(served: dict[str, list[Level]], local: list[Level]) -> list[str]:
    lines = [f"{'mode':12s} {'conc':>4s} {'frames/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'frames':>7s} "
             f"{'batch':>6s}"]
    for mode_levels in [*served.values(), local]:
        for level in mode_levels:
            name = level.mode if level.mode == "in-process" else f"batching {level.mode}"
            lines.append(f"{name:12s} {level.concurrency:4d} {level.throughput:9.1f} {level.percentile(50):8.2f} "
                         f"{level.percentile(95):8.2f} {level.percentile(99):8.2f} {level.frames:7d} "
                         f"{level.mean_batch:6.1f}")
    lines.append("(batch: mean frames per CNN execution; in-process: batches of `conc` frames, latency per batch)")
    on, off = served.get("on"), served.get("off")
    if on and off:
        for a, b in zip(on, off, strict=True):
            lines.append(f"dynamic batching on/off at concurrency {a.concurrency:3d}: "
                         f"throughput x{_ratio(a.throughput, b.throughput):.2f} "
                         f"(p95 {a.percentile(95):.1f} ms on, {b.percentile(95):.1f} ms off)")
    for level, base in zip(on or off or [], local, strict=False):
        lines.append(f"Triton (batching {level.mode}) / in-process at {level.concurrency:3d} frames: "
                     f"{_ratio(level.throughput, base.throughput):.2f} of the in-process throughput")
    return lines


def run(repo: Path, levels: list[int], batching: str, seconds: float, warmup_s: float,
        progress=print) -> list[str]:
    if seconds <= 0 or warmup_s < 0:
        raise BenchError("--seconds must be positive and --warmup not negative")
    if not repo.is_dir():
        raise BenchError(f"model repository not found: {repo}")
    version = latest_version(repo)
    check_servable(repo)
    encoder = read_config(repo / core.ENCODER_MODEL / "config.pbtxt")
    gpu = any(g.kind == g.KIND_GPU for g in encoder.instance_group)
    device = "cuda" if gpu else "cpu"
    threads = serving.cpu_threads(json_format.MessageToDict(encoder, preserving_proto_field_name=True))
    frames = bench_frames(repo / core.FUSION_MODEL / str(version), 256)
    started = machine_line(device)
    progress(started)
    progress(f"repository {repo} version {version}: image {frames[0].shape[1]} px, {frames[1].shape[1]} parameters, "
             f"{threads} thread(s) per instance; {seconds:g} s per level after {warmup_s:g} s warm-up")
    local = InProcess(repo, version, frames, device, threads)
    with tempfile.TemporaryDirectory(prefix="oanet-bench-") as tmp, ExitStack() as servers:
        endpoints = {}
        for dynamic in MODES[batching]:
            mode = "on" if dynamic else "off"
            target = repo if dynamic else unbatched_copy(repo, version, Path(tmp) / "unbatched")
            endpoints[mode] = servers.enter_context(serve(target, Path(tmp) / f"stack-{mode}"))
        served, in_process = asyncio.run(interleaved(endpoints, local, frames, levels, seconds, warmup_s, progress))
    return [f"{started} at the start, {machine_line(device).rsplit('; ', 1)[1]} at the end",
            f"repository {repo} version {version}: {frames[0].shape[1]} px object ROI, {threads} thread(s) per "
            f"instance, {seconds:g} s per level", *report(served, in_process)]
