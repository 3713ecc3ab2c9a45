"""The line profile of the served model, and what the worker reads from a model repository
written by `oanet export`.

The line profile a model was trained on is stored in its version's sha256 manifest
(`oanet_fusion/<v>/manifest.json`, key `profile`) and published by the served model itself:
export writes it into oanet_fusion's config.pbtxt `parameters` (`serving.PROFILE_KEY`), which
clients read through Triton's model-config call. The worker therefore needs no access to the
repository: the frames are read with exactly the layout and fields the served version expects.
`oanet worker --profile FILE` overrides it (checked against the served feature order).

The line's OCR student (`oanet export --recognizer`) is the one exception: the OCR processes
read it from the served version's folder of the repository (`exported_recognizer`), when the
repository is readable from the worker (the embedded stack, `--inference local`, or a mount).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oanet.contracts import RECOGNIZER_FOLDER
from oanet.ocr_settings import OcrSettings
from oanet.profile import LineProfile, ProfileError, parse_profile
from oanet.settings import Settings
from stream.ocr.errors import StudentError
from stream.ocr.student import profile_sha256, student_digest
from stream.ocr.student_server import StudentNotServed, StudentServer, served_meta, served_student
from stream.served_model import ServedModel
from stream.worker.errors import WorkerError
from triton_models.oanet_fusion import core, integrity, serving

log = logging.getLogger("stream.worker")


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


def _manifest(folder: Path) -> dict[str, Any] | None:
    """A version folder's manifest, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((folder / core.MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def exported_recognizer(repo: str | Path, version: int, signing_key: str | None = None) -> Path | None:
    """The OCR student exported with version `version` of `repo` (`oanet_fusion/<v>/recognizer/`),
    after the version's fusion files (the student's among them) are checked against its manifest
    as Triton checks them at load; None when the version holds no student or is not in `repo`
    here. WorkerError (one line) when the student is there but does not verify: a worker never
    reads with a recogniser that is not the one exported."""
    folder = Path(repo) / core.FUSION_MODEL / str(version)
    return _verified_recognizer(folder, _manifest(folder), signing_key)


def _verified_recognizer(folder: Path, manifest: dict[str, Any] | None, signing_key: str | None) -> Path | None:
    """`exported_recognizer` on a manifest already read (None: missing or unreadable)."""
    student = folder / RECOGNIZER_FOLDER
    # No readable manifest: refused below if a student is there anyway.
    listed = bool(manifest.get("recognizer")) if manifest is not None else False
    if not listed and not student.exists():
        return None
    problems = integrity.version_problems(folder, signing_key, only_model=core.FUSION_MODEL, check_configs=False)
    if not student.is_dir():
        problems.insert(0, f"{student} is missing, but the manifest lists a recogniser")
    if problems:
        repo, version = folder.parents[1], folder.name
        raise WorkerError(f"the OCR recogniser of {repo} version {version} does not verify: {'; '.join(problems[:3])} "
                          "(export the version again, or set worker.student=off to read with PaddleOCR only)")
    return student


def ocr_settings_for(settings: Settings, model: ServedModel) -> OcrSettings:
    """The OCR settings of the worker's pool while it serves `model`: `ocr.recognizer` when set;
    else, with worker.student `exported`, the student exported with that version if
    `stack.model_repository` holds it (checked: WorkerError if it does not verify); else none.

    The repository here must hold the served version itself: a version folder of the same
    number whose manifest disagrees with what the server publishes (threshold, feature order,
    line profile) is another repository's (a remote Triton's repository is not this one), and
    its student is not used. The manifest is read once, for both checks.
    """
    ocr = settings.ocr
    if ocr.recognizer is not None or settings.worker.student != "exported":
        return ocr
    folder = Path(settings.stack.model_repository) / core.FUSION_MODEL / str(model.version)
    manifest = _manifest(folder)
    if manifest is not None and not _is_served(manifest, model):
        log.warning("%s is not the version the model server serves (its threshold, feature order or line "
                    "profile differ): its OCR student is not used; PaddleOCR reads every line",
                    folder / core.MANIFEST_FILE)
        return ocr
    key = settings.model.signing_key
    found = _verified_recognizer(folder, manifest, key.get_secret_value() if key else None)
    return ocr.model_copy(update={"recognizer": found}) if found is not None else ocr


def student_server_for(settings: Settings, ocr: OcrSettings, model: ServedModel,
                       profile: LineProfile) -> StudentServer | None:
    """With worker.student_inference `triton`: the served OCR student the OCR processes send their
    lines to; None when the student runs here, or there is none (PaddleOCR reads every line).

    With a student here (`ocr.recognizer`, chosen by `ocr_settings_for`) Triton must serve its
    very weights: WorkerError (one line) when it serves none or another one. Without one (the
    repository is a remote Triton's) and worker.student `exported`, the student Triton serves
    with `model`'s version is used, its calibration read from its model config.
    """
    if settings.worker.student_inference != "triton":
        return None
    grpc, timeout = settings.triton.grpc_client_kwargs(), settings.triton.request_timeout_s
    try:
        if ocr.recognizer is not None:
            return served_student(grpc, student_digest(ocr.recognizer), timeout)
    except StudentError as exc:
        raise WorkerError(str(exc)) from None
    if settings.worker.student != "exported":
        return None
    try:
        server = served_student(grpc, None, timeout)
    except StudentNotServed:
        log.info("Triton serves no OCR student: PaddleOCR reads every line")
        return None
    except StudentError as exc:
        raise WorkerError(str(exc)) from None
    why = None
    if server.version != model.version:
        why = f"it belongs to version {server.version}, the model server serves version {model.version}"
    else:
        try:
            if served_meta(server).profile_sha256 != profile_sha256(profile):
                why = f"it was distilled for another line profile than {profile.name!r}, the one this worker reads"
        except StudentError as exc:
            why = str(exc)
    if why:
        log.warning("the OCR student %s serves is not used (%s): PaddleOCR reads every line", server.url, why)
        return None
    return server


def _is_served(manifest: dict[str, Any], model: ServedModel) -> bool:
    try:
        same = (float(manifest["threshold"]) == model.threshold
                and tuple(manifest["feature_names"]) == tuple(model.feature_names))
    except (KeyError, TypeError, ValueError):
        return False
    return same and (model.profile is None or json.loads(model.profile) == manifest.get("profile"))
