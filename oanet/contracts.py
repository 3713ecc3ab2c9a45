"""Names that cross process boundaries, defined once.

Producers (cameras, `oanet replay`), the stream worker, Triton models, training and export
import these instead of spelling strings, so a rename is one edit. Default topic names live in
`oanet.settings.TopicSettings` because users configure them.
"""

from typing import Final

# Headers on a message of the frames topic (DESIGN.md "Topics and messages").
HEADER_FRAME_ID: Final = "frame_id"
HEADER_LINE_ID: Final = "line_id"
HEADER_CAPTURED_AT: Final = "captured_at"
HEADER_PROFILE: Final = "profile"

# Headers the worker adds to a dead letter, beside the original headers.
HEADER_ERROR_CODE: Final = "oanet.error.code"
HEADER_ERROR_MESSAGE: Final = "oanet.error.message"
HEADER_ERROR_STAGE: Final = "oanet.error.stage"
HEADER_SOURCE_TOPIC: Final = "oanet.source.topic"
HEADER_SOURCE_PARTITION: Final = "oanet.source.partition"
HEADER_SOURCE_OFFSET: Final = "oanet.source.offset"

MIB: Final = 1024 * 1024
