"""Every way an API call can fail, in one place (as PostgREST's Error module): the errors the
service raises, the gRPC status each stands for, how it is sent, and how a client reads it
back (`from_rpc_error`: profile_service.client raises these same classes).

Every failed call carries a `google.rpc.Status` in its trailers (grpc-status-details-bin) with
a `google.rpc.ErrorInfo`: a stable `reason` a program can branch on (AIP-193), beside the
message for people. INVALID_ARGUMENT adds a `google.rpc.BadRequest` listing the faulty
fields. The reasons are listed in the README.
"""

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "profile.v1.ProfileService"
# gRPC refuses trailers over 16 KiB (the caller would get RESOURCE_EXHAUSTED instead): an
# error lists at most this many faults, and names the first few in its message.
MAX_REPORTED_FAULTS = 20
_FAULTS_IN_MESSAGE = 3


class Reason(enum.StrEnum):
    """Every reason a failed call carries (google.rpc.ErrorInfo.reason, AIP-193): the one
    list. REASON_CLASSES gives each its class, hence its status; README's error table and
    every use in the code are tested against both (tests/unit/test_reasons.py)."""

    TOKEN_MISSING = "TOKEN_MISSING"  # noqa: S105 - reasons, not secrets
    TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105
    SIGNING_KEYS_UNAVAILABLE = "SIGNING_KEYS_UNAVAILABLE"
    ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"
    NOT_OWN_PROFILE = "NOT_OWN_PROFILE"
    ROW_LEVEL_SECURITY = "ROW_LEVEL_SECURITY"
    INVALID_FIELDS = "INVALID_FIELDS"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    PROFILE_NOT_FOUND = "PROFILE_NOT_FOUND"
    PROFILE_ACTIVE = "PROFILE_ACTIVE"
    ETAG_MISMATCH = "ETAG_MISMATCH"
    DATABASE_UNREACHABLE = "DATABASE_UNREACHABLE"
    DATABASE_NOT_ANSWERING = "DATABASE_NOT_ANSWERING"
    DATABASE_TIMEOUT = "DATABASE_TIMEOUT"
    DATABASE_POOL_EXHAUSTED = "DATABASE_POOL_EXHAUSTED"
    DATABASE_READ_ONLY = "DATABASE_READ_ONLY"
    DATABASE_OUT_OF_RESOURCES = "DATABASE_OUT_OF_RESOURCES"
    WRITE_OUTCOME_UNKNOWN = "WRITE_OUTCOME_UNKNOWN"
    DATABASE_REFUSED = "DATABASE_REFUSED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    REQUEST_NOT_RECEIVED = "REQUEST_NOT_RECEIVED"
    NO_TIME_LEFT = "NO_TIME_LEFT"
    DEADLINE_TOO_SHORT = "DEADLINE_TOO_SHORT"
    UNDECRYPTABLE_FIELD = "UNDECRYPTABLE_FIELD"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request and what is wrong with it."""

    field: str
    description: str


class ServiceError(Exception):
    """A failure the caller is told about: a status, a message, and a reason for programs.

    On the client side, `request_id` is the id the server logged the call under."""

    # Each subclass's status; a client reading a status no subclass stands for sets its own.
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    request_id: str | None = None

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class InvalidArgument(ServiceError):
    """The request has bad fields; each is listed, up to MAX_REPORTED_FAULTS (the last one
    counting the rest)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: list[FieldViolation],
        *,
        message: str | None = None,
        reason: str = Reason.INVALID_FIELDS,
    ) -> None:
        if len(violations) > MAX_REPORTED_FAULTS:
            rest = len(violations) - MAX_REPORTED_FAULTS + 1
            violations = [
                *violations[: MAX_REPORTED_FAULTS - 1],
                FieldViolation(violations[-1].field, f"and {rest} more faults like the above"),
            ]
        if message is None:
            named = "; ".join(f"{v.field} {v.description}" for v in violations[:_FAULTS_IN_MESSAGE])
            more = len(violations) - _FAULTS_IN_MESSAGE
            message = f"invalid request: {named}" + (
                f" (and {more} more in the details)" if more > 0 else ""
            )
        super().__init__(message, reason)
        self.violations = violations


class Unauthenticated(ServiceError):
    """No acceptable token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """The caller's role may not do this, or it named someone else's profile."""

    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(ServiceError):
    """No profile the caller may see; `missing` names them when a batch asked for several
    (each in a google.rpc.ResourceInfo, up to MAX_REPORTED_FAULTS)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, message: str, reason: str, missing: list[str] | None = None) -> None:
        super().__init__(message, reason)
        self.missing = missing or []


