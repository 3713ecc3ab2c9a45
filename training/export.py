"""`oanet export`: a trained run -> version N of a Triton model repository (docs/contracts.md).

```
REPO/oanet_image_encoder/config.pbtxt          backend "python" (runner) or "pytorch" (libtorch, NGC)
REPO/oanet_image_encoder/<v>/model.pt          TorchScript: UINT8 [B, S, S, 3] BGR -> EMBEDDING, IMAGE_LOGIT
REPO/oanet_image_encoder/<v>/model.py          Python-backend runner (triton_models/oanet_image_encoder), with
REPO/oanet_image_encoder/<v>/core.py, serving.py   its two helpers; absent with --cnn-backend libtorch
REPO/oanet_fusion/config.pbtxt                 Python backend; parameters: version, feature order, threshold,
                                               line profile (what clients read)
REPO/oanet_fusion/<v>/core.py                  copy of triton_models/oanet_fusion/core.py (the maths)
REPO/oanet_fusion/<v>/serving.py               copy of triton_models/oanet_fusion/serving.py (batching, checks)
REPO/oanet_fusion/<v>/model.py                 copy of triton_models/oanet_fusion/model.py (thin Triton model)
REPO/oanet_fusion/<v>/fusion.json              feature order, gate constants, thresholds, options
REPO/oanet_fusion/<v>/fusion_weights.npz       small layers, PCA, reference statistics (allow_pickle=False)
REPO/oanet_fusion/<v>/trees/*.txt              LightGBM text model files (kinds x folds)
REPO/oanet_fusion/<v>/profile.yaml             the line profile
REPO/oanet_fusion/<v>/integrity.py            the load-time check (each model.py runs it before any import)
REPO/oanet_fusion/<v>/recognizer/             with --recognizer DIR: the line's distilled OCR recogniser
                                               (recognizer.onnx, recognizer.json; `oanet ocr distill`), which
                                               the worker's OCR processes read
REPO/oanet_ocr_student/config.pbtxt, <v>/      with --recognizer DIR: the same recognizer.onnx served by Triton
                                               (worker.student_inference=triton): Python-backend runner with
                                               its helpers, or the ONNX Runtime backend (--cnn-backend libtorch)
REPO/oanet_fusion/<v>/manifest.json            sha256 of every file above and of the config.pbtxt files (paths
                                               relative to REPO), profile, feature order, threshold, metrics,
                                               training args, tensors
REPO/oanet_fusion/<v>/manifest.sig             HMAC-SHA256 of manifest.json with OANET_MODEL__SIGNING_KEY (if set)
REPO/oanet/config.pbtxt, REPO/oanet/<v>/       the ensemble
```
Versions accumulate: an existing version is never touched; a version is staged in hidden
folders and renamed into place only when complete. `verify_export` re-hashes every file. The
config.pbtxt files are generated (Triton's ModelConfig protobuf, text format) and describe the
latest version, which is the one Triton serves (version policy latest 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from oanet.contracts import RECOGNIZER_FOLDER
from training.errors import ExportError
from triton_models.oanet_fusion import core, integrity, serving

SOURCE_DIR = Path(core.__file__).parent  # triton_models/oanet_fusion
ENCODER_SOURCE_DIR = SOURCE_DIR.parent / "oanet_image_encoder"  # its Python-backend runner
STUDENT_SOURCE_DIR = SOURCE_DIR.parent / "oanet_ocr_student"  # the OCR student's runner
CNN_BACKENDS = ("python", "libtorch")
DEVICES = ("cpu", "gpu")
# Chosen with `oanet bench triton` (docs/benchmarks.md): each Python-backend execution has a fixed
# cost, so on CPU the scheduler does best waiting up to 1 ms for a batch of 16 or more rather than
# sending out every 4 frames it finds queued; when load is light a frame waits at most that 1 ms.
DEFAULT_PREFERRED_BATCH_SIZES = (16, 32, 64)
DEFAULT_MAX_QUEUE_DELAY_US = 1000


def existing_versions(repo: Path) -> set[int]:
    models = (*serving.MODELS, *serving.OPTIONAL_MODELS)
    return {version for model in models for version in serving.model_versions(repo, model)}


@dataclass(frozen=True)
class ServingOptions:
    """How the exported version is served (config.pbtxt of each model; recorded in the manifest)."""

    cnn_backend: str = "python"  # python: runner model.py (pip Triton) | libtorch: backend "pytorch" (NGC)
    device: str = "cpu"  # cpu | gpu: instance kind of the CNN (the fusion stage is numpy: always CPU)
    max_batch: int = 64
    instances: int = 1  # per model (per GPU for KIND_GPU)
    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES  # see default_batch_sizes
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    # Threads per instance (torch, LightGBM); 0: the cores shared out among the model's instances.
    # 1 by default: the CNN runner, the fusion stage and the clients share the cores, and OpenMP
    # threads that wait on each other collapse under such contention (measured on 2 cores: a
    # 32 px ResNet-18 batch took 587 ms with 2 threads against 7.7 ms with 1; docs/benchmarks.md).
    # Scale with --instances; raise it on machines with cores to spare.
    cpu_threads: int = 1
    dynamic_batching: bool = True

    def problems(self) -> list[str]:
        found = []
        if self.cnn_backend not in CNN_BACKENDS:
            found.append(f"--cnn-backend must be one of {', '.join(CNN_BACKENDS)}, got {self.cnn_backend!r}")
        if self.device not in DEVICES:
            found.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.max_batch < 1 or self.instances < 1:
            found.append("--max-batch and --instances must be at least 1")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch]
        if bad:
            found.append(f"--preferred-batch-sizes must lie in 1..--max-batch ({self.max_batch}), got {bad}")
        if self.max_queue_delay_us < 0 or self.cpu_threads < 0:
            found.append("--max-queue-delay-us and --cpu-threads must not be negative")
        return found


def default_batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The default preferred batch sizes that fit `max_batch` (at least `max_batch` itself)."""
    return tuple(b for b in DEFAULT_PREFERRED_BATCH_SIZES if b <= max_batch) or (max_batch,)


