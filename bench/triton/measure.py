"""What `oanet bench triton` measures: the served ensemble through the product's client, one frame
per request from `concurrency` tasks, and the in-process model on batches of the same size."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

from deploy.embedded.stack import EmbeddedStack, free_port_settings
from oanet.settings import TritonSettings
from stream.stats import percentile
from stream.triton_client import TritonClient
from triton_models.oanet_fusion import core


@dataclass(frozen=True)
class Level:
    """One measured concurrency level."""

    mode: str  # "on" | "off" (dynamic batching) | "in-process"
    concurrency: int
    frames: int
    seconds: float
    latencies_ms: tuple[float, ...] = ()
    mean_batch: float = float("nan")  # frames per CNN execution

    @property
    def throughput(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q, float("nan"))


def executions(metrics_url: str, model: str) -> tuple[float, float]:
    """(inferences, executions) Triton counted for `model` so far: their ratio is the batch size."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    totals = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")  # the parser names counters <name>_total
            if name in totals and sample.labels.get("model") == model:
                totals[name] += sample.value
    return totals["nv_inference_count"], totals["nv_inference_exec_count"]


@contextmanager
def serve(repo: Path, state_dir: Path) -> Iterator[tuple[str, str]]:
    """A tritonserver on free ports serving `repo`; yields its gRPC address and metrics URL."""
    settings = free_port_settings(state_dir, repo, startup_timeout_s=300)
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        metrics = f"http://{settings.host}:{settings.triton_metrics_port}/metrics"
        yield f"{settings.host}:{settings.triton_grpc_port}", metrics
    finally:
        stack.down()


async def measure_level(client, metrics_url: str, frames: tuple[np.ndarray, ...], concurrency: int, seconds: float,
                   warmup_s: float, mode: str) -> Level:
    """`concurrency` tasks sending one frame per request back to back, as the stream worker does."""
    rois, values, missing = frames

    async def worker(index: int, until: float, latencies: list[float] | None) -> int:
        done = 0
        while time.perf_counter() < until:
            j = (index + done * concurrency) % len(rois)
            start = time.perf_counter()
            await client.infer(rois[j : j + 1], values[j : j + 1], missing[j : j + 1])
            if latencies is not None:
                latencies.append((time.perf_counter() - start) * 1000.0)
            done += 1
        return done

    # Warm-up at this concurrency: TorchScript specialises on the batch shapes it meets first.
    until = time.perf_counter() + warmup_s
    await asyncio.gather(*(worker(k, until, None) for k in range(concurrency)))
    latencies: list[float] = []
    before = executions(metrics_url, core.ENCODER_MODEL)
    start = time.perf_counter()
    counts = await asyncio.gather(*(worker(k, start + seconds, latencies) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    after = executions(metrics_url, core.ENCODER_MODEL)
    batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
    return Level(mode, concurrency, sum(counts), elapsed, tuple(latencies), batch)


async def interleaved(servers: dict[str, tuple[str, str]], local: InProcess, frames: tuple[np.ndarray, ...],
                       levels: list[int], seconds: float, warmup_s: float,
                       progress) -> tuple[dict[str, list[Level]], list[Level]]:
    clients = {mode: TritonClient(TritonSettings(url=url, max_in_flight=max(levels), request_timeout_s=120,
                                                 ready_timeout_s=300))
               for mode, (url, _) in servers.items()}
    served: dict[str, list[Level]] = {mode: [] for mode in servers}
    in_process: list[Level] = []
    try:
        for client in clients.values():
            await client.wait_ready()
        for concurrency in levels:
            for mode, client in clients.items():
                level = await measure_level(client, servers[mode][1], frames, concurrency, seconds, warmup_s, mode)
                progress(f"batching {mode:3s} concurrency {concurrency:3d}: {level.throughput:8.1f} frames/s")
                served[mode].append(level)
            # blocks the event loop on purpose: nothing else may run while the baseline is measured
            in_process.append(local.measure(concurrency, seconds))
            progress(f"in-process   batch {concurrency:5d}: {in_process[-1].throughput:8.1f} frames/s")
    finally:
        for client in clients.values():
            await client.close()
    return served, in_process


class InProcess:
    """The training-side model (TorchScript CNN + FusionCore) on batches of `concurrency` frames,
    with the thread count of the served instances; latency per batch."""

    def __init__(self, repo: Path, version: int, frames: tuple[np.ndarray, ...], device: str, threads: int):
        self.torch, self.frames, self.device = torch, frames, device
        torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.14 flags torch.jit as deprecated
            self.encoder = torch.jit.load(str(repo / core.ENCODER_MODEL / str(version) / "model.pt"),
                                          map_location=device)
        self.fusion = core.FusionCore.load(repo / core.FUSION_MODEL / str(version), num_threads=threads)

    def measure(self, batch: int, seconds: float) -> Level:
        torch = self.torch
        rois, values, missing = self.frames
        index = np.arange(batch) % len(rois)
        x = torch.from_numpy(rois[index]).to(self.device)

        def once() -> None:
            with torch.inference_mode():
                embedding, logit = self.encoder(x)
            self.fusion.predict(embedding.float().cpu().numpy(), logit.float().cpu().numpy()[:, 0], values[index],
                                missing[index])

        once()
        once()  # warm-up: TorchScript specialises on the first calls
        latencies, done = [], 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            once()
            latencies.append((time.perf_counter() - t0) * 1000.0)
            done += batch
        return Level("in-process", batch, done, time.perf_counter() - start, tuple(latencies), batch)
