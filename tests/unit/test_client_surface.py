"""ProfileClient has a method for every RPC of the proto (a new RPC fails here until added)."""

import re

from profile_service.client import ProfileClient
from profile_service.v1 import profile_service_pb2 as pb


def test_every_rpc_has_a_client_method() -> None:
    rpcs = [m.name for m in pb.DESCRIPTOR.services_by_name["ProfileService"].methods]
    snake = [re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in rpcs]
    missing = [name for name in snake if not callable(getattr(ProfileClient, name, None))]
    assert missing == []
    assert "batch_get_profiles" in snake
