from oanet.errors import OanetError


class StreamError(OanetError):
    """A stream component (broker, topics, worker) cannot do its job."""
