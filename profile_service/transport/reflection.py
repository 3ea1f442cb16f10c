"""Server reflection that also carries the proto comments, so `grpcurl describe` shows them.

The stock servicer builds descriptors with CopyToProto, which drops source info (the comments).
Rather than re-implement reflection, this wraps the stock servicer and swaps our file's
descriptor for the copy with source info that `make proto` writes into profile_service/v1.
"""

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from importlib.resources import files
from typing import Any

import grpc.aio
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from profile_service.transport.unary_interceptor import Registry

DESCRIPTOR_SET = "profile_service.binpb"


def _descriptors_with_comments() -> dict[str, bytes]:
    resource = files("profile_service.v1").joinpath(DESCRIPTOR_SET)
    if not resource.is_file():  # built without it: reflection still works, without comments
        return {}
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(resource.read_bytes())
    return {f.name: f.SerializeToString() for f in descriptor_set.file}


class _CommentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: Iterable[str]) -> None:
        super().__init__(tuple(service_names))
        self._commented = _descriptors_with_comments()

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                protos = response.file_descriptor_response.file_descriptor_proto
                for i, raw in enumerate(protos):
                    name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                    protos[i] = self._commented.get(name, raw)
            yield response


def enable(server: Registry, service_names: Iterable[str]) -> None:
    """Serve reflection for `service_names` (and for reflection itself) on `server`."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        _CommentedReflectionServicer(names), server
    )