def _add_tensors(target, tensors: list[dict]) -> None:
    for spec in tensors:
        tensor = target.add()
        tensor.name = spec["name"]
        tensor.data_type = mc.DataType.Value(f"TYPE_{spec['dtype']}")
        tensor.dims.extend(spec["dims"])


def _batched_model(name: str, spec: dict, opts: ServingOptions, kind: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, max_batch_size=opts.max_batch)
    config.version_policy.latest.num_versions = 1  # the models check they serve one version together
    _add_tensors(config.input, spec["inputs"])
    _add_tensors(config.output, spec["outputs"])
    if opts.dynamic_batching:
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.preferred_batch_size.extend(sorted(set(opts.preferred_batch_sizes)))
        config.dynamic_batching.max_queue_delay_microseconds = opts.max_queue_delay_us
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.Kind.Value(kind)
    group.count = opts.instances
    return config


def model_configs(io: dict, opts: ServingOptions, info: dict[str, str],
                  student: dict[str, str] | None = None) -> dict[str, mc.ModelConfig]:
    """Triton ModelConfig protobufs of the three models, and of the OCR student when `student`
    (its `serving.student_parameters`) is given; `info` (serving.info_parameters) goes into
    oanet_fusion's parameters, where clients read it and the fusion model checks it at load."""
    encoder = _batched_model(core.ENCODER_MODEL, io[core.ENCODER_MODEL], opts,
                             "KIND_GPU" if opts.device == "gpu" else "KIND_CPU")
    if opts.cnn_backend == "libtorch":
        # Input OBJECT_ROI matches forward()'s argument name; the outputs follow config order.
        encoder.backend = "pytorch"
        encoder.default_model_filename = "model.pt"
        encoder.parameters["INFERENCE_MODE"].string_value = "true"
        if opts.cpu_threads:
            encoder.parameters["INTRA_OP_THREAD_COUNT"].string_value = str(opts.cpu_threads)
    else:
        encoder.backend = "python"
        encoder.parameters[serving.CPU_THREADS].string_value = str(opts.cpu_threads)
    fusion = _batched_model(core.FUSION_MODEL, io[core.FUSION_MODEL], opts, "KIND_CPU")
    fusion.backend = "python"
    fusion.parameters[serving.CPU_THREADS].string_value = str(opts.cpu_threads)
    for key, value in info.items():
        fusion.parameters[key].string_value = value

    ensemble = mc.ModelConfig(name=core.ENSEMBLE_MODEL, platform="ensemble", max_batch_size=opts.max_batch)
    ensemble.version_policy.latest.num_versions = 1
    _add_tensors(ensemble.input, io[core.ENSEMBLE_MODEL]["inputs"])
    _add_tensors(ensemble.output, io[core.ENSEMBLE_MODEL]["outputs"])
    for model in (core.ENCODER_MODEL, core.FUSION_MODEL):
        step = ensemble.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for tensor in io[model]["inputs"]:
            step.input_map[tensor["name"]] = tensor["name"]
        for tensor in io[model]["outputs"]:
            step.output_map[tensor["name"]] = tensor["name"]
    configs = {core.ENCODER_MODEL: encoder, core.FUSION_MODEL: fusion, core.ENSEMBLE_MODEL: ensemble}
    if student is not None:
        configs[core.STUDENT_MODEL] = _student_config(io[core.STUDENT_MODEL], opts, student)
    return configs


