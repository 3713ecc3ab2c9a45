from oanet.errors import OanetError


class StackError(OanetError):
    """The embedded stack cannot start, stop or report its state."""
