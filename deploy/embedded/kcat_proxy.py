"""A compatibility proxy that lets Debian's kcat (librdkafka 2.0.2) talk to the embedded Tansu.

Why (measured on Debian bookworm's kcat 1.7.1 / librdkafka 2.0.2 against Tansu 0.6.0):

* Tansu answers ApiVersions v3 with all four tagged fields of the response (SupportedFeatures,
  FinalizedFeaturesEpoch, FinalizedFeatures, ZkMigrationReady), default values included;
  Apache Kafka omits tagged fields that hold their defaults. librdkafka before 2.2 skips one
  byte too few per tagged field (fixed by confluentinc/librdkafka#4278), reads the epoch's
  0xFF bytes as a length and fails with "Read underflow" - on every connection.
* No client setting avoids it while keeping headers: record headers need message format v2
  (broker.version.fallback >= 0.11), and any fallback >= 0.10 makes librdkafka send the
  ApiVersions request even with api.version.request=false. With fallback 0.9 (what
  deploy/embedded/kcat.conf sets) metadata works, but Tansu drops Produce v1 and answers
  ListOffsets v0 with a body librdkafka cannot read: no produce, no consume.

The proxy forwards Kafka traffic unchanged except for two responses:

* ApiVersions v3+: the response's tagged fields are dropped (their values are the defaults);
* Metadata: every broker's host and port become the proxy's, so the client's follow-up
  connections come back through the proxy.

It is a development aid for the embedded single-broker stack, not a production component:
`oanet stack kcat-proxy`, then `kcat -b 127.0.0.1:PROXY_PORT ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading

log = logging.getLogger(__name__)

API_METADATA = 3
API_VERSIONS = 18
FIRST_FLEXIBLE_METADATA = 9


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _skip_tags(buf: bytes, pos: int) -> int:
    count, pos = _read_uvarint(buf, pos)
    for _ in range(count):
        _, pos = _read_uvarint(buf, pos)
        size, pos = _read_uvarint(buf, pos)
        pos += size
    return pos


def api_versions_without_tags(body: bytes) -> bytes:
    """An ApiVersions v3+ response body with its top-level tagged fields removed."""
    pos = 2  # error_code
    entries, pos = _read_uvarint(body, pos)
    for _ in range(entries - 1):
        pos = _skip_tags(body, pos + 6)  # api_key, min_version, max_version, tags
    pos += 4  # throttle_time_ms
    return body[:pos] + b"\x00"


def _string(body: bytes, pos: int, flexible: bool) -> int:
    """Position after a (nullable) string; compact (uvarint length + 1) when flexible."""
    if flexible:
        length, pos = _read_uvarint(body, pos)
        return pos + max(0, length - 1)
    (length,) = struct.unpack_from(">h", body, pos)
    return pos + 2 + max(0, length)


def metadata_through(body: bytes, version: int, host: str, port: int) -> bytes:
    """A Metadata response body (after the correlation id) with every broker at host:port."""
    flexible = version >= FIRST_FLEXIBLE_METADATA
    pos = _skip_tags(body, 0) if flexible else 0  # response header tags
    if version >= 3:
        pos += 4  # throttle_time_ms
    out = bytearray(body[:pos])
    if flexible:
        count, pos = _read_uvarint(body, pos)
        count -= 1
        out += _uvarint(count + 1)
    else:
        (count,) = struct.unpack_from(">i", body, pos)
        pos += 4
        out += struct.pack(">i", count)
    encoded = host.encode()
    for _ in range(count):
        out += body[pos:pos + 4]  # node_id
        pos = _string(body, pos + 4, flexible) + 4  # host, port
        out += (_uvarint(len(encoded) + 1) if flexible else struct.pack(">h", len(encoded))) + encoded
        out += struct.pack(">i", port)
        start = pos
        if version >= 1:
            pos = _string(body, pos, flexible)  # rack
        if flexible:
            pos = _skip_tags(body, pos)
        out += body[start:pos]
    return bytes(out) + body[pos:]


class KcatProxy:
    """The proxy on its own thread and event loop; `port` is where clients connect."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, host, port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, name="kcat-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("kcat proxy: broker %s:%s unreachable: %s", *self.upstream, exc)
            client_writer.close()
            return
        requests: dict[int, tuple[int, int]] = {}  # correlation id -> (api key, api version)

        async def upstream() -> None:
            while True:
                size = await client_reader.readexactly(4)
                message = await client_reader.readexactly(struct.unpack(">i", size)[0])
                key, version, correlation = struct.unpack_from(">hhi", message)
                requests[correlation] = (key, version)
                broker_writer.write(size + message)
                await broker_writer.drain()

        async def downstream() -> None:
            while True:
                size = await broker_reader.readexactly(4)
                message = await broker_reader.readexactly(struct.unpack(">i", size)[0])
                (correlation,) = struct.unpack_from(">i", message)
                key, version = requests.pop(correlation, (-1, -1))
                body = message[4:]
                if key == API_VERSIONS and version >= 3:
                    body = api_versions_without_tags(body)
                elif key == API_METADATA:
                    body = metadata_through(body, version, self.host, self.port)
                client_writer.write(struct.pack(">i", 4 + len(body)) + message[:4] + body)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # one side closed
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, broker_writer):
                writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
