"""Errors of the training package: one-line messages a line engineer can act on."""

from oanet.errors import OanetError


class TrainingError(OanetError):
    """Training, evaluation, ablation or export cannot proceed with the given input."""

    exit_code = 2


class ExportError(TrainingError):
    """A model repository cannot be written or does not verify."""
