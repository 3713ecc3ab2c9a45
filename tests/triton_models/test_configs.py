"""Every config.pbtxt export can write parses as Triton's ModelConfig protobuf (the generated
`model_config_pb2` that tritonclient ships) and says what the export options asked for."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from training import commands as training_commands
from training import export
from training.errors import ExportError
from triton_models.oanet_fusion import core, serving

IO = core.io_spec(32, 16, 9)
INFO = serving.info_parameters(2, {"feature_names": [f"f{i}" for i in range(9)], "image_size": 32,
                                   "embedding_dim": 16, "threshold": 0.25})


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize("cnn_backend", export.CNN_BACKENDS)
@pytest.mark.parametrize("device", export.DEVICES)
def test_generated_configs_parse_as_model_config(cnn_backend: str, device: str):
    opts = export.ServingOptions(cnn_backend=cnn_backend, device=device, max_batch=32, instances=3,
                                 preferred_batch_sizes=(16, 4), max_queue_delay_us=250, cpu_threads=2)
    configs = {model: parse(text) for model, text in export.pbtxt_configs(IO, opts, INFO).items()}
    assert set(configs) == set(serving.MODELS)
    encoder, fusion, ensemble = (configs[m] for m in (core.ENCODER_MODEL, core.FUSION_MODEL, core.ENSEMBLE_MODEL))

    assert encoder.backend == ("pytorch" if cnn_backend == "libtorch" else "python")
    kind = mc.ModelInstanceGroup.KIND_GPU if device == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    assert [(g.kind, g.count) for g in encoder.instance_group] == [(kind, 3)]
    assert [(g.kind, g.count) for g in fusion.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 3)]
    for config in (encoder, fusion):
        assert config.max_batch_size == 32
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
        assert config.dynamic_batching.max_queue_delay_microseconds == 250
        assert config.version_policy.latest.num_versions == 1
    if cnn_backend == "libtorch":
        assert encoder.default_model_filename == "model.pt"
        assert encoder.parameters["INTRA_OP_THREAD_COUNT"].string_value == "2"
        # libtorch matches inputs to forward()'s argument names and outputs by config order
        assert [t.name for t in encoder.input] == [core.ROI_INPUT]
        assert [t.name for t in encoder.output] == [core.EMBEDDING, core.IMAGE_LOGIT]
    else:
        assert encoder.parameters[serving.CPU_THREADS].string_value == "2"
    assert {k: v.string_value for k, v in fusion.parameters.items()} == {**INFO, serving.CPU_THREADS: "2"}

    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 32
    assert [t.name for t in ensemble.input] == [core.ROI_INPUT, core.PARAM_VALUES, core.PARAM_MISSING]
    assert ensemble.input[0].data_type == mc.TYPE_UINT8 and list(ensemble.input[0].dims) == [32, 32, 3]
    steps = {s.model_name: s for s in ensemble.ensemble_scheduling.step}
    assert set(steps) == {core.ENCODER_MODEL, core.FUSION_MODEL}
    # every tensor a step consumes is an ensemble input or another step's output
    produced = {t.name for t in ensemble.input} | {v for s in steps.values() for v in s.output_map.values()}
    for step in steps.values():
        assert set(step.input_map.values()) <= produced
    assert {t.name for t in ensemble.output} <= set(steps[core.FUSION_MODEL].output_map.values())


def test_options_without_batching_and_bad_options():
    opts = export.ServingOptions(dynamic_batching=False)
    for model in (core.ENCODER_MODEL, core.FUSION_MODEL):
        assert not parse(export.pbtxt_configs(IO, opts, INFO)[model]).HasField("dynamic_batching")
    problems = export.ServingOptions(max_batch=8, preferred_batch_sizes=(4, 16), max_queue_delay_us=-1,
                                     cnn_backend="onnx").problems()
    assert len(problems) == 3
    assert "--preferred-batch-sizes must lie in 1..--max-batch (8), got [16]" in problems


def test_export_option_defaults_mirror_the_export_module():
    parser = argparse.ArgumentParser()
    training_commands._register_export(parser.add_subparsers())  # noqa: SLF001 - the parser under test
    args = parser.parse_args(["export", "--repo", "r"])
    defaults = export.ServingOptions()
    assert args.preferred_batch_sizes is None  # export.default_batch_sizes(--max-batch)
    assert export.default_batch_sizes(args.max_batch) == defaults.preferred_batch_sizes
    assert export.default_batch_sizes(32) == (16, 32) and export.default_batch_sizes(8) == (8,)
    assert args.max_queue_delay_us == defaults.max_queue_delay_us
    assert (args.max_batch, args.instances, args.cpu_threads) == (defaults.max_batch, defaults.instances,
                                                                  defaults.cpu_threads)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--repo", "r", "--preferred-batch-sizes", "4,x"])


def test_export_writes_parsable_configs_and_runner_files_into_the_manifest(served_run: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    version, _ = export.export_run(served_run, repo, options=export.ServingOptions(device="gpu", instances=2))
    for model in serving.MODELS:
        parse((repo / model / "config.pbtxt").read_text())
    files = json.loads((repo / "oanet_fusion/1/manifest.json").read_text())["files"]
    for rel in ("oanet_fusion/1/model.py", "oanet_fusion/1/serving.py", "oanet_fusion/1/core.py",
                "oanet_image_encoder/1/model.py", "oanet_image_encoder/1/serving.py", "oanet_image_encoder/1/core.py",
                "oanet_image_encoder/1/model.pt"):
        assert rel in files, rel
    encoder = parse((repo / "oanet_image_encoder/config.pbtxt").read_text())
    assert encoder.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU

    # a libtorch export ships only model.pt for the CNN, and the configs follow the latest version
    version, notes = export.export_run(served_run, repo, options=export.ServingOptions(cnn_backend="libtorch"))
    assert sorted(p.name for p in (repo / "oanet_image_encoder/2").iterdir()) == ["model.pt"]
    assert parse((repo / "oanet_image_encoder/config.pbtxt").read_text()).backend == "pytorch"
    assert parse((repo / "oanet_fusion/config.pbtxt").read_text()).parameters["oanet_version"].string_value == "2"
    assert any("rewrote" in note for note in notes)
    # an older version written later leaves the served configs alone
    shutil.rmtree(repo / "oanet" / "1")
    for model in ("oanet_image_encoder", "oanet_fusion"):
        shutil.rmtree(repo / model / "1")
    _, notes = export.export_run(served_run, repo, version=1)
    assert parse((repo / "oanet_fusion/config.pbtxt").read_text()).parameters["oanet_version"].string_value == "2"
    assert any("is not the latest" in note for note in notes)
    with pytest.raises(ExportError, match="--preferred-batch-sizes"):
        export.export_run(served_run, repo, options=export.ServingOptions(max_batch=32))
