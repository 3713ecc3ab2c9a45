"""Exceptions shared by every package.

Each package derives its own exceptions from `OanetError`. The command line prints the
message of an `OanetError` as one line and exits non-zero, so messages must be complete,
specific sentences a user can act on, without a traceback.
"""


class OanetError(Exception):
    """A predictable failure with a message meant for the user."""

    exit_code = 1


class ConfigError(OanetError):
    """Settings or a configuration file are invalid."""

    exit_code = 2
