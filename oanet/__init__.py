"""OANet streaming inspection: shared settings, contracts and the `oanet` command line."""

__version__ = "0.1.0"
