"""The integrity control of an exported model version, run before any other code of the version.

`oanet export` writes `oanet_fusion/<v>/manifest.json`: the sha256 of every file of the three
models' version folders and of their config.pbtxt files (`config_sha256`), paths relative to the
repository root. With a signing key (`OANET_MODEL__SIGNING_KEY`) it also writes `manifest.sig`,
the HMAC-SHA256 of the manifest's bytes. A version passes when

* every file of its version folders is listed (an unlisted file, say a stray `lightgbm.py` that
  an import would pick up, refuses the version) and has its sha256;
* the config.pbtxt files are the ones the version was exported with (they carry the facts
  clients read: feature order, threshold, line profile);
* with a key set, the manifest carries a signature of that key: a rewritten manifest (with
  hashes of rewritten files) is refused.

Standard library only, and loaded by file path: each `model.py` runs it before it puts its
folder on `sys.path` or imports a sibling, so nothing in the folder runs before the check but
`model.py` and this file themselves (both listed, hashed and covered by the signature; a
rewrite of either needs write access to code Triton runs, which the read-only mount and the
repository's permissions guard, not this check). The worker and `oanet export --verify` run the
same function.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
# The manifest key that maps each model's config.pbtxt (path relative to the repository) to its sha256.
CONFIGS_KEY = "config_sha256"
# Triton's stub imports model.py as a module before any of its code runs, and CPython caches
# that module's bytecode beside it (the stub ignores PYTHONDONTWRITEBYTECODE): the one file a
# version folder may hold unlisted. Any other bytecode (core, serving, integrity...) is refused:
# a crafted cache file would run instead of the hashed source.
_OWN_BYTECODE = re.compile(r"__pycache__/model\.[\w-]+\.pyc")
# The setting model.signing_key (oanet.settings) as Triton's environment carries it.
SIGNING_KEY_ENV = "OANET_MODEL__SIGNING_KEY"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signature(manifest_bytes: bytes, key: str) -> str:
    """HMAC-SHA256 of the manifest's exact bytes, hex."""
    return hmac.new(key.encode("utf-8"), manifest_bytes, hashlib.sha256).hexdigest()


def environment_key() -> str | None:
    return os.environ.get(SIGNING_KEY_ENV) or None


def find_manifest(repo: Path, version: str) -> tuple[Path | None, str | None]:
    """(path of version `version`'s manifest, None), or (None, why there is not exactly one)."""
    found = sorted(repo.glob(f"*/{version}/{MANIFEST_FILE}"))
    if not found:
        return None, f"manifest not found: no {version}/{MANIFEST_FILE} in any model folder of {repo}"
    if len(found) > 1:
        return None, f"more than one manifest for version {version}: {', '.join(str(p) for p in found)}"
    return found[0], None


def version_problems(version_dir: str | Path, key: str | None = None, *, only_model: str | None = None,
                     check_configs: bool = True) -> list[str]:
    """Why the exported version holding `version_dir` (`REPO/<model>/<v>`) must not be used; [].

    `key`: the signing key (None: signatures are not checked). `only_model`: hash and list that
    model's files only (the manifest, its signature and the listing rules still apply).
    `check_configs`: compare the config.pbtxt files (only the latest version is served with
    them; an older version's configs live in its manifest).
    """
    version_dir = Path(version_dir)
    repo, version = version_dir.parent.parent, version_dir.name
    path, problem = find_manifest(repo, version)
    if problem:
        return [problem]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [f"manifest {path} is unreadable: {exc}"]
    problems = _signature_problems(path, raw, key)
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        return [*problems, f"manifest {path} is unreadable: {exc}"]
    files = manifest.get("files") if isinstance(manifest, Mapping) else None
    models = manifest.get("models") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping) or not files or not isinstance(models, Mapping):
        return [*problems, f"manifest {path} lists no files or no models"]
    if models.get("fusion") != path.parent.parent.name:
        problems.append(f"manifest {path} sits in the folder of {path.parent.parent.name}, not of the fusion model "
                        f"{models.get('fusion')!r} it names")
    wanted = [only_model] if only_model else sorted(str(m) for m in models.values())
    prefixes = tuple(f"{m}/{version}/" for m in wanted)
    exempt = {f"{path.parent.relative_to(repo).as_posix()}/{name}" for name in (MANIFEST_FILE, SIGNATURE_FILE)}
    for model in wanted:
        folder = repo / model / version
        if not folder.is_dir():
            continue  # its listed files are reported missing below
        for item in sorted(folder.rglob("*")):
            rel = item.relative_to(repo).as_posix()
            if (item.is_file() or item.is_symlink()) and rel not in files and rel not in exempt and not (
                    _OWN_BYTECODE.fullmatch(item.relative_to(folder).as_posix())):
                problems.append(f"unlisted file: {rel} (not written by `oanet export`: remove it)")
    problems += _hash_problems(repo, {rel: sha for rel, sha in files.items() if rel.startswith(prefixes)})
    if check_configs:
        configs = manifest.get(CONFIGS_KEY)
        if not isinstance(configs, Mapping) or not configs:
            problems.append(f"manifest {path} covers no config.pbtxt (exported by an older oanet: re-export)")
        else:
            mine = {rel: sha for rel, sha in configs.items() if rel.split("/", 1)[0] in wanted}
            problems += [f"{p} (config.pbtxt files are generated for one version by `oanet export`)"
                         for p in _hash_problems(repo, mine)]
    return problems


def _signature_problems(path: Path, raw: bytes, key: str | None) -> list[str]:
    if not key:
        return []
    sig_path = path.with_name(SIGNATURE_FILE)
    if not sig_path.is_file():
        return [f"manifest {path} is not signed, but a signing key is set ({SIGNING_KEY_ENV}): export with the key"]
    try:
        recorded = sig_path.read_text(encoding="ascii").strip()
    except (OSError, ValueError) as exc:
        return [f"signature {sig_path} is unreadable: {exc}"]
    if not hmac.compare_digest(recorded, signature(raw, key)):
        return [f"manifest {path} does not match its signature under the configured signing key (rewritten, or "
                "signed with another key)"]
    return []


def _hash_problems(repo: Path, files: Mapping[str, Any]) -> list[str]:
    problems = []
    for rel, expected in sorted(files.items()):
        target = repo / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"manifest path {rel!r} leaves the repository")
            continue
        if not target.is_file():
            problems.append(f"missing file: {rel}")
            continue
        actual = sha256_file(target)
        if actual != expected:
            problems.append(f"sha256 mismatch: {rel} (expected {str(expected)[:12]}..., got {actual[:12]}...)")
    return problems


def refusal(model: str, version: str | int, problems: list[str]) -> str:
    """The one log line of a refused version."""
    return " ".join((f"{model} version {version} refused: " + "; ".join(problems)).split())


class VersionRefused(RuntimeError):
    """Raised while Triton imports a refused version's model.py: the load fails, and Triton logs
    the message (the stub's Logger is not available yet at import)."""


def check_or_refuse(version_dir: Path, *, only_model: str | None = None) -> None:
    """In a Triton `model.py`, before any sibling import: VersionRefused (one line saying why)
    when the version does not pass (signing key from Triton's environment)."""
    problems = version_problems(version_dir, environment_key(), only_model=only_model)
    if problems:
        raise VersionRefused(refusal(version_dir.parent.name, version_dir.name, problems))
