"""What both clients share: the service config, TLS, the token, and errors read back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from profile_service.errors import ServiceError, from_rpc_error
from profile_service.v1 import profile_service_pb2 as pb

# The service config as text: hand it to grpc-js (`grpc.service_config`) or Go
# (`grpc.WithDefaultServiceConfig`) unchanged.
SERVICE_CONFIG: str = files("profile_service.client").joinpath("service_config.json").read_text()

# The caller's JWT, or a function returning it (called before every call).
Token = str | Callable[[], str]
_Channel = TypeVar("_Channel")


@dataclass(frozen=True)
class TLS:
    """How to reach a server that serves TLS (GRPC_TLS_CERT_FILE).

    `root_certificates`: PEM of the CA that signed the server's certificate (None: the system's
    roots). `certificate_chain` and `private_key`: this client's certificate, for a server that
    requires one (mTLS, GRPC_TLS_CLIENT_CA_FILE). `server_name`: the name to check the server's
    certificate against, when it differs from the target's host."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these options stand for."""
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )


def channel_options(tls: TLS | None = None) -> list[tuple[str, Any]]:
    """The channel options the clients use: the service config, with retries on."""
    # Compact: channel arguments travel as one C string.
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(json.loads(SERVICE_CONFIG))),
        ("grpc.enable_retries", 1),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def open_channel(
    insecure: Callable[..., _Channel],
    secure: Callable[..., _Channel],
    target: str,
    tls: TLS | None,
    options: Iterable[tuple[str, Any]],
) -> _Channel:
    """A channel to `target` from grpc's (or grpc.aio's) channel functions: plaintext when
    `tls` is None; the service config's options first, then the caller's."""
    arguments = [*channel_options(tls), *options]
    if tls is None:
        return insecure(target, options=arguments)
    return secure(target, tls.credentials(), options=arguments)


def authorization(token: Token) -> tuple[tuple[str, str], ...]:
    """The call's metadata: the token, asked for now if it is a function."""
    value = token() if callable(token) else token
    return (("authorization", f"Bearer {value}"),)


def service_error(exc: grpc.RpcError, trailers: Any) -> ServiceError:
    """The ServiceError a failed call stands for, with the request id the server gave it."""
    error = from_rpc_error(exc)
    error.request_id = next((v for k, v in trailers or () if k == "x-request-id"), None)
    return error


def upsert_request(profile: pb.Profile, update_mask: Sequence[str] | None) -> pb.UpsertRequest:
    """Upsert's request; no mask (None) lets the server write the fields `profile` populates."""
    request = pb.UpsertRequest(profile=profile)
    if update_mask is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
    return request
