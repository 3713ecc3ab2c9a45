from oanet.errors import OanetError


class StreamError(OanetError):
    """A stream component (broker, topics, worker) cannot do its job."""


class TritonError(StreamError):
    """Inference through Triton did not produce a result (see the two kinds below)."""


class TritonUnavailable(TritonError):
    """Triton cannot answer now: server down or not ready, model not loaded, deadline passed
    (UNAVAILABLE, DEADLINE_EXCEEDED and the like). Not the frame's fault: pause, retry later,
    never dead-letter."""


class InferenceFailed(TritonError):
    """The served model failed computing a request (INTERNAL): the frame may be the cause, or
    only a neighbour in the batch Triton ran it in. Retry it alone; a frame that fails alone
    every time is dead-lettered. `frame_index` is its position in the `infer` call, if known."""

    def __init__(self, message: str, frame_index: int | None = None):
        super().__init__(message)
        self.frame_index = frame_index


class InferenceRejected(TritonError):
    """Triton (or the client's own check) refused a frame's inputs (INVALID_ARG): retrying cannot
    help, dead-letter that frame. `frame_index` is its position in the `infer` call, if known."""

    def __init__(self, message: str, frame_index: int | None = None):
        super().__init__(message)
        self.frame_index = frame_index
