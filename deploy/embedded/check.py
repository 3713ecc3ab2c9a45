"""Post-install check run by `make setup`: silent when the environment is usable.

It catches what pip cannot see: a mixed OpenCV install, numpy 2 under the Triton stub, and a
Python-backend stub whose shared libraries (libpython) are missing on this machine.
"""

from __future__ import annotations

import sys


def problems() -> list[str]:
    found: list[str] = []
    import cv2
    import numpy

    if cv2.__version__ != "4.10.0":
        found.append(f"OpenCV is {cv2.__version__}, expected 4.10.0 (a second OpenCV wheel is mixed in)")
    if int(numpy.__version__.split(".")[0]) >= 2:
        found.append(f"numpy is {numpy.__version__}; the Triton Python-backend stub needs numpy 1.x")
    from deploy.embedded.binaries import TritonDistribution, tansu_binary
    from deploy.embedded.errors import StackError

    try:
        tansu_binary()
        missing = TritonDistribution.locate().missing_libraries()
        if missing:
            found.append(
                "tritonserver or its Python stub cannot load: missing " + ", ".join(missing)
                + " (on Debian: apt-get install libpython3.11)"
            )
    except StackError as exc:
        found.append(str(exc))
    return found


def main() -> int:
    issues = problems()
    for issue in issues:
        print(f"setup check: {issue}", file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    raise SystemExit(main())
