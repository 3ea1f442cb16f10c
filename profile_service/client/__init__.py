"""Python clients for profile.v1.ProfileService: one method per RPC, typed exceptions.

    from profile_service.client import ProfileClient
    with ProfileClient("profiles:50051", token=lambda: session.access_token) as client:
        profile = client.get()

AsyncProfileClient is the same for asyncio code (`async with`, `await client.get()`).

Deadlines and retries come from gRPC's own service config (`service_config.json` beside this
file, the same file grpc-js or Go clients can load): every call has a default deadline, and
only `UNAVAILABLE` is retried, with backoff. The service guarantees that a call answered
`UNAVAILABLE` changed nothing, so every RPC, writes included, is safe to retry on it.

Failures raise the classes of `profile_service.errors` (re-exported here): `NotFound`,
`InvalidArgument` (with `.violations`, the BadRequest field violations), `Aborted` (an etag
that does not hold), ... each with `.code`, `.reason` (google.rpc.ErrorInfo) and `.request_id`.
"""

from profile_service.client.channel import SERVICE_CONFIG, TLS, Token, channel_options
from profile_service.client.clients import AsyncProfileClient, AsyncToken, ProfileClient
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
)

__all__ = [
    "SERVICE_CONFIG",
    "TLS",
    "Aborted",
    "AlreadyExists",
    "AsyncProfileClient",
    "AsyncToken",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ProfileClient",
    "ServiceError",
    "Token",
    "Unauthenticated",
    "Unavailable",
    "channel_options",
]
