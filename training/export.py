"""`oanet export`: a trained run -> version N of a Triton model repository (DESIGN.md).

```
REPO/oanet_image_encoder/config.pbtxt          (written when absent)
REPO/oanet_image_encoder/<v>/model.pt          TorchScript: UINT8 [B, S, S, 3] BGR -> EMBEDDING, IMAGE_LOGIT
REPO/oanet_fusion/config.pbtxt                 (written when absent)
REPO/oanet_fusion/<v>/core.py                  copy of triton_models/oanet_fusion/core.py
REPO/oanet_fusion/<v>/model.py                 copy of triton_models/oanet_fusion/model.py (serving issue)
REPO/oanet_fusion/<v>/fusion.json              feature order, gate constants, thresholds, options
REPO/oanet_fusion/<v>/fusion_weights.npz       small layers, PCA, reference statistics (allow_pickle=False)
REPO/oanet_fusion/<v>/trees/*.txt              LightGBM text model files (kinds x folds)
REPO/oanet_fusion/<v>/profile.yaml             the line profile
REPO/oanet_fusion/<v>/manifest.json            sha256 of every file above (paths relative to REPO), profile,
                                               feature order, threshold, metrics, training args, tensors
REPO/oanet/config.pbtxt, REPO/oanet/<v>/       the ensemble
```
Versions accumulate: an existing version is never touched; a version is staged in hidden
folders and renamed into place only when complete. `verify_export` re-hashes every file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
from pathlib import Path

from training.errors import ExportError
from triton_models.oanet_fusion import core

MODELS = (core.ENCODER_MODEL, core.FUSION_MODEL, core.ENSEMBLE_MODEL)
SOURCE_DIR = Path(core.__file__).parent  # triton_models/oanet_fusion


def existing_versions(repo: Path) -> set[int]:
    versions: set[int] = set()
    for model in MODELS:
        folder = repo / model
        if folder.is_dir():
            versions.update(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    return versions


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensors(kind: str, tensors: list[dict]) -> str:
    items = [f'  {{\n    name: "{t["name"]}"\n    data_type: TYPE_{t["dtype"]}\n    dims: {_dims(t["dims"])}\n  }}'
             for t in tensors]
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def pbtxt_configs(io: dict, cnn_backend: str, device: str, max_batch: int, instances: int) -> dict[str, str]:
    """Minimal config.pbtxt texts; the serving issue refines them (batching options etc.)."""
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    group = f"instance_group [\n  {{\n    kind: {kind}\n    count: {instances}\n  }}\n]\n"
    enc = io[core.ENCODER_MODEL]
    fus = io[core.FUSION_MODEL]
    ens = io[core.ENSEMBLE_MODEL]
    backend = 'backend: "pytorch"' if cnn_backend == "libtorch" else 'backend: "python"'
    configs = {
        core.ENCODER_MODEL: f'name: "{core.ENCODER_MODEL}"\n{backend}\nmax_batch_size: {max_batch}\n'
        + _tensors("input", enc["inputs"]) + _tensors("output", enc["outputs"])
        + "dynamic_batching { }\n" + group,
        core.FUSION_MODEL: f'name: "{core.FUSION_MODEL}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
        + _tensors("input", fus["inputs"]) + _tensors("output", fus["outputs"])
        + "dynamic_batching { }\n" + f"instance_group [\n  {{\n    kind: KIND_CPU\n    count: {instances}\n  }}\n]\n",
    }

    def maps(kind: str, names: list[str]) -> str:
        return "".join(f'      {kind} {{\n        key: "{n}"\n        value: "{n}"\n      }}\n' for n in names)

    enc_in = [t["name"] for t in enc["inputs"]]
    enc_out = [t["name"] for t in enc["outputs"]]
    fus_in = [t["name"] for t in fus["inputs"]]
    fus_out = [t["name"] for t in fus["outputs"]]
    configs[core.ENSEMBLE_MODEL] = (
        f'name: "{core.ENSEMBLE_MODEL}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
        + _tensors("input", ens["inputs"]) + _tensors("output", ens["outputs"])
        + "ensemble_scheduling {\n  step [\n"
        + f'    {{\n      model_name: "{core.ENCODER_MODEL}"\n      model_version: -1\n'
        + maps("input_map", enc_in) + maps("output_map", enc_out) + "    },\n"
        + f'    {{\n      model_name: "{core.FUSION_MODEL}"\n      model_version: -1\n'
        + maps("input_map", fus_in) + maps("output_map", fus_out) + "    }\n"
        + "  ]\n}\n"
    )
    return configs


def _versions_info() -> dict[str, str]:
    import lightgbm
    import numpy
    import torch

    return {"torch": torch.__version__, "lightgbm": lightgbm.__version__, "numpy": numpy.__version__}


def export_run(run: Path, repo: Path, version: int | None = None, *, cnn_backend: str = "python",
               device: str = "cpu", max_batch: int = 64, instances: int = 1) -> tuple[int, list[str]]:
    """Write `run` as version `version` (default next free) of `repo`; returns (version, notes)."""
    import yaml

    from training.evaluate import ENCODER_FILE, FUSION_DIR, MODEL_DIR

    model_dir = run / MODEL_DIR
    fusion_src = model_dir / FUSION_DIR
    encoder_src = model_dir / ENCODER_FILE
    for needed in (run / "args.json", encoder_src, fusion_src / core.CONFIG_FILE, fusion_src / core.WEIGHTS_FILE):
        if not needed.is_file():
            raise ExportError(f"{run} is not a finished training run: {needed} is missing")
    if max_batch < 1 or instances < 1:
        raise ExportError("--max-batch and --instances must be at least 1")
    try:
        fusion = core.FusionCore.load(fusion_src)  # refuse to export what cannot be served
    except core.CoreError as exc:
        raise ExportError(f"{run}: {exc}") from None
    repo.mkdir(parents=True, exist_ok=True)
    taken = existing_versions(repo)
    if version is None:
        version = max(taken, default=0) + 1
    if version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    if version in taken:
        raise ExportError(f"version {version} already exists in {repo}; versions are never overwritten "
                          f"(existing: {sorted(taken)})")

    args = json.loads((run / "args.json").read_text(encoding="utf-8"))
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    evaluations = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(run.glob("eval-*.json"))}
    profile_path = model_dir / "profile.yaml"
    profile = yaml.safe_load(profile_path.read_text(encoding="utf-8")) if profile_path.is_file() else None
    cfg = fusion.config
    io = core.io_spec(int(cfg["image_size"]), int(cfg["embedding_dim"]), len(cfg["feature_names"]))

    staging = {m: repo / m / f".staging-{version}-{os.getpid()}" for m in MODELS}
    notes: list[str] = []
    try:
        for folder in staging.values():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        shutil.copyfile(encoder_src, staging[core.ENCODER_MODEL] / "model.pt")
        fus = staging[core.FUSION_MODEL]
        shutil.copytree(fusion_src, fus, dirs_exist_ok=True)
        shutil.copyfile(SOURCE_DIR / "core.py", fus / "core.py")
        if (SOURCE_DIR / "model.py").is_file():
            shutil.copyfile(SOURCE_DIR / "model.py", fus / "model.py")
        else:
            notes.append("triton_models/oanet_fusion/model.py does not exist yet (serving issue): "
                         f"{core.FUSION_MODEL}/{version} has no model.py and will not load in Triton")
        if profile_path.is_file():
            shutil.copyfile(profile_path, fus / "profile.yaml")
        configs = pbtxt_configs(io, cnn_backend, device, max_batch, instances)
        if cnn_backend == "python":
            notes.append(f"--cnn-backend python: {core.ENCODER_MODEL} needs the Python-backend runner model.py "
                         "of the serving issue beside model.pt")
        files: dict[str, str] = {}
        for model, folder in staging.items():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = f"{model}/{version}/{path.relative_to(folder).as_posix()}"
                files[rel] = core.sha256_file(path)
        manifest = {
            "format_version": core.FORMAT_VERSION,
            "version": version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "paths_relative_to": "model repository root",
            "models": {"ensemble": core.ENSEMBLE_MODEL, "image_encoder": core.ENCODER_MODEL,
                       "fusion": core.FUSION_MODEL},
            "files": files,
            "profile": profile,
            "feature_names": cfg["feature_names"],
            "excluded_text_fields": [f["name"] for f in (profile or {}).get("fields", []) if f.get("kind") == "text"],
            "image": {"size": int(cfg["image_size"]), "layout": "NHWC", "channels": "BGR", "dtype": "uint8",
                      "crop": "crop_object_roi(frame, profile.object_roi, (frame.width, frame.height), size) "
                              "in core.py; cv2.INTER_AREA"},
            "embedding_dim": int(cfg["embedding_dim"]),
            "tensors": io,
            "branches": list(core.BRANCHES),
            "modalities": list(core.MODALITIES),
            "threshold": cfg["threshold"],
            "branch_thresholds": cfg["branch_thresholds"],
            "target_recall": cfg["target_recall"],
            "gate": cfg["gate"],
            "metrics": {"val": metrics.get("val"), **evaluations},
            "training_args": args,
            "serving": {"cnn_backend": cnn_backend, "device": device, "max_batch": max_batch,
                        "instances": instances, "configs": configs},
            "libraries": _versions_info(),
        }
        (fus / core.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for model, folder in staging.items():
            folder.rename(repo / model / str(version))
    except BaseException:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for model, text in configs.items():
        config_path = repo / model / "config.pbtxt"
        if not config_path.exists():
            config_path.write_text(text, encoding="utf-8")
        elif config_path.read_text(encoding="utf-8") != text:
            notes.append(f"kept the existing {config_path}; version {version}'s generated config is in its manifest "
                         "(serving.configs)")
    problems = verify_export(repo, version)
    if problems:
        raise ExportError(f"version {version} of {repo} does not verify after writing: {'; '.join(problems)}")
    return version, notes


def verify_export(repo: Path, version: int | None = None) -> list[str]:
    """Problems of version `version` (default latest) of `repo`; [] when it verifies."""
    versions = existing_versions(repo)
    if not versions:
        return [f"{repo} holds no exported version"]
    version = max(versions) if version is None else version
    problems = [f"{model}/{version} is missing" for model in MODELS if not (repo / model / str(version)).is_dir()]
    return problems + core.verify_version(repo / core.FUSION_MODEL / str(version))


def main(args: argparse.Namespace) -> int:
    repo = Path(args.repo)
    if args.verify:
        problems = verify_export(repo, args.version)
        if problems:
            raise ExportError(f"{repo} does not verify: {'; '.join(problems)}")
        version = args.version or max(existing_versions(repo))
        print(f"{repo} version {version}: every file matches its sha256 in the manifest")
        return 0
    if args.run is None:
        raise ExportError("--run is required (unless --verify)")
    version, notes = export_run(Path(args.run), repo, args.version, cnn_backend=args.cnn_backend,
                                device=args.device, max_batch=args.max_batch, instances=args.instances)
    print(f"exported {args.run} as version {version} of {repo} "
          f"({', '.join(MODELS)}); manifest: {repo / core.FUSION_MODEL / str(version) / core.MANIFEST_FILE}")
    for note in notes:
        print(f"note: {note}")
    return 0