def _student_config(spec: dict, opts: ServingOptions, params: dict[str, str]) -> mc.ModelConfig:
    # A neural network like the CNN: on the CNN's device, and with the NGC container's native
    # backend where the CNN gets libtorch.
    config = _batched_model(core.STUDENT_MODEL, spec, opts, "KIND_GPU" if opts.device == "gpu" else "KIND_CPU")
    if opts.cnn_backend == "libtorch":
        config.backend = "onnxruntime"
        config.default_model_filename = core.STUDENT_FILE
        if opts.cpu_threads:
            config.parameters["intra_op_thread_count"].string_value = str(opts.cpu_threads)
    else:
        config.backend = "python"
        config.parameters[serving.CPU_THREADS].string_value = str(opts.cpu_threads)
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def pbtxt_configs(io: dict, opts: ServingOptions, info: dict[str, str],
                  student: dict[str, str] | None = None) -> dict[str, str]:
    """config.pbtxt texts of the models (protobuf text format of Triton's ModelConfig)."""
    return {model: text_format.MessageToString(config, use_short_repeated_primitives=True)
            for model, config in model_configs(io, opts, info, student).items()}


def runner_files(opts: ServingOptions, student: bool = False) -> dict[str, list[Path]]:
    """Source files export copies into each model's version folder (all listed in the manifest)."""
    shared = [SOURCE_DIR / "integrity.py", SOURCE_DIR / "core.py", SOURCE_DIR / "serving.py"]
    files = {core.FUSION_MODEL: [*shared, SOURCE_DIR / "model.py"], core.ENCODER_MODEL: []}
    if opts.cnn_backend == "python":
        files[core.ENCODER_MODEL] = [*shared, ENCODER_SOURCE_DIR / "model.py"]
    if student:
        files[core.STUDENT_MODEL] = [*shared, STUDENT_SOURCE_DIR / "model.py"] if opts.cnn_backend == "python" else []
    return files


