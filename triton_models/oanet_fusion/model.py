"""Triton Python-backend model `oanet_fusion`: LightGBM bag, tabular encoder, alignment, PCA
refinement and KL gate over the CNN's embedding, computed by `core.FusionCore` (the code
training evaluates with).

`oanet export` copies this file, `integrity.py`, `core.py` and `serving.py` into each version
folder. At load, before any sibling import, every file of the version's three model folders
(model.pt of the CNN included, whichever backend serves it) and the config.pbtxt files are
checked against the sha256 manifest and its signature (integrity.py); then the facts in
config.pbtxt against the artifacts. A tampered, incomplete, unlisted or mismatched repository
is refused with one log line naming the problem.
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
_load_sibling("integrity").check_or_refuse(_FOLDER)
# Triton's Python stub ignores PYTHONPATH: the sibling modules are imported from this folder.
sys.path.insert(0, str(_FOLDER))

import core  # noqa: E402
import serving  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.config, name, version, folder = serving.checked_version(pb_utils, args)
        try:
            self.core = core.FusionCore.load(folder, num_threads=serving.cpu_threads(self.config))
        except (core.CoreError, ValueError) as exc:
            serving.refuse(pb_utils, name, version, [str(exc)])
        problems = serving.info_mismatches(serving.parameters(self.config), version, self.core.config)
        if problems:
            serving.refuse(pb_utils, name, version, problems)
        self.dtypes = serving.output_dtypes(pb_utils, self.config)
        self.gate = serving.GateMonitor(pb_utils, name, version, self.core.gate_params)

    def execute(self, requests):
        return serving.respond(pb_utils, requests, serving.FUSION_INPUTS, self.dtypes, self._predict, self._validate)

    def _validate(self, arrays):
        serving.check_fusion_request(arrays, self.core.feature_names, self.core.embedding_dim)

    def _predict(self, arrays):
        out = self.core.predict(arrays[core.EMBEDDING], arrays[core.IMAGE_LOGIT][:, 0], arrays[core.PARAM_VALUES],
                                arrays[core.PARAM_MISSING])
        self.gate.observe(out["kl_scores"])
        return serving.fusion_outputs(out)