class Unavailable(ServiceError):
    """Retrying may succeed: the database could not be reached, did not answer within the
    call's budget, or refused for now; or the server is shutting down. Nothing was written."""

    code = grpc.StatusCode.UNAVAILABLE


class AlreadyExists(ServiceError):
    """The profile is already what the call would make it (Undelete of an active profile)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(ServiceError):
    """A precondition failed: the profile does not have the etag the call requires (AIP-154).
    Nothing was written; read the profile again before retrying."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(ServiceError):
    """The server's bound on calls still waiting for their request was reached: the request
    did not arrive in time, or too many calls were waiting and this one waited longest."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfTime(ServiceError):
    """The call's deadline leaves no time for the database: retrying with it cannot help."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ServiceError):
    """A bug. The message says nothing more than that."""

    code = grpc.StatusCode.INTERNAL


# Each reason's class, and so its status.
REASON_CLASSES: dict[Reason, type[ServiceError]] = {
    Reason.TOKEN_MISSING: Unauthenticated,
    Reason.TOKEN_INVALID: Unauthenticated,
    Reason.TOKEN_EXPIRED: Unauthenticated,
    Reason.SIGNING_KEYS_UNAVAILABLE: Unauthenticated,
    Reason.ROLE_NOT_ALLOWED: PermissionDenied,
    Reason.NOT_OWN_PROFILE: PermissionDenied,
    Reason.ROW_LEVEL_SECURITY: PermissionDenied,
    Reason.INVALID_FIELDS: InvalidArgument,
    Reason.MALFORMED_REQUEST: InvalidArgument,
    Reason.PROFILE_NOT_FOUND: NotFound,
    Reason.PROFILE_ACTIVE: AlreadyExists,
    Reason.ETAG_MISMATCH: Aborted,
    Reason.DATABASE_UNREACHABLE: Unavailable,
    Reason.DATABASE_NOT_ANSWERING: Unavailable,
    Reason.DATABASE_TIMEOUT: Unavailable,
    Reason.DATABASE_POOL_EXHAUSTED: Unavailable,
    Reason.DATABASE_READ_ONLY: Unavailable,
    Reason.DATABASE_OUT_OF_RESOURCES: Unavailable,
    Reason.WRITE_OUTCOME_UNKNOWN: Unavailable,
    Reason.DATABASE_REFUSED: Unavailable,
    Reason.SHUTTING_DOWN: Unavailable,
    Reason.REQUEST_NOT_RECEIVED: ResourceExhausted,
    Reason.NO_TIME_LEFT: OutOfTime,
    Reason.DEADLINE_TOO_SHORT: OutOfTime,
    Reason.UNDECRYPTABLE_FIELD: Internal,
    Reason.INTERNAL: Internal,
}


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: ServiceError) -> NoReturn:
    """End the call with `error`'s status, message and details, keeping the trailing metadata
    set before (the request id)."""
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN)]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, NotFound):
        details += [
            error_details_pb2.ResourceInfo(
                resource_type="profile.v1.Profile", resource_name=owner, description="owner_id"
            )
            for owner in error.missing[:MAX_REPORTED_FAULTS]
        ]
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = rpc_status.to_status(
        status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)
    )
    # abort_with_status replaces the trailing metadata: keep what was set before.
    earlier = tuple(context.trailing_metadata() or ())
    await context.abort_with_status(
        status._replace(trailing_metadata=earlier + tuple(status.trailing_metadata))
    )
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


@functools.cache
def _class_for(code: grpc.StatusCode) -> type[ServiceError]:
    """The class that stands for `code` (found once per code: every class is defined above)."""
    return next((c for c in _subclasses(ServiceError) if c.code == code), ServiceError)


def from_rpc_error(error: grpc.RpcError) -> ServiceError:
    """The ServiceError a failed call stands for, read back from its status and details: the
    class for its status code, with the reason, the field violations and the missing owners."""
    call: Any = error  # a failed call is both a grpc.RpcError and a grpc.Call
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    status = rpc_status.from_call(call)
    return from_status(code, message, status.details if status is not None else ())


def from_status(
    code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any]
) -> ServiceError:
    """As from_rpc_error, from the parts of a google.rpc.Status."""
    reason, violations, missing = "", [], []
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        resource = error_details_pb2.ResourceInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad_request):
            violations += [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
        elif detail.Unpack(resource):
            missing.append(resource.resource_name)
    cls = _class_for(code)
    error: ServiceError
    if cls is InvalidArgument:
        error = InvalidArgument(violations, message=message, reason=reason)
    elif cls is NotFound:
        error = NotFound(message, reason, missing)
    else:
        error = cls(message, reason)
        error.code = code
    return error