def student_io(recognizer: Path, height: int, width: int) -> dict:
    """The served student's tensors, its output shape read from one run of its ONNX graph."""
    import numpy as np

    from stream.ocr.errors import StudentError
    from stream.ocr.student import OnnxStudentNetwork

    blank = np.zeros((1, 1, height, width), np.float32)
    try:
        logits = OnnxStudentNetwork(recognizer / core.STUDENT_FILE, threads=1).logits(blank)
    except (StudentError, RuntimeError) as exc:
        raise ExportError(f"--recognizer {recognizer}: {exc}") from None
    return core.student_io_spec(height, width, int(logits.shape[1]), int(logits.shape[2]))


def _versions_info() -> dict[str, str]:
    import lightgbm
    import numpy
    import torch

    return {"torch": torch.__version__, "lightgbm": lightgbm.__version__, "numpy": numpy.__version__}


def student_files(recognizer: Path, profile: dict | None) -> tuple[list[Path], dict]:
    """The files of a distilled recogniser to export with a run, and its manifest entry.

    Refused (ExportError) unless it is a student of this run's line profile as it is: the worker
    would refuse it at start, and a profile changed since distillation means crops it never saw.
    """
    from oanet.profile import ProfileError, parse_profile
    from stream.ocr.errors import StudentError
    from stream.ocr.student import STUDENT_META_FILE, STUDENT_MODEL_FILE, load_meta, profile_sha256

    try:
        meta = load_meta(recognizer)
    except StudentError as exc:
        raise ExportError(f"--recognizer: {exc}") from None
    if profile is None:
        raise ExportError("--recognizer: the run has no line profile (model/profile.yaml) to check the recogniser "
                          "against; train it again")
    try:
        digest = profile_sha256(parse_profile(profile, "the run's line profile"))
    except ProfileError as exc:
        raise ExportError(str(exc)) from None
    if meta.profile_sha256 != digest:
        raise ExportError(f"--recognizer {recognizer} was distilled for line profile {meta.profile!r} as it was then, "
                          f"not for this run's {profile.get('name')!r}: distill it again on this line's frames")
    training = meta.stats.get("training") or {}
    entry = {"folder": RECOGNIZER_FOLDER, "profile": meta.profile, "threshold": meta.threshold,
             "input": {"height": meta.height, "width": meta.width}, "charset": meta.charset,
             "teacher": meta.teacher, "steps": meta.stats.get("steps"),
             "capped_by_wall_time": bool(training.get("capped_by_wall_time")),
             "calibration": meta.stats.get("calibration")}
    return [recognizer / STUDENT_MODEL_FILE, recognizer / STUDENT_META_FILE], entry


