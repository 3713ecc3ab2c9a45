"""The served model tells the worker its line profile: export publishes it in oanet_fusion's
config parameters, the client reads it with the model-config call (no repository in reach)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from oanet.profile import parse_profile
from stream.triton_client import TritonClient
from stream.worker.errors import WorkerError
from stream.worker.repository import read_exported, served_profile


def served_model(triton):
    async def read():
        async with TritonClient(triton) as client:
            return await client.model_info()

    return asyncio.run(read())


def test_the_served_model_publishes_the_profile_it_was_trained_on(oanet_triton, served_repo):
    model = served_model(oanet_triton)
    manifest_profile = read_exported(served_repo).manifest["profile"]
    assert json.loads(model.profile) == manifest_profile
    profile = served_profile(model)
    assert profile == parse_profile(manifest_profile)
    assert tuple(f.name for f in profile.fields if f.kind == "number") == model.feature_names


def test_the_local_backend_reads_the_same_profile(served_repo):
    assert served_profile(read_exported(served_repo).model).name == read_exported(served_repo).profile.name


@pytest.mark.parametrize(("profile", "says"), [
    (None, "does not publish its line profile"),
    ("{not json", "unusable"),
    (json.dumps({"name": "x"}), "unusable"),
])
def test_a_model_without_a_usable_profile_is_refused_in_one_line(served_repo, profile, says):
    model = dataclasses.replace(read_exported(served_repo).model, profile=profile)
    with pytest.raises(WorkerError, match=says) as info:
        served_profile(model)
    assert "\n" not in str(info.value)
    if profile is None:
        assert "--profile FILE" in str(info.value)
