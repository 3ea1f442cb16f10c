"""What goes over the wire: the seeded owners, request bodies and the bare servers' answer.

The seeded rows, the bare servers' constant Profile and the Upsert body carry the same kind of
content (every field set, similar lengths), so the bare servers' answers cost gRPC about what
the real service's answers do.
"""

import hashlib
import struct
import uuid

from profile_service.auth import tokens
from profile_service.v1 import profile_service_pb2 as pb

SERVICE = "profile.v1.ProfileService"
GET_METHOD = f"/{SERVICE}/Get"
UPSERT_METHOD = f"/{SERVICE}/Upsert"
BATCH_GET_METHOD = f"/{SERVICE}/BatchGetProfiles"
# BatchGetProfiles cells, by the number of seeded owners each call asks for (service_role).
IDS_PER_CALL = {"batch100": 100, "batch1000": 1000}
METHODS = {"get": GET_METHOD, "upsert": UPSERT_METHOD} | dict.fromkeys(
    IDS_PER_CALL, BATCH_GET_METHOD
)

# The calls' deadline, as a careful caller sets one; the server budgets its database wait from it.
CALL_TIMEOUT_SECONDS = 5.0
GRPC_TIMEOUT_HEADER = "5S"

EQUIPMENT = ["barbell", "dumbbells", "kettlebell", "pull-up bar"]
GENERATION_PARAMS: dict[str, str | float] = {
    "split": "upper-lower",
    "days_per_week": 4,
    "intensity": "moderate",
}


def seeded_owner(n: int) -> str:
    """The owner_id of seeded profile number `n` (1-based), as bench/database.py's SQL makes it.

    md5('bench-<n>') read as a UUID: deterministic, canonical, the same in Python and SQL.
    """
    return str(uuid.UUID(hashlib.md5(f"bench-{n}".encode()).hexdigest()))  # noqa: S324


def new_user_tokens(secret: str, count: int) -> list[str]:
    """Tokens of `count` users never seen before (role authenticated, a fresh UUID `sub`)."""
    return [
        tokens.mint(secret, role="authenticated", sub=str(uuid.uuid4()), ttl_seconds=3600)
        for _ in range(count)
    ]


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: compression flag 0, 4-byte big-endian length, payload."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def constant_profile() -> pb.Profile:
    """The Profile the bare servers answer with: every field set (tests/unit/test_bench_report.py
    holds it to the proto), so that no answer is smaller than a real one."""
    profile = pb.Profile(
        id="6f1c2b9e-3d4a-4c5b-9e8f-0a1b2c3d4e5f",
        owner_id=seeded_owner(1),
        age=34,
        sex="female",
        height_cm=170,
        weight_kg=65,
        experience_level="intermediate",
        limitations="none",
        primary_goal="strength",
        available_equipment=EQUIPMENT,
        session_length="45m",
    )
    profile.generation_params.update(GENERATION_PARAMS)
    profile.created_at.FromNanoseconds(1_700_000_000_123_456_000)
    profile.updated_at.FromNanoseconds(1_700_000_100_123_456_000)
    profile.deleted_at.FromNanoseconds(1_700_000_200_123_456_000)
    profile.purge_time.FromNanoseconds(1_702_592_200_123_456_000)
    profile.etag = 'W/"1700000100123456"'
    return profile


def get_request() -> bytes:
    """A user's Get: owner_id empty, meaning the caller's own profile (the token's `sub`)."""
    return pb.GetRequest().SerializeToString()


def upsert_request() -> bytes:
    """A user's Upsert with every writable field set and no mask: a full replace (or create)."""
    profile = pb.Profile(
        age=29,
        sex="male",
        height_cm=181,
        weight_kg=78,
        experience_level="beginner",
        limitations="left knee: no deep squats",
        primary_goal="hypertrophy",
        available_equipment=EQUIPMENT,
        session_length="60m",
    )
    profile.generation_params.update(GENERATION_PARAMS)
    return pb.UpsertRequest(profile=profile).SerializeToString()


def batch_get_request(ids: int) -> bytes:
    """service_role's BatchGetProfiles of the first `ids` seeded owners."""
    owners = [seeded_owner(n) for n in range(1, ids + 1)]
    return pb.BatchGetProfilesRequest(owner_ids=owners).SerializeToString()


REQUESTS = {"get": get_request, "upsert": upsert_request} | {
    rpc: (lambda ids=ids: batch_get_request(ids)) for rpc, ids in IDS_PER_CALL.items()
}