def export_run(run: Path, repo: Path, version: int | None = None, *, cnn_backend: str = "python",
               device: str = "cpu", max_batch: int = 64, instances: int = 1,
               options: ServingOptions | None = None, signing_key: str | None = None,
               recognizer: Path | None = None) -> tuple[int, list[str]]:
    """Write `run` as version `version` (default next free) of `repo`; returns (version, notes).

    `options` (when given) replaces the four serving keywords before it. With `signing_key` the
    manifest is signed (`integrity.SIGNATURE_FILE`). With `recognizer` (an `oanet ocr distill`
    folder) the line's OCR student goes into oanet_fusion/<v>/recognizer/, hashed with the
    rest. The config.pbtxt files
    are rewritten when the new version is the latest (the one Triton serves), since they carry
    its tensor shapes and the facts clients read (feature order, threshold, version).
    """
    opts = options or ServingOptions(cnn_backend=cnn_backend, device=device, max_batch=max_batch, instances=instances)
    import yaml

    from stream.ocr.student import load_meta, student_digest

    from training.outputs import ENCODER_FILE, FUSION_DIR, MODEL_DIR

    model_dir = run / MODEL_DIR
    fusion_src = model_dir / FUSION_DIR
    encoder_src = model_dir / ENCODER_FILE
    for needed in (run / "args.json", encoder_src, fusion_src / core.CONFIG_FILE, fusion_src / core.WEIGHTS_FILE):
        if not needed.is_file():
            raise ExportError(f"{run} is not a finished training run: {needed} is missing")
    if opts.problems():
        raise ExportError("; ".join(opts.problems()))
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
    student, student_entry = student_files(Path(recognizer), profile) if recognizer is not None else ([], None)
    io = core.io_spec(int(cfg["image_size"]), int(cfg["embedding_dim"]), len(cfg["feature_names"]))
    served_student = None  # config.pbtxt parameters of oanet_ocr_student, with --recognizer
    models = serving.MODELS
    if student_entry:
        io[core.STUDENT_MODEL] = student_io(Path(recognizer), student_entry["input"]["height"],
                                            student_entry["input"]["width"])
        served_student = serving.student_parameters(version, student_digest(Path(recognizer)),
                                                    load_meta(Path(recognizer)).to_json())
        models = (*models, core.STUDENT_MODEL)

    staging = {m: repo / m / f".staging-{version}-{os.getpid()}" for m in models}
    notes: list[str] = []
    if student_entry and student_entry["capped_by_wall_time"]:
        notes.append(f"the recogniser {recognizer} stopped training at its wall-time cap, short of its steps: it is "
                     "exported as it is (its calibration still holds), but distill it again to get the planned one")
    try:
        for folder in staging.values():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        shutil.copyfile(encoder_src, staging[core.ENCODER_MODEL] / "model.pt")
        fus = staging[core.FUSION_MODEL]
        shutil.copytree(fusion_src, fus, dirs_exist_ok=True)
        for model, sources in runner_files(opts, student=bool(student)).items():
            for source in sources:
                shutil.copyfile(source, staging[model] / source.name)
        if profile_path.is_file():
            shutil.copyfile(profile_path, fus / "profile.yaml")
        if student:
            (fus / RECOGNIZER_FOLDER).mkdir()
            for source in student:
                shutil.copyfile(source, fus / RECOGNIZER_FOLDER / source.name)
            shutil.copyfile(Path(recognizer) / core.STUDENT_FILE, staging[core.STUDENT_MODEL] / core.STUDENT_FILE)
        configs = pbtxt_configs(io, opts, serving.info_parameters(version, cfg, profile), served_student)
        files: dict[str, str] = {}
        for model, folder in staging.items():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = f"{model}/{version}/{path.relative_to(folder).as_posix()}"
                files[rel] = integrity.sha256_file(path)
        manifest = {
            "format_version": core.FORMAT_VERSION,
            "version": version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "paths_relative_to": "model repository root",
            "models": {"ensemble": core.ENSEMBLE_MODEL, "image_encoder": core.ENCODER_MODEL,
                       "fusion": core.FUSION_MODEL, **({"ocr_student": core.STUDENT_MODEL} if student else {})},
            "files": files,
            integrity.CONFIGS_KEY: {f"{model}/config.pbtxt": integrity.sha256_bytes(text.encode("utf-8"))
                              for model, text in configs.items()},
            "profile": profile,
            "feature_names": cfg["feature_names"],
            "excluded_text_fields": [f["name"] for f in (profile or {}).get("fields", []) if f.get("kind") == "text"],
            "image": {"size": int(cfg["image_size"]), "layout": "NHWC", "channels": "BGR", "dtype": "uint8",
                      "crop": "crop_object_roi(frame, profile.object_roi, (frame.width, frame.height), size) "
                              "in oanet/preprocess.py; cv2.INTER_AREA"},
            "embedding_dim": int(cfg["embedding_dim"]),
            "tensors": io,
            "branches": list(core.BRANCHES),
            "modalities": list(core.MODALITIES),
            "threshold": cfg["threshold"],
            "branch_thresholds": cfg["branch_thresholds"],
            "target_recall": cfg["target_recall"],
            "min_precision": cfg.get("min_precision", 0.0),
            "gate": cfg["gate"],
            "recognizer": student_entry,
            "metrics": {"val": metrics.get("val"), **evaluations},
            "training_args": args,
            "serving": {**dataclasses.asdict(opts), "configs": configs},
            "libraries": _versions_info(),
        }
        manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
        (fus / integrity.MANIFEST_FILE).write_bytes(manifest_bytes)
        if signing_key:
            (fus / integrity.SIGNATURE_FILE).write_text(integrity.signature(manifest_bytes, signing_key) + "\n",
                                                        encoding="ascii")
        for model, folder in staging.items():
            folder.rename(repo / model / str(version))
    except BaseException:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if version == max(existing_versions(repo)):
        for model, text in configs.items():
            config_path = repo / model / "config.pbtxt"
            if config_path.is_file() and config_path.read_text(encoding="utf-8") != text:
                notes.append(f"rewrote {config_path} for version {version} (configs are generated: change the "
                             "export options, not the file)")
            _write_atomically(config_path, text)
    else:
        notes.append(f"version {version} is not the latest in {repo}: Triton serves the latest, whose config.pbtxt "
                     f"files were kept; version {version}'s are in its manifest (serving.configs)")
    problems = verify_export(repo, version, signing_key)
    if problems:
        raise ExportError(f"version {version} of {repo} does not verify after writing: {'; '.join(problems)}")
    return version, notes


