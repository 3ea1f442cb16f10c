"""AsyncProfileClient: profile.v1.ProfileService for asyncio code (grpc.aio), a coroutine per RPC.

The same service config, TLS options and errors as ProfileClient; the token provider may also
be a coroutine function (an async session refresh).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from profile_service.client.channel import TLS, open_channel, service_error, upsert_request
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc

_Response = TypeVar("_Response")
# The caller's JWT, or a function (plain or async) returning it, called before every call.
AsyncToken = str | Callable[[], str | Awaitable[str]]


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
