"""Triton Python-backend runner of the TorchScript CNN `model.pt` (uint8 NHWC BGR `OBJECT_ROI`
-> `EMBEDDING`, `IMAGE_LOGIT`), for Triton builds without the libtorch backend, such as the
one in the `nvidia-pytriton` wheel. The NGC container serves the same `model.pt` with
`backend: "pytorch"` instead (`oanet export --cnn-backend libtorch`).

`oanet export` copies this file with `integrity.py`, `core.py` and `serving.py` (from
oanet_fusion) into the version folder. Before any sibling import and `torch.jit.load` the
version's files are checked against the sha256 manifest that `oanet_fusion/<v>/manifest.json`
holds (integrity.py). The device comes from the instance
group (KIND_GPU: `cuda:<device id>`), the CPU thread count from the `cpu_threads` parameter.
"""

import importlib.util
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils  # the stub's own module, never one of this folder

# No .pyc files next to the modules: the version folder must stay exactly what the manifest lists.
sys.dont_write_bytecode = True
_FOLDER = Path(__file__).resolve().parent


def _load_sibling(name):
    spec = importlib.util.spec_from_file_location(name, _FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Before any other file of this version runs: integrity.py (standard library only, loaded by
# path) checks every file against the manifest and its signature; a refused version fails its
# load, and Triton logs why.
_load_sibling("integrity").check_or_refuse(_FOLDER, only_model=_FOLDER.parent.name)
# Triton's Python stub ignores PYTHONPATH: the sibling modules are imported from this folder.
sys.path.insert(0, str(_FOLDER))

import core  # noqa: E402
import serving  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.config, name, version, folder = serving.checked_version(pb_utils, args)
        import torch  # after the checks: a refused version fails fast, without loading torch

        self.torch = torch
        self.device = torch.device(serving.torch_device(args["model_instance_kind"], args["model_instance_device_id"]))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        else:
            # Triton runs several instances side by side: each gets its share of the cores.
            torch.set_num_threads(serving.cpu_threads(self.config))
        try:
            self.model = torch.jit.load(str(folder / "model.pt"), map_location=self.device).eval()
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
            serving.refuse(pb_utils, name, version, [f"cannot load model.pt: {exc}"])
        self.dtypes = serving.output_dtypes(pb_utils, self.config)

    def execute(self, requests):
        return serving.respond(pb_utils, requests, serving.ENCODER_INPUTS, self.dtypes, self._forward)

    def _forward(self, arrays):
        torch = self.torch
        with torch.inference_mode():
            rois = torch.from_numpy(arrays[core.ROI_INPUT]).to(self.device, non_blocking=True)
            if self.device.type == "cpu":
                # One frame at a time: oneDNN picks its convolution kernels by batch size, so a
                # frame's embedding would differ in the last float32 bits with the batch the
                # dynamic batcher happened to form, and a replayed frame's verdict with it.
                # Batch 1 is the same computation every time. It costs 3-17% of the served
                # throughput of the default model (docs/benchmarks.md); the execution's fixed
                # cost, which batching amortises, stays shared.
                outputs = [self.model(rois[i : i + 1]) for i in range(len(rois))]
                embedding = torch.cat([e for e, _ in outputs])
                logit = torch.cat([l for _, l in outputs])
            else:
                embedding, logit = self.model(rois)
            return {core.EMBEDDING: embedding.float().cpu().numpy(), core.IMAGE_LOGIT: logit.float().cpu().numpy()}
