"""Triton Python-backend runner of the line's OCR student `recognizer.onnx` (`oanet ocr distill`):
FP32 `lines` [N, 1, H, W] -> `logits` [N, T, C], with onnxruntime, for Triton builds without
the ONNX Runtime backend (such as the one in the `nvidia-pytriton` wheel). The NGC container
serves the same file with `platform: "onnxruntime_onnx"` instead (`oanet export --cnn-backend
libtorch`, which picks the native backends).

`oanet export --recognizer DIR` copies this file with `integrity.py`, `core.py` and `serving.py`
(from oanet_fusion) into the version folder; the files are checked against the version's
manifest before any sibling import, as the other models do. Unlike them it may stay served
beside a newer version exported without a student: its clients compare the digest it publishes
(`serving.STUDENT_DIGEST_KEY`) with their own copy's. The device comes from the instance group
(KIND_GPU: onnxruntime's CUDA provider, which the Triton image must have), the CPU threads
from the `cpu_threads` parameter.
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


_load_sibling("integrity").check_or_refuse(_FOLDER, only_model=_FOLDER.parent.name)
sys.path.insert(0, str(_FOLDER))

import core  # noqa: E402
import serving  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.config, name, version, folder = serving.checked_version(pb_utils, args, one_version=False)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        if serving.torch_device(args["model_instance_kind"], args["model_instance_device_id"]) == "cpu":
            options.intra_op_num_threads = serving.cpu_threads(self.config)
            providers = ["CPUExecutionProvider"]
        elif "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])})]
        else:
            serving.refuse(pb_utils, name, version, [
                "a KIND_GPU instance needs onnxruntime's CUDAExecutionProvider, which this Python environment "
                f"lacks (it has {', '.join(ort.get_available_providers())}): install onnxruntime-gpu, or export "
                "with --device cpu"])
        try:
            self.session = ort.InferenceSession(str(folder / core.STUDENT_FILE), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            serving.refuse(pb_utils, name, version, [f"cannot load {core.STUDENT_FILE}: {exc}"])
        self.dtypes = serving.output_dtypes(pb_utils, self.config)

    def execute(self, requests):
        return serving.respond(pb_utils, requests, serving.STUDENT_INPUTS, self.dtypes, self._forward,
                               serving.check_student_request)

    def _forward(self, arrays):
        (logits,) = self.session.run([core.STUDENT_OUTPUT], {core.STUDENT_INPUT: arrays[core.STUDENT_INPUT]})
        return {core.STUDENT_OUTPUT: logits}
