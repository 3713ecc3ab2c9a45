"""Names that cross process boundaries, defined once.

Producers (cameras, `oanet replay`), the stream worker, Triton models, training and export
import these instead of spelling strings, so a rename is one edit. Default topic names live in
`oanet.settings.TopicSettings` because users configure them.
"""

from typing import Final

# The splits of a dataset folder's manifest (docs/contracts.md "Dataset folder").
SPLITS: Final = ("train", "val", "test")

# Headers on a message of the frames topic (docs/contracts.md "Topics and messages").
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
# A dead letter always fits its topic: when the original value plus these headers would pass
# max.message.bytes, the value is cut to fit and these say so (the original's size and sha256).
HEADER_ORIGINAL_SIZE: Final = "oanet.original.size"
HEADER_ORIGINAL_SHA256: Final = "oanet.original.sha256"
# "value" on the dead letter of a record with neither key nor value (Kafka needs one of them):
# its value is then empty.
HEADER_ORIGINAL_NULL: Final = "oanet.original.null"

MIB: Final = 1024 * 1024

# The versioned `schema` value of a verdict message; its JSON Schema is
# stream/schemas/verdict.v1.json (a change of the message is a new version and a new file).
VERDICT_SCHEMA: Final = "oanet.verdict.v1"

# Stages of the worker: the value of HEADER_ERROR_STAGE on a dead letter, the keys of a
# verdict's `timings_ms` and the `stage` label of the worker's latency metrics.
STAGE_HEADERS: Final = "headers"
STAGE_DECODE: Final = "decode"
STAGE_OCR: Final = "ocr"
STAGE_INFERENCE: Final = "inference"
STAGE_PRODUCE: Final = "produce"
STAGES: Final = (STAGE_HEADERS, STAGE_DECODE, STAGE_OCR, STAGE_INFERENCE, STAGE_PRODUCE)


class DeadLetterCode:
    """Values of HEADER_ERROR_CODE: one per cause, so alerts and replays can select by cause."""

    EMPTY_FRAME: Final = "empty_frame"  # zero-length value (or a tombstone)
    FRAME_TOO_LARGE: Final = "frame_too_large"  # more bytes than topics.max_frame_bytes
    UNDECODABLE: Final = "undecodable_image"  # not PNG/JPEG, corrupt header or data
    TRUNCATED: Final = "truncated_image"  # PNG without IEND, JPEG without EOI
    TOO_MANY_PIXELS: Final = "too_many_pixels"  # header dimensions over worker.max_pixels
    UNUSABLE_COLOR: Final = "unusable_color_format"  # colour model or depth the model cannot use
    PROFILE_MISMATCH: Final = "frame_profile_mismatch"  # aspect ratio is not the profile's
    MISSING_HEADER: Final = "missing_header"  # a header the policy requires is absent
    MALFORMED_HEADER: Final = "malformed_header"  # a required header does not parse
    UNKNOWN_PROFILE: Final = "unknown_profile"  # `profile` header names a profile not served
    INFERENCE_REJECTED: Final = "inference_rejected"  # the model server refused this frame's inputs
    # The served model failed (INTERNAL) on this frame each of worker.inference_fault_attempts
    # times, retried alone, outside any batch: a poison frame; replay after fixing the model.
    INFERENCE_FAILED: Final = "inference_failed"
    INTERNAL_ERROR: Final = "internal_error"  # a bug met this frame; kept for replay after the fix

    ALL: Final = (
        EMPTY_FRAME, FRAME_TOO_LARGE, UNDECODABLE, TRUNCATED, TOO_MANY_PIXELS, UNUSABLE_COLOR,
        PROFILE_MISMATCH, MISSING_HEADER, MALFORMED_HEADER, UNKNOWN_PROFILE, INFERENCE_REJECTED,
        INFERENCE_FAILED, INTERNAL_ERROR,
    )

# The folder of an exported version that holds the line's distilled OCR recogniser
# (`oanet export --recognizer DIR`: REPO/oanet_fusion/<v>/recognizer/), hashed in the version's
# manifest like every other file; the worker's OCR processes read it from there.
RECOGNIZER_FOLDER: Final = "recognizer"
