"""What every benchmark shares: its error and the machine line each report starts and ends with."""

from __future__ import annotations

import os
import platform

from oanet.errors import OanetError


class BenchError(OanetError):
    """The benchmark cannot run with the given data, repository or options."""

    exit_code = 2


def machine_line(device: str) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    gpu = ""
    if device.startswith("cuda"):
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    return f"machine: {platform.machine()} {platform.system()}, {cores} CPU cores{gpu}; load average {load}"
