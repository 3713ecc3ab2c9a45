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
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oanet.errors import OanetError
from triton_models.oanet_fusion import core, integrity, serving

MODES = {"on": (True,), "off": (False,), "both": (True, False)}


class BenchError(OanetError):
    """The benchmark cannot run on the given repository or options."""

    exit_code = 2


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
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--concurrency must be comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise BenchError(f"--concurrency needs integers of at least 1, got {text!r}")
    return levels


# --------------------------------------------------------------------------- repository


def latest_version(repo: Path) -> int:
    from training.export import verify_export

    problems = verify_export(repo)
    if problems:
        raise BenchError(f"{repo} cannot be served: {'; '.join(problems)}")
    version = serving.served_versions(repo)[core.FUSION_MODEL]
    assert version is not None  # verify_export found a version
    return version


def read_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None


def check_servable(repo: Path) -> None:
    encoder = read_config(repo / core.ENCODER_MODEL / "config.pbtxt")
    if encoder.backend != "python":
        raise BenchError(f"{core.ENCODER_MODEL} is exported for backend {encoder.backend!r}; the embedded Triton has "
                         "only the Python backend: export with --cnn-backend python")


def unbatched_copy(repo: Path, version: int, target: Path) -> Path:
    """The latest version of `repo` in `target`, with dynamic batching off in every config.

    The manifest hashes the config.pbtxt files, so the copy's manifest gets the new configs'
    hashes (and a new signature when Triton's environment has the signing key): the benchmark
    derives this repository from a verified one on purpose, nothing else changes in it."""
    from google.protobuf import text_format

    for model in serving.MODELS:
        shutil.copytree(repo / model / str(version), target / model / str(version))
        config = read_config(repo / model / "config.pbtxt")
        config.ClearField("dynamic_batching")
        (target / model / "config.pbtxt").write_text(
            text_format.MessageToString(config, use_short_repeated_primitives=True), encoding="utf-8")
    rehash_configs(target, version)
    return target


def rehash_configs(repo: Path, version: int) -> None:
    """Record the config.pbtxt files of `repo` in version `version`'s manifest (re-signed with the
    environment's key, if any)."""
    path, problem = integrity.find_manifest(repo, str(version))
    if path is None:
        raise BenchError(f"cannot derive a benchmark repository: {problem}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest[integrity.CONFIGS_KEY] = {rel: integrity.sha256_file(repo / rel) for rel in manifest[integrity.CONFIGS_KEY]}
    raw = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    path.write_bytes(raw)
    key = integrity.environment_key()
    if key:
        path.with_name(integrity.SIGNATURE_FILE).write_text(integrity.signature(raw, key) + "\n", encoding="utf-8")


def bench_frames(version_dir: Path, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames the model can take: random object ROIs, parameters drawn around the training
    means with about 10% of the fields missing."""
    fusion = core.FusionCore.load(version_dir)
    rng = np.random.default_rng(seed)
    size, n_features = int(fusion.config["image_size"]), len(fusion.feature_names)
    rois = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    values = (fusion.w["feat_mean"] + fusion.w["feat_std"] * rng.normal(size=(count, n_features))).astype(np.float32)
    missing = rng.random((count, n_features)) < 0.1
    values[missing] = np.nan
    return rois, values, missing


# --------------------------------------------------------------------------- Triton


def executions(metrics_url: str, model: str) -> tuple[float, float]:
    """(inferences, executions) Triton counted for `model` so far: their ratio is the batch size."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

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
    from deploy.embedded.stack import EmbeddedStack, free_port_settings

    settings = free_port_settings(state_dir, repo, startup_timeout_s=300)
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        metrics = f"http://{settings.host}:{settings.triton_metrics_port}/metrics"
        yield f"{settings.host}:{settings.triton_grpc_port}", metrics
    finally:
        stack.down()


async def _measure(client, metrics_url: str, frames: tuple[np.ndarray, ...], concurrency: int, seconds: float,
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


async def _interleaved(servers: dict[str, tuple[str, str]], local: InProcess, frames: tuple[np.ndarray, ...],
                       levels: list[int], seconds: float, warmup_s: float,
                       progress) -> tuple[dict[str, list[Level]], list[Level]]:
    from oanet.settings import TritonSettings
    from stream.triton_client import TritonClient

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
                level = await _measure(client, servers[mode][1], frames, concurrency, seconds, warmup_s, mode)
                progress(f"batching {mode:3s} concurrency {concurrency:3d}: {level.throughput:8.1f} frames/s")
                served[mode].append(level)
            # blocks the event loop on purpose: nothing else may run while the baseline is measured
            in_process.append(local.measure(concurrency, seconds))
            progress(f"in-process   batch {concurrency:5d}: {in_process[-1].throughput:8.1f} frames/s")
    finally:
        for client in clients.values():
            await client.close()
    return served, in_process


# --------------------------------------------------------------------------- in-process


class InProcess:
    """The training-side model (TorchScript CNN + FusionCore) on batches of `concurrency` frames,
    with the thread count of the served instances; latency per batch."""

    def __init__(self, repo: Path, version: int, frames: tuple[np.ndarray, ...], device: str, threads: int):
        import warnings

        import torch

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


# --------------------------------------------------------------------------- report


def machine_line(device: str) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    gpu = ""
    if device.startswith("cuda"):
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return f"machine: {platform.machine()} {platform.system()}, {cores} CPU cores{gpu}; load average {load}"


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
    from google.protobuf import json_format

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
        served, in_process = asyncio.run(_interleaved(endpoints, local, frames, levels, seconds, warmup_s, progress))
    return [f"{started} at the start, {machine_line(device).rsplit('; ', 1)[1]} at the end",
            f"repository {repo} version {version}: {frames[0].shape[1]} px object ROI, {threads} thread(s) per "
            f"instance, {seconds:g} s per level", *report(served, in_process)]
