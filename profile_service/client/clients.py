"""The clients of profile.v1.ProfileService: ProfileClient for threaded code, a method per
RPC, and AsyncProfileClient for asyncio code (grpc.aio), a coroutine per RPC, with the same
arguments (decision 14). Side by side in one module, so that a new RPC's two methods are
written, and read, together.

Both share the service config, TLS options and errors (channel.py); AsyncProfileClient's token
provider may also be a coroutine function (an async session refresh).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from profile_service.client.channel import (
    TLS,
    Token,
    authorization,
    open_channel,
    service_error,
    upsert_request,
)
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc

_Response = TypeVar("_Response")
# The caller's JWT, or a function (plain or async) returning it, called before every call.
AsyncToken = str | Callable[[], str | Awaitable[str]]


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
        self._channel: grpc.Channel = open_channel(
            grpc.insecure_channel, grpc.secure_channel, target, tls, options
        )
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
        return self._call(self._stub.Upsert, upsert_request(profile, update_mask), timeout)

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
        return list(self._call(self._stub.BatchGetProfiles, request, timeout).profiles)

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
        try:
            return method(
                request,
                timeout=timeout if timeout is not None else self._timeout,
                metadata=authorization(self._token),
            )
        except grpc.RpcError as exc:
            call: Any = exc  # a failed call is also a grpc.Call
            raise service_error(exc, call.trailing_metadata()) from exc


class AsyncProfileClient:
    """profile.v1.ProfileService over one grpc.aio channel; make and use it on one event loop,
    and close it (or use `async with`). Arguments as ProfileClient's."""

    def __init__(
        self,
        target: str,
        *,
        token: AsyncToken,
        tls: TLS | None = None,
        timeout: float | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._token = token
        self._timeout = timeout
        self._channel: grpc.aio.Channel = open_channel(
            grpc.aio.insecure_channel, grpc.aio.secure_channel, target, tls, options
        )
        self._stub = pb_grpc.ProfileServiceStub(self._channel)

    async def get(self, owner_id: str = "", *, timeout: float | None = None) -> pb.Profile:
        """As ProfileClient.get."""
        return await self._call(self._stub.Get, pb.GetRequest(owner_id=owner_id), timeout)

    async def upsert(
        self,
        profile: pb.Profile,
        update_mask: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> pb.Profile:
        """As ProfileClient.upsert."""
        return await self._call(self._stub.Upsert, upsert_request(profile, update_mask), timeout)

    async def soft_delete(
        self, owner_id: str = "", *, etag: str = "", timeout: float | None = None
    ) -> pb.Profile:
        """As ProfileClient.soft_delete."""
        request = pb.SoftDeleteRequest(owner_id=owner_id, etag=etag)
        return await self._call(self._stub.SoftDelete, request, timeout)

    async def undelete(
        self, owner_id: str = "", *, etag: str = "", timeout: float | None = None
    ) -> pb.Profile:
        """As ProfileClient.undelete."""
        request = pb.UndeleteRequest(owner_id=owner_id, etag=etag)
        return await self._call(self._stub.Undelete, request, timeout)

    async def batch_get_profiles(
        self, owner_ids: Sequence[str], *, timeout: float | None = None
    ) -> list[pb.Profile]:
        """As ProfileClient.batch_get_profiles."""
        request = pb.BatchGetProfilesRequest(owner_ids=list(owner_ids))
        return list((await self._call(self._stub.BatchGetProfiles, request, timeout)).profiles)

    async def purge(
        self,
        retention_days: int = 0,
        *,
        dry_run: bool = False,
        batch_size: int = 0,
        timeout: float | None = None,
    ) -> int:
        """As ProfileClient.purge."""
        request = pb.PurgeRequest(
            retention_days=retention_days, dry_run=dry_run, batch_size=batch_size
        )
        return (await self._call(self._stub.Purge, request, timeout)).purge_count

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncProfileClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self, method: Callable[..., Awaitable[_Response]], request: Any, timeout: float | None
    ) -> _Response:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        try:
            return await method(
                request,
                timeout=timeout if timeout is not None else self._timeout,
                metadata=(("authorization", f"Bearer {token}"),),
            )
        except grpc.aio.AioRpcError as exc:
            raise service_error(exc, exc.trailing_metadata()) from exc
