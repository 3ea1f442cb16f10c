"""Both clients have a method for every RPC of the proto (a new RPC fails here until added),
with the same arguments."""

import inspect
import re

import pytest

from profile_service.client import AsyncProfileClient, ProfileClient
from profile_service.v1 import profile_service_pb2 as pb

_RPCS = [m.name for m in pb.DESCRIPTOR.services_by_name["ProfileService"].methods]


@pytest.mark.parametrize("rpc", _RPCS)
def test_every_rpc_has_a_method_in_both_clients(rpc: str) -> None:
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()
    threaded = getattr(ProfileClient, name, None)
    asynchronous = getattr(AsyncProfileClient, name, None)
    assert callable(threaded), f"ProfileClient.{name}"
    assert inspect.iscoroutinefunction(asynchronous), f"AsyncProfileClient.{name}"
    assert inspect.signature(threaded) == inspect.signature(asynchronous)


def test_the_rpcs_are_read_from_the_proto() -> None:
    assert {"Get", "BatchGetProfiles", "Purge"} <= set(_RPCS)
