"""The line profile of the served model, and what the worker reads from a model repository
written by `oanet export`.

The line profile a model was trained on is stored in its version's sha256 manifest
(`oanet_fusion/<v>/manifest.json`, key `profile`) and published by the served model itself:
export writes it into oanet_fusion's config.pbtxt `parameters` (`serving.PROFILE_KEY`), which
clients read through Triton's model-config call. The worker therefore needs no access to the
repository: the frames are read with exactly the layout and fields the served version expects.
`oanet worker --profile FILE` overrides it (checked against the served feature order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oanet.profile import LineProfile, ProfileError, parse_profile
from stream.served_model import ServedModel
from stream.worker.errors import WorkerError
from triton_models.oanet_fusion import core, integrity, serving


@dataclass(frozen=True)
class ExportedVersion:
    """One verified version of an exported repository."""

    model: ServedModel
    profile: LineProfile
    manifest: dict[str, Any]
    folder: Path  # REPO/oanet_fusion/<v>


def served_profile(model: ServedModel) -> LineProfile:
    """The line profile `model` publishes; WorkerError (one line) when it publishes none or an
    unreadable one."""
    where = f"{model.name} version {model.version}"
    if not model.profile:
        raise WorkerError(f"{where} does not publish its line profile (exported before it was): re-export the "
                          "run with `oanet export`, or pass --profile FILE")
    try:
        return parse_profile(json.loads(model.profile), f"the line profile of {where}")
    except (ProfileError, ValueError) as exc:
        raise WorkerError(f"the line profile that {where} publishes is unusable: {exc}") from None


def read_exported(repo: str | Path, version: int | None = None, signing_key: str | None = None) -> ExportedVersion:
    """Version `version` (default: the latest, the one Triton serves) after the check Triton makes
    at load (`integrity.version_problems`: every file listed with its sha256, the manifest signed
    with `signing_key` when one is given); WorkerError (one line) when it is absent or does not
    verify."""
    repo = Path(repo)
    found = serving.model_versions(repo, core.FUSION_MODEL)
    if not found:
        raise WorkerError(f"{repo} holds no exported model (write one with `oanet export --repo {repo}`)")
    version = found[-1] if version is None else int(version)
    if version not in found:
        raise WorkerError(f"{repo} has no version {version} (has {found})")
    folder = repo / core.FUSION_MODEL / str(version)
    problems = integrity.version_problems(folder, signing_key, check_configs=version == found[-1])
    if problems:
        raise WorkerError(f"{repo} version {version} does not verify: {'; '.join(problems[:3])}")
    manifest_path = folder / core.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not manifest.get("profile"):
        raise WorkerError(f"{manifest_path} names no line profile")
    try:
        profile = parse_profile(manifest["profile"], f"{manifest_path} profile")
    except ProfileError as exc:
        raise WorkerError(str(exc)) from None
    model = ServedModel(
        name=core.ENSEMBLE_MODEL,
        version=version,
        image_size=int(manifest["image"]["size"]),
        feature_names=tuple(manifest["feature_names"]),
        threshold=float(manifest["threshold"]),
        embedding_dim=int(manifest["embedding_dim"]),
        max_batch_size=int((manifest.get("serving") or {}).get("max_batch", 0)),
        profile=json.dumps(manifest["profile"]),
    )
    return ExportedVersion(model, profile, manifest, folder)