def _write_atomically(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)


def verify_export(repo: Path, version: int | None = None, signing_key: str | None = None) -> list[str]:
    """Problems of version `version` (default latest) of `repo`; [] when it verifies: what Triton
    checks at load (integrity.version_problems; the config.pbtxt files only for the latest
    version, the one served with them)."""
    versions = existing_versions(repo)
    if not versions:
        return [f"{repo} holds no exported version"]
    latest = max(versions)
    version = latest if version is None else version
    problems = [f"{model}/{version} is missing" for model in serving.MODELS if not (repo / model / str(version)).is_dir()]
    return problems + integrity.version_problems(repo / core.FUSION_MODEL / str(version), signing_key,
                                                 check_configs=version == latest)


def main(args: argparse.Namespace) -> int:
    from oanet.settings import load_settings

    secret = load_settings().model.signing_key
    key = secret.get_secret_value() if secret else None
    repo = Path(args.repo)
    if args.verify:
        problems = verify_export(repo, args.version, key)
        if problems:
            raise ExportError(f"{repo} does not verify: {'; '.join(problems)}")
        version = args.version or max(existing_versions(repo))
        signed = ", manifest signature valid" if key else ""
        print(f"{repo} version {version}: every file is listed and matches its sha256 in the manifest{signed}")
        return 0
    if args.run is None:
        raise ExportError("--run is required (unless --verify)")
    sizes = default_batch_sizes(args.max_batch) if args.preferred_batch_sizes is None else args.preferred_batch_sizes
    opts = ServingOptions(cnn_backend=args.cnn_backend, device=args.device, max_batch=args.max_batch,
                          instances=args.instances, preferred_batch_sizes=tuple(sizes),
                          max_queue_delay_us=args.max_queue_delay_us, cpu_threads=args.cpu_threads)
    version, notes = export_run(Path(args.run), repo, args.version, options=opts, signing_key=key,
                                recognizer=args.recognizer)
    models = (*serving.MODELS, core.STUDENT_MODEL) if args.recognizer is not None else serving.MODELS
    print(f"exported {args.run} as version {version} of {repo} "
          f"({', '.join(models)}); manifest: {repo / core.FUSION_MODEL / str(version) / core.MANIFEST_FILE}")
    if args.recognizer is not None:
        print(f"with the OCR recogniser {args.recognizer}: {repo / core.FUSION_MODEL / str(version) / RECOGNIZER_FOLDER} "
              f"(the worker's OCR processes use it; worker.student=off turns it off), also served as "
              f"{core.STUDENT_MODEL} (worker.student_inference=triton)")
    for note in notes:
        print(f"note: {note}")
    return 0
