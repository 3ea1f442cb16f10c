"""The shipped service config covers every RPC, retries UNAVAILABLE alone, and bounds calls."""

import json

import pytest

from profile_service.client import SERVICE_CONFIG
from profile_service.transport.server import MAX_STREAMS_PER_CONNECTION
from profile_service.v1 import profile_service_pb2 as pb

_SERVICE = pb.DESCRIPTOR.services_by_name["ProfileService"]


def _method_config(method: str) -> dict[str, object]:
    """The entry gRPC applies to `method`: an exact method name wins over the service's."""
    config = json.loads(SERVICE_CONFIG)
    by_name = {
        (name["service"], name.get("method", "")): entry
        for entry in config["methodConfig"]
        for name in entry["name"]
    }
    found = by_name.get((_SERVICE.full_name, method)) or by_name.get((_SERVICE.full_name, ""))
    assert found is not None, f"no methodConfig applies to {method}"
    return found


@pytest.mark.parametrize("method", [m.name for m in _SERVICE.methods])
def test_every_rpc_has_a_deadline_and_retries_unavailable_only(method: str) -> None:
    entry = _method_config(method)
    assert str(entry["timeout"]).endswith("s")
    policy = entry["retryPolicy"]
    assert isinstance(policy, dict)
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    # gRPC caps attempts at 5; more would be silently cut.
    assert 2 <= policy["maxAttempts"] <= 5


def test_retries_are_throttled_per_channel_but_never_by_one_pod_s_drain() -> None:
    """gRPC stops retrying once a channel's tokens fall to half of maxTokens, one token per
    failed attempt: a draining pod refuses each call in flight on its connection once, at most
    MAX_STREAMS_PER_CONNECTION, and those retries must all still go (decision 15)."""
    throttling = json.loads(SERVICE_CONFIG)["retryThrottling"]
    assert throttling["maxTokens"] / 2 > MAX_STREAMS_PER_CONNECTION
    assert 0 < throttling["tokenRatio"] <= 0.1  # an outage does not multiply the load for long
