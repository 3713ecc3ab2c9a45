"""The allocator setting of the commands that train (`oanet.allocator`)."""

from __future__ import annotations

import subprocess
import sys

from oanet import allocator


def test_glibc_takes_the_settings() -> None:
    # In a child: the setting lasts for the process, and the suite's own process keeps glibc's defaults.
    code = "from oanet.allocator import keep_freed_memory; import sys; sys.exit(0 if keep_freed_memory() else 3)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_thresholds_fit_mallopt() -> None:
    # mallopt takes a C int, and glibc refuses an mmap threshold above its 32 MiB ceiling on 64-bit.
    for value in (allocator.MMAP_THRESHOLD_BYTES, allocator.TRIM_THRESHOLD_BYTES, allocator.TOP_PAD_BYTES):
        assert 0 < value < 2**31
    assert allocator.MMAP_THRESHOLD_BYTES <= 32 * 1024 * 1024


def test_elsewhere_nothing_changes(monkeypatch) -> None:
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
