"""Effective configuration: environment (`OANET_` prefix, `__` nesting), `.env`, defaults.

Command-line flags override settings by passing keyword arguments to `load_settings`, which
pydantic-settings gives the highest priority. Every model is frozen: a component receives its
settings once and cannot be surprised by a change elsewhere.

Endpoint defaults follow the embedded stack: when `kafka.bootstrap_servers` or `triton.url`
is not set, it points at the embedded broker / Triton ports from `stack`, so changing a stack
port is enough for every client to follow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from oanet.contracts import HEADER_CAPTURED_AT, HEADER_FRAME_ID, HEADER_LINE_ID, HEADER_PROFILE, MIB
from oanet.errors import ConfigError
from oanet.ocr_settings import OcrSettings

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StackSettings(_Frozen):
    """The embedded one-machine stack: Tansu broker and tritonserver from wheels."""

    state_dir: Path = Path(".oanet/stack")
    host: str = "127.0.0.1"
    broker_port: int = Field(9092, ge=1, le=65535)
    triton_http_port: int = Field(8000, ge=1, le=65535)
    triton_grpc_port: int = Field(8001, ge=1, le=65535)
    triton_metrics_port: int = Field(8002, ge=1, le=65535)
    model_repository: Path = Path("artifacts/model_repository")
    startup_timeout_s: float = Field(120.0, gt=0)
    stop_timeout_s: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackSettings:
        ports = [self.broker_port, self.triton_http_port, self.triton_grpc_port, self.triton_metrics_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"stack ports must all differ, got {ports}")
        return self


class KafkaSettings(_Frozen):
    bootstrap_servers: str = ""  # empty: the embedded broker (see module docstring)
    client_id: str = "oanet"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(30_000, ge=1000)
    # Tansu completes a group join in about half the session timeout; Kafka's 10 s default
    # made the first join take over 20 s there. 6 s keeps failover quick on real Kafka too.
    session_timeout_ms: int = Field(6_000, ge=1000)
    heartbeat_interval_ms: int = Field(1_000, ge=100)

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and sasl_password")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be smaller than session_timeout_ms")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security arguments shared by kafka-python's clients."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    kwargs[name] = str(value)
            if self.ssl_password is not None:
                kwargs["ssl_password"] = self.ssl_password.get_secret_value()
        return kwargs


class TopicSettings(_Frozen):
    frames: str = "aoi.frames"
    verdicts: str = "aoi.verdicts"
    dead_letter: str = "aoi.frames.dlq"
    frames_partitions: int = Field(6, ge=1)
    verdicts_partitions: int = Field(6, ge=1)
    dead_letter_partitions: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)
    max_frame_bytes: int = Field(8 * MIB, ge=1024)
    # Room for headers and record framing on top of the largest frame.
    message_overhead_bytes: int = Field(1 * MIB, ge=0)
    # How long the brokers keep records (topic config retention.ms, set when `oanet topics create`
    # creates the topic; -1: forever). Frames are large: keep them as long as the longest outage
    # the workers must catch up from (docs/operations.md, "Capacity planning"). Dead letters wait
    # for a person to replay them. Verdicts follow the broker's default.
    frames_retention_ms: int = Field(24 * 3600 * 1000, ge=-1)
    dead_letter_retention_ms: int = Field(14 * 24 * 3600 * 1000, ge=-1)

    @property
    def max_message_bytes(self) -> int:
        return self.max_frame_bytes + self.message_overhead_bytes

    @property
    def retention_ms(self) -> dict[str, int]:
        """retention.ms of the topics that set one."""
        return {self.frames: self.frames_retention_ms, self.dead_letter: self.dead_letter_retention_ms}

    @property
    def partitions(self) -> dict[str, int]:
        return {
            self.frames: self.frames_partitions,
            self.verdicts: self.verdicts_partitions,
            self.dead_letter: self.dead_letter_partitions,
        }

    @model_validator(mode="after")
    def _distinct_names(self) -> TopicSettings:
        if len({self.frames, self.verdicts, self.dead_letter}) != 3:
            raise ValueError("frames, verdicts and dead_letter topics must have different names")
        return self


class TritonSettings(_Frozen):
    url: str = ""  # gRPC host:port; empty: the embedded Triton (see module docstring)
    model_name: str = "oanet"
    # Deadline of one attempt of one request; a request past it counts as Triton unavailable.
    request_timeout_s: float = Field(10.0, gt=0)
    # Requests one client keeps in flight: enough for Triton's dynamic batcher to fill its
    # batches, bounded so a slow server pushes back on the worker instead of queueing frames.
    max_in_flight: int = Field(64, ge=1, le=4096)
    # Retries of a request answered UNAVAILABLE (server starting, restarting, overloaded), with
    # exponential backoff and jitter between retry_backoff_s and retry_backoff_max_s.
    retry_attempts: int = Field(4, ge=0, le=100)
    retry_backoff_s: float = Field(0.1, gt=0)
    retry_backoff_max_s: float = Field(2.0, gt=0)
    ready_timeout_s: float = Field(60.0, gt=0)  # default wait of `wait_ready`
    ssl: bool = False
    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None

    @model_validator(mode="after")
    def _backoff_order(self) -> TritonSettings:
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError("retry_backoff_max_s must not be smaller than retry_backoff_s")
        return self

    def grpc_client_kwargs(self) -> dict[str, Any]:
        """Arguments for `tritonclient.grpc.InferenceServerClient` (and its aio twin)."""
        kwargs: dict[str, Any] = {"url": self.url, "ssl": self.ssl}
        if self.ssl:
            for name in ("root_certificates", "private_key", "certificate_chain"):
                value = getattr(self, name)
                if value is not None:
                    kwargs[name] = str(value)
        return kwargs


ColorModel = Literal["gray", "gray_alpha", "rgb", "rgba", "palette", "cmyk", "ycck"]
KNOWN_HEADERS = (HEADER_FRAME_ID, HEADER_LINE_ID, HEADER_CAPTURED_AT, HEADER_PROFILE)


class WorkerSettings(_Frozen):
    """The stream worker (`oanet worker`): limits, concurrency, deadlines, header policy, metrics.

    The byte limit of a frame is `topics.max_frame_bytes`, shared with producers and the broker.
    """

    group_id: str = "oanet-worker"
    # Frames polled and not yet acknowledged (verdict or dead letter). Bounds memory under any
    # backlog: consumption pauses while the window is full.
    window: int = Field(32, ge=1, le=4096)
    ocr_processes: int = Field(1, ge=0, le=64)  # 0: OCR on one thread of the worker process
    # The OCR processes' distilled line recogniser (docs/operations.md, "The OCR student"):
    # `exported` reads the one exported with the served version (`oanet export --recognizer`:
    # stack.model_repository/oanet_fusion/<v>/recognizer/, checked against that version's
    # manifest) when the repository is readable here and holds one; otherwise PaddleOCR reads
    # every line. `off`: PaddleOCR only. ocr.recognizer (a folder) takes precedence over both.
    student: Literal["exported", "off"] = "exported"
    # Where the student's network runs: `local`, onnxruntime in each OCR process (CPU, the
    # default: cheaper than a round trip there); `triton`, the oanet_ocr_student model that
    # `oanet export --recognizer` adds to the repository (a GPU's dynamic batcher serves every
    # worker). It must serve the same student (checked at start); a call it does not answer
    # is read by PaddleOCR. Needs inference `triton`.
    student_inference: Literal["local", "triton"] = "local"
    # Decompression-bomb guard: width x height read from the PNG/JPEG header before decoding.
    max_pixels: int = Field(40_000_000, ge=1)
    # Colour models accepted; others are dead-lettered as unusable. CMYK/YCCK JPEGs (print
    # workflows, never a camera) decode with inverted or shifted colours in OpenCV.
    color_models: tuple[ColorModel, ...] = ("gray", "gray_alpha", "rgb", "rgba", "palette")
    # Headers a frame must carry (missing: dead letter; malformed: dead letter). A malformed
    # header that is not required is ignored with a warning, so a bad clock never costs a verdict.
    required_headers: tuple[str, ...] = ()
    # `local`: the exported model run in this process (stack.model_repository); `triton`: the
    # ensemble served by Triton (triton.url).
    inference: Literal["triton", "local"] = "triton"
    model_version: int | None = Field(None, ge=1)  # None: the latest version
    # While the model server is unavailable: consumption pauses and readiness is probed with
    # exponential backoff between these bounds.
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(10.0, gt=0)
    startup_timeout_s: float = Field(120.0, gt=0)
    # The OCR stage of one frame (decode, OCR, ROI) in a pool process: past this the process is
    # taken as hung and the pool restarted (worker/ocr_pool.py).
    ocr_timeout_s: float = Field(30.0, gt=0)
    # A frame in flight longer than this (outages of the model server excepted, /ready is 503
    # then anyway) makes /ready answer 503; oanet_worker_oldest_in_flight_seconds shows it.
    frame_deadline_s: float = Field(300.0, gt=0)
    # A frame the served model fails on (INTERNAL) is retried alone (no other request of this
    # worker in flight), with the backoff above, this many times before it is dead-lettered as
    # inference_failed. Failing in a batch is not counted: a batch neighbour may be the cause.
    inference_fault_attempts: int = Field(3, ge=1, le=20)
    # SIGTERM/SIGINT: in-flight frames get this long to finish before the final commit.
    drain_timeout_s: float = Field(30.0, gt=0)
    # Partitions revoked by a rebalance: their in-flight frames get this long to finish before
    # the revocation commit. kafka-python runs the callback on its IO thread (heartbeats wait),
    # so keep it well under kafka.session_timeout_ms.
    revoke_timeout_s: float = Field(2.0, ge=0)
    commit_interval_s: float = Field(1.0, gt=0)
    poll_timeout_ms: int = Field(100, ge=1, le=10_000)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(9464, ge=0, le=65535)  # 0: no HTTP endpoint
    status_interval_s: float = Field(10.0, gt=0)
    # auto: human-readable text on a terminal, one JSON object per line otherwise (log pipelines)
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("required_headers")
    @classmethod
    def _known_headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [h for h in value if h not in KNOWN_HEADERS]
        if unknown:
            raise ValueError(f"unknown header(s) {unknown}; the frames topic knows {list(KNOWN_HEADERS)}")
        return value

    @model_validator(mode="after")
    def _backoff_bounds(self) -> WorkerSettings:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")
        if self.student_inference == "triton" and self.inference != "triton":
            raise ValueError("student_inference 'triton' needs inference 'triton' (a model server to run it on)")
        return self


class ModelSettings(_Frozen):
    """The exported model repository's integrity control (triton_models/oanet_fusion/integrity.py)."""

    # HMAC-SHA256 key of the version manifests: `oanet export` signs with it, and Triton (the same
    # variable in its environment) and the worker refuse a version whose manifest it does not sign.
    signing_key: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OANET_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="forbid",
    )

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    triton: TritonSettings = TritonSettings()
    ocr: OcrSettings = OcrSettings()
    worker: WorkerSettings = WorkerSettings()
    model: ModelSettings = ModelSettings()

    @model_validator(mode="before")
    @classmethod
    def _default_endpoints(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        stack = data.get("stack", {})
        if not isinstance(stack, StackSettings):
            try:
                stack = StackSettings(**(stack or {}))
            except (ValidationError, TypeError):
                return data  # field validation reports it, with its full location
        for section, key, value in (
            ("kafka", "bootstrap_servers", f"{stack.host}:{stack.broker_port}"),
            ("triton", "url", f"{stack.host}:{stack.triton_grpc_port}"),
        ):
            current = data.get(section) or {}
            if isinstance(current, BaseModel):
                current = current.model_dump()
            if not current.get(key):
                data[section] = {**current, key: value}
        return data

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain data with every secret replaced by '**********'."""
        return json.loads(self.model_dump_json())

    def secret_values(self) -> list[str]:
        """The values of every secret setting that is set (for log redaction, oanet.logsecrets)."""
        found: list[str] = []

        def walk(model: BaseModel) -> None:
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, BaseModel):
                    walk(value)
                elif isinstance(value, SecretStr) and value.get_secret_value():
                    found.append(value.get_secret_value())

        walk(self)
        return found


def _validation_summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from env/.env with `overrides` (from command-line flags) on top.

    Overrides are nested dicts, e.g. `load_settings(stack={"broker_port": 19092})`; `None`
    values are dropped so an unset flag never hides a setting.
    """
    cleaned = _drop_none(overrides)
    try:
        return Settings(**cleaned)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_validation_summary(exc)}") from None
    except SettingsError as exc:  # an environment value that does not parse (lists are JSON)
        raise ConfigError(f"invalid settings: {exc} (list values are JSON, e.g. "
                          "OANET_WORKER__REQUIRED_HEADERS='[\"frame_id\"]')") from None


def settings_env(settings: Settings) -> dict[str, str]:
    """`OANET_*` variables that make a child process (`oanet worker` started by the demo, the
    bench or a test) load exactly these settings, whatever flags built them.

    Secrets are left out: the child inherits them from the same environment and `.env` the
    parent read them from (no command-line flag sets a secret). Unset optional values are left
    out too, so the child falls back to the same source.
    """
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            key = f"{prefix}__{name.upper()}" if prefix else name.upper()
            if isinstance(value, BaseModel):
                walk(key, value)
            elif value is None or isinstance(value, SecretStr):
                continue
            elif isinstance(value, (tuple, list)):
                env[f"OANET_{key}"] = json.dumps(list(value))
            elif isinstance(value, bool):
                env[f"OANET_{key}"] = "true" if value else "false"
            else:
                env[f"OANET_{key}"] = str(value)

    walk("", settings)
    return env


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
