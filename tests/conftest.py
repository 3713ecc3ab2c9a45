"""Session fixtures that start the real servers: the Tansu broker and tritonserver.

Every integration test uses these (free ports, a temporary state directory), so the suite
never touches a developer's own `oanet stack` on the default ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploy.embedded.stack import EmbeddedStack, free_port_settings
from oanet.settings import Settings, StackSettings, load_settings

# The serving tests' trained model, its repository and the tritonserver serving it.
pytest_plugins = ["tests.serving_fixtures"]

TEST_DATA = Path(__file__).parent / "data"
TEST_MODEL_REPOSITORY = TEST_DATA / "model_repository"
OANET = [sys.executable, "-m", "oanet"]


def fresh_stack_settings(tmp_path_factory, **overrides) -> StackSettings:
    """Stack settings on fresh free ports, with a state directory of their own."""
    values = {"model_repository": TEST_MODEL_REPOSITORY, "startup_timeout_s": 120, "stop_timeout_s": 10, **overrides}
    return free_port_settings(values.pop("state_dir", None) or tmp_path_factory.mktemp("stack"),
                              values.pop("model_repository"), **values)


@pytest.fixture
def stack_settings_factory(tmp_path_factory) -> Callable[..., StackSettings]:
    return lambda **overrides: fresh_stack_settings(tmp_path_factory, **overrides)


@contextmanager
def running_stack(settings: StackSettings) -> Iterator[EmbeddedStack]:
    """The embedded stack up for the duration of the block, then down."""
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory) -> Iterator[EmbeddedStack]:
    """One broker + tritonserver (with the test model repository) for the whole session."""
    with running_stack(fresh_stack_settings(tmp_path_factory)) as stack:
        yield stack


@pytest.fixture(scope="session")
def settings(embedded_stack: EmbeddedStack) -> Settings:
    """Settings whose Kafka and Triton endpoints are the session stack's."""
    return load_settings(stack=embedded_stack.settings.model_dump())


def with_unique_topics(settings: Settings) -> Settings:
    """`settings` with topic names of their own, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={
        "frames": f"test.{suffix}.frames",
        "verdicts": f"test.{suffix}.verdicts",
        "dead_letter": f"test.{suffix}.dlq",
        "frames_partitions": 3,
        "verdicts_partitions": 2,
    })
    return settings.model_copy(update={"topics": topics})


@pytest.fixture
def unique_topics(settings: Settings) -> Settings:
    """Settings with topic names of their own, so tests never see each other's messages."""
    return with_unique_topics(settings)


@pytest.fixture
def run_oanet(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real `oanet` command line in a clean working directory."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OANET_")}
        full_env.update(env or {})
        return subprocess.run([*OANET, *args], capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=cwd or tmp_path)

    return run


@pytest.fixture(scope="session")
def kcat() -> str:
    return kcat_path()


def kcat_path() -> str:
    """Debian's kcat; skipped where it is absent, except under CI (env `CI` set): a failure there."""
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        why = "Debian's kcat is not installed (apt-get install kcat); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: the kcat acceptance tests must run, but {why}")  # never a silent skip in CI
        pytest.skip(why)
    return path
