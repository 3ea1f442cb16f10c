"""A Python client for profile.v1.ProfileService: one method per RPC, typed exceptions.

    from profile_service.client import ProfileClient
    with ProfileClient("profiles:50051", token=lambda: session.access_token) as client:
        profile = client.get()

Deadlines and retries come from gRPC's own service config (`service_config.json` beside this
file, the same file grpc-js or Go clients can load): every call has a default deadline, and
only `UNAVAILABLE` is retried, with backoff. The service guarantees that a call answered
`UNAVAILABLE` changed nothing, so every RPC, writes included, is safe to retry on it.

Failures raise the classes of `profile_service.errors` (re-exported here): `NotFound`,
`InvalidArgument` (with `.violations`, the BadRequest field violations), `Aborted` (an etag
that does not hold), ... each with `.code`, `.reason` (google.rpc.ErrorInfo) and `.request_id`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from profile_service.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc

__all__ = [
    "SERVICE_CONFIG",
    "TLS",
    "Aborted",
    "AlreadyExists",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ProfileClient",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
]

# The service config as text: hand it to grpc-js (`grpc.service_config`) or Go
# (`grpc.WithDefaultServiceConfig`) unchanged.
SERVICE_CONFIG: str = files("profile_service.client").joinpath("service_config.json").read_text()

Token = str | Callable[[], str]
_Response = TypeVar("_Response")


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


def channel_options(tls: TLS | None = None) -> list[tuple[str, Any]]:
    """The channel options a ProfileClient uses: the service config, with retries on."""
    # Compact: channel arguments travel as one C string.
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(json.loads(SERVICE_CONFIG))),
        ("grpc.enable_retries", 1),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


class ProfileClient:
    """profile.v1.ProfileService over one channel. Thread-safe; close it (or use `with`).

    `token`: the caller's JWT, or a function returning it, called before every call (so a
    refreshed session token is picked up). `tls`: None for plaintext (a local or meshed
    connection), else how to verify the server. `timeout`: seconds, overriding the service
    config's default deadline for every call; each method also takes its own."""

    def __init__(
        self,
        target: str,
        *,
        token: Token,
        tls: TLS | None = None,
        timeout: float | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._token = token
        self._timeout = timeout
        all_options = [*channel_options(tls), *options]
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=all_options)
        else:
            credentials = grpc.ssl_channel_credentials(
                tls.root_certificates, tls.private_key, tls.certificate_chain
            )
            self._channel = grpc.secure_channel(target, credentials, options=all_options)
        self._stub = pb_grpc.ProfileServiceStub(self._channel)

    def get(self, owner_id: str = "", *, timeout: float | None = None) -> pb.Profile:
        """The caller's profile (a user, owner_id empty), or owner_id's (service_role)."""
        return self._call(self._stub.Get, pb.GetRequest(owner_id=owner_id), timeout)

    def upsert(
        self,
        profile: pb.Profile,
        update_mask: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> pb.Profile:
        """Create or update the caller's profile: the fields in `update_mask`, or (None) those
        `profile` populates; `["*"]` replaces every writable field. `profile.etag`, if set,
        must be the current one (else Aborted)."""
        request = pb.UpsertRequest(profile=profile)
        if update_mask is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(update_mask)))
        return self._call(self._stub.Upsert, request, timeout)

    def soft_delete(
        self, owner_id: str = "", *, etag: str = "", timeout: float | None = None
    ) -> pb.Profile:
        """Soft-delete the caller's profile; it can be undeleted until its purge_time."""
        request = pb.SoftDeleteRequest(owner_id=owner_id, etag=etag)
        return self._call(self._stub.SoftDelete, request, timeout)

    def undelete(
        self, owner_id: str = "", *, etag: str = "", timeout: float | None = None
    ) -> pb.Profile:
        """Restore a soft-deleted profile (the caller's, or owner_id's for service_role)."""
        request = pb.UndeleteRequest(owner_id=owner_id, etag=etag)
        return self._call(self._stub.Undelete, request, timeout)

    def batch_get_profiles(
        self, owner_ids: Sequence[str], *, timeout: float | None = None
    ) -> list[pb.Profile]:
        """1 to 1000 owners' profiles, in the order asked (service_role); all or NotFound."""
        request = pb.BatchGetProfilesRequest(owner_ids=list(owner_ids))
        response = self._call(self._stub.BatchGetProfiles, request, timeout)
        return list(response.profiles)

    def purge(
        self,
        retention_days: int = 0,
        *,
        dry_run: bool = False,
        batch_size: int = 0,
        timeout: float | None = None,
    ) -> int:
        """Delete for good the profiles soft-deleted over retention_days ago (0: the server's
        minimum); the number purged, or that would be with dry_run (service_role)."""
        request = pb.PurgeRequest(
            retention_days=retention_days, dry_run=dry_run, batch_size=batch_size
        )
        return self._call(self._stub.Purge, request, timeout).purge_count

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> ProfileClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self, method: Callable[..., _Response], request: Any, timeout: float | None
    ) -> _Response:
        token = self._token() if callable(self._token) else self._token
        try:
            return method(
                request,
                timeout=timeout if timeout is not None else self._timeout,
                metadata=(("authorization", f"Bearer {token}"),),
            )
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            call: Any = exc
            trailers = call.trailing_metadata() or ()
            error.request_id = next((v for k, v in trailers if k == "x-request-id"), None)
            raise error from exc
