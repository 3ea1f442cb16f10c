"""The largest request gRPC accepts is sized to the largest valid one (validation.py), and a
bigger one is refused before any handler runs, compressed or not (issue "Edges", item 1)."""

import json
import uuid

import grpc
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from profile_service.domain.validation import (
    EQUIPMENT_ITEM_MAX_CHARS,
    EQUIPMENT_MAX_ITEMS,
    GENERATION_PARAMS_MAX_BYTES,
    MAX_REQUEST_BYTES,
    TEXT_LIMITS,
    WRITABLE_FIELDS,
)
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import rpc_error, user

WIDE = "\U0001f3cb"  # 4 bytes in UTF-8: the most bytes a character of the limits can take
UPSERT = "/profile.v1.ProfileService/Upsert"


def _largest_valid_upsert() -> pb.UpsertRequest:
    # A list of zeros is generation_params' worst protobuf encoding: 11 bytes for the 4 of
    # JSON ("0.0,": Struct numbers are doubles).
    zeros = (GENERATION_PARAMS_MAX_BYTES - len('{"k":[]}') + 1) // 4
    params = {"k": [0.0] * zeros}
    assert len(json.dumps(params, separators=(",", ":"))) <= GENERATION_PARAMS_MAX_BYTES
    struct = struct_pb2.Struct()
    struct.update(params)
    latest = timestamp_pb2.Timestamp(seconds=253402300799, nanos=999999999)
    profile = pb.Profile(
        id=str(uuid.uuid4()),  # output-only fields are ignored, not refused
        owner_id="",
        age=120,
        height_cm=272,
        weight_kg=650,
        available_equipment=[WIDE * EQUIPMENT_ITEM_MAX_CHARS] * EQUIPMENT_MAX_ITEMS,
        generation_params=struct,
        created_at=latest,
        updated_at=latest,
        deleted_at=latest,
        **{name: WIDE * limit for name, limit in TEXT_LIMITS.items()},
    )
    mask = field_mask_pb2.FieldMask(paths=list(WRITABLE_FIELDS))
    return pb.UpsertRequest(profile=profile, update_mask=mask)


def test_the_limit_fits_the_largest_valid_request_closely() -> None:
    size = _largest_valid_upsert().ByteSize()
    assert size <= MAX_REQUEST_BYTES < 1.25 * size


def test_the_largest_valid_request_is_accepted(stub: pb_grpc.ProfileServiceStub) -> None:
    sub = uuid.uuid4()
    saved = stub.Upsert(_largest_valid_upsert(), metadata=user(sub), timeout=10)
    assert saved.limitations == WIDE * TEXT_LIMITS["limitations"]
    assert len(saved.generation_params["k"]) == 4094


def _raw_upsert(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(UPSERT, request_serializer=lambda b: b)


def test_a_bigger_request_is_refused_before_the_token_is_checked(channel: grpc.Channel) -> None:
    body = pb.UpsertRequest(profile=pb.Profile(limitations="x" * MAX_REQUEST_BYTES))
    error = rpc_error(lambda: _raw_upsert(channel)(body.SerializeToString(), timeout=5))
    # No token at all: gRPC refused it on size, not our auth on the token.
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_small_compressed_body_that_expands_past_the_limit_is_refused(
    channel: grpc.Channel,
) -> None:
    body = pb.UpsertRequest(profile=pb.Profile(limitations="x" * 4_000_000)).SerializeToString()
    error = rpc_error(
        lambda: _raw_upsert(channel)(body, timeout=5, compression=grpc.Compression.Gzip)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
