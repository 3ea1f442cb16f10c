"""A bare HTTP/2 gRPC client for what the grpc library refuses to send: header values that
are not printable ASCII, bodies that are not protobuf, compressed bodies of any size."""

import base64
import gzip
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
from google.rpc import error_details_pb2, status_pb2

from devtools.h2_attacks import request_headers


@dataclass
class Answer:
    """What the server sent back on one stream."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    reset: bool = False

    @property
    def metadata(self) -> dict[bytes, bytes]:
        """Trailers, or a trailers-only answer's headers."""
        return {**self.headers, **self.trailers}

    @property
    def status(self) -> int | None:
        """The grpc-status."""
        raw = self.metadata.get(b"grpc-status")
        return None if raw is None else int(raw)

    @property
    def reason(self) -> str:
        """The google.rpc.ErrorInfo reason in the status details, or ""."""
        raw = self.metadata.get(b"grpc-status-details-bin")
        if raw is None:
            return ""
        status = status_pb2.Status.FromString(base64.b64decode(raw + b"=" * (-len(raw) % 4)))
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
        return ""

    @property
    def message(self) -> str:
        """The grpc-message, percent-decoded."""
        return unquote(self.metadata.get(b"grpc-message", b"").decode("ascii", "replace"))


def frame(message: bytes, *, compress: bool = False) -> bytes:
    """A gRPC length-prefixed message (gzip-compressed if `compress`)."""
    body = gzip.compress(message) if compress else message
    return struct.pack(">BI", 1 if compress else 0, len(body)) + body


def call(
    port: int,
    method: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    *,
    timeout: float = 5.0,
    end_stream: bool = True,
    pause: float = 0.0,
) -> Answer:
    """One unary call on a fresh connection to 127.0.0.1:`port`; `body` is sent as it is (and
    the request left open if not `end_stream`), its second half `pause` seconds after the
    first."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config=config)
    answer = Answer()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            request_headers(port, method, ((b"grpc-accept-encoding", b"identity,gzip"), *headers)),
        )
        if pause:
            conn.send_data(stream, body[: len(body) // 2])
            sock.sendall(conn.data_to_send())
            time.sleep(pause)
            body = body[len(body) // 2 :]
        conn.send_data(stream, body, end_stream=end_stream)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = dict(event.headers)  # type: ignore[arg-type]
                elif isinstance(event, h2.events.TrailersReceived):
                    answer.trailers = dict(event.headers)  # type: ignore[arg-type]
                elif isinstance(event, h2.events.DataReceived):
                    answer.data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamReset):
                    answer.reset = done = True
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            sock.sendall(conn.data_to_send())
    return answer
