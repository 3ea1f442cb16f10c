"""Bad input: INVALID_ARGUMENT naming the field, never INTERNAL, and the table unchanged."""

import uuid

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from profile_service.v1 import profile_service_pb2 as pb
from tests.e2e.conftest import field_violations, rpc_error, user


def _params(value: object) -> struct_pb2.Struct:
    params = struct_pb2.Struct()
    params.update({"payload": value})
    return params


BAD_PROFILES: dict[str, tuple[pb.Profile, str]] = {
    "negative age": (pb.Profile(age=-1), "profile.age"),
    "zero age": (pb.Profile(age=0), "profile.age"),
    "absurd age": (pb.Profile(age=500), "profile.age"),
    "zero height": (pb.Profile(height_cm=0), "profile.height_cm"),
    "absurd height": (pb.Profile(height_cm=1000), "profile.height_cm"),
    "negative weight": (pb.Profile(weight_kg=-70), "profile.weight_kg"),
    "absurd weight": (pb.Profile(weight_kg=5000), "profile.weight_kg"),
    "over-long limitations": (pb.Profile(limitations="x" * 2001), "profile.limitations"),
    "over-long sex": (pb.Profile(sex="x" * 33), "profile.sex"),
    "NUL in text": (pb.Profile(primary_goal="get\x00strong"), "profile.primary_goal"),
    "over-long experience_level": (
        pb.Profile(experience_level="x" * 65),
        "profile.experience_level",
    ),
    "over-long primary_goal": (pb.Profile(primary_goal="x" * 201), "profile.primary_goal"),
    "over-long session_length": (pb.Profile(session_length="x" * 33), "profile.session_length"),
    "over-long equipment item": (
        pb.Profile(available_equipment=["ok", "x" * 101]),
        "profile.available_equipment[1]",
    ),
    "NUL in equipment": (
        pb.Profile(available_equipment=["bench", "bar\x00bell"]),
        "profile.available_equipment[1]",
    ),
    # U+FDD0..U+FDEF mark the service's own stored values (a sealed limitations starts with
    # one), so no caller may write them.
    "a noncharacter that reads as sealed": (
        pb.Profile(limitations="\ufdd0v1:k:AAAA"),
        "profile.limitations",
    ),
    "a noncharacter in equipment": (
        pb.Profile(available_equipment=["bar\ufdefbell"]),
        "profile.available_equipment[0]",
    ),
    "empty equipment item": (
        pb.Profile(available_equipment=[""]),
        "profile.available_equipment[0]",
    ),
    "too many equipment items": (
        pb.Profile(available_equipment=[f"item {i}" for i in range(51)]),
        "profile.available_equipment",
    ),
    "NUL in a generation_params string": (
        pb.Profile(generation_params=_params({"note": "a\x00b"})),
        "profile.generation_params.payload.note",
    ),
    "NUL in a generation_params key": (
        pb.Profile(generation_params=_params({"k\x00": 1})),
        # Echoed escaped: a control character in a field path helps no one.
        "profile.generation_params.payload.k\\x00",
    ),
    "infinity in generation_params": (
        pb.Profile(generation_params=_params(float("inf"))),
        "profile.generation_params.payload",
    ),
    "NaN deep in generation_params": (
        pb.Profile(generation_params=_params([1, {"x": float("nan")}])),
        "profile.generation_params.payload[1].x",
    ),
    "oversized generation_params": (
        pb.Profile(generation_params=_params("x" * 17_000)),
        "profile.generation_params",
    ),
    "non-UUID owner_id": (pb.Profile(owner_id="not-a-uuid", age=30), "profile.owner_id"),
}


@pytest.fixture
def owner_with_profile(stub) -> tuple[str, pb.Profile]:
    sub = str(uuid.uuid4())
    profile = stub.Upsert(
        pb.UpsertRequest(profile=pb.Profile(age=30, limitations="none")),
        metadata=user(sub),
        timeout=5,
    )
    return sub, profile


@pytest.mark.parametrize(("profile", "field"), BAD_PROFILES.values(), ids=BAD_PROFILES)
def test_bad_field_is_invalid_argument_and_nothing_changes(
    stub,
    admin: psycopg.Connection,
    owner_with_profile: tuple[str, pb.Profile],
    profile: pb.Profile,
    field: str,
) -> None:
    sub, before = owner_with_profile
    request = pb.UpsertRequest(profile=profile)
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(sub), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error), field_violations(error)
    assert stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5) == before
    assert admin.execute("SELECT count(*) FROM profile.profiles").fetchone() == (1,)


def test_every_bad_field_is_reported_at_once(stub) -> None:
    request = pb.UpsertRequest(profile=pb.Profile(age=0, height_cm=0, sex="\x00"))
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
    assert set(field_violations(error)) == {"profile.age", "profile.height_cm", "profile.sex"}
    assert "profile.age" in (error.details() or "")


def test_a_non_finite_number_is_reported_with_the_other_faults(stub) -> None:
    profile = pb.Profile(age=0, generation_params=_params(float("nan")))
    request = pb.UpsertRequest(profile=profile)
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
    assert set(field_violations(error)) == {"profile.age", "profile.generation_params.payload"}


def test_a_field_outside_the_update_mask_is_not_judged(
    stub, owner_with_profile: tuple[str, pb.Profile]
) -> None:
    sub, before = owner_with_profile
    request = pb.UpsertRequest(
        profile=pb.Profile(age=31, generation_params=_params(float("nan"))),
        update_mask=field_mask_pb2.FieldMask(paths=["age"]),
    )
    saved = stub.Upsert(request, metadata=user(sub), timeout=5)
    assert (saved.age, saved.limitations) == (31, before.limitations)
    assert not saved.HasField("generation_params")


def test_limits_are_inclusive(stub) -> None:
    md = user(uuid.uuid4())
    profile = pb.Profile(
        age=120,
        height_cm=272,
        weight_kg=20,
        limitations="x" * 2000,
        available_equipment=["y" * 100] * 50,
        generation_params=_params("z" * 15_000),
    )
    saved = stub.Upsert(pb.UpsertRequest(profile=profile), metadata=md, timeout=5)
    assert (saved.age, saved.height_cm, saved.weight_kg) == (120, 272, 20)
    assert len(saved.available_equipment) == 50


def test_soft_delete_names_a_bad_owner_id(stub) -> None:
    request = pb.SoftDeleteRequest(owner_id="not-a-uuid")
    error = rpc_error(lambda: stub.SoftDelete(request, metadata=user(uuid.uuid4()), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "owner_id" in field_violations(error)


def test_a_struct_value_with_nothing_set_is_stored_as_null(stub, admin: psycopg.Connection) -> None:
    params = struct_pb2.Struct()
    params.fields["empty"].SetInParent()  # legal on the wire: a Value whose kind is unset
    params.fields["list"].list_value.values.add()
    params.fields["list"].list_value.values.add().number_value = 2
    sub = uuid.uuid4()
    saved = stub.Upsert(
        pb.UpsertRequest(profile=pb.Profile(age=30, generation_params=params)),
        metadata=user(sub),
        timeout=5,
    )
    assert saved.generation_params.fields["empty"].WhichOneof("kind") == "null_value"
    row = admin.execute(
        "SELECT generation_params FROM profile.profiles WHERE owner_id = %s", (sub,)
    ).fetchone()
    assert row == ({"empty": None, "list": [None, 2]},)


def test_echoed_input_is_cut_so_the_error_still_fits_in_the_trailers(stub) -> None:
    # gRPC refuses trailers over 16 KiB: a 10,000-character path echoed whole turned the
    # answer into RESOURCE_EXHAUSTED.
    long_path = "p" * 10_000
    request = pb.UpsertRequest(
        profile=pb.Profile(generation_params=_params({long_path: "nul\x00"})),
        update_mask=field_mask_pb2.FieldMask(paths=[long_path, "generation_params"]),
    )
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    faults = field_violations(error)
    assert faults["update_mask"].startswith("'" + "p" * 64 + "…'")
    assert all(len(field) < 200 and len(text) < 200 for field, text in faults.items())


def test_every_fault_in_generation_params_is_reported_up_to_a_bound(stub) -> None:
    params = {"a": "x\x00", "b": float("nan"), "c": {"d": "y\x00"}}
    request = pb.UpsertRequest(profile=pb.Profile(generation_params=_params(params)))
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
    prefix = "profile.generation_params.payload"
    assert set(field_violations(error)) == {f"{prefix}.a", f"{prefix}.b", f"{prefix}.c.d"}
    # A thousand faults: twenty listed, the last one counting the rest.
    many = pb.UpsertRequest(
        profile=pb.Profile(generation_params=_params({"n": [float("nan")] * 1000}))
    )
    error = rpc_error(lambda: stub.Upsert(many, metadata=user(uuid.uuid4()), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    faults = field_violations(error)
    assert len(faults) == 20
    assert "and 981 more faults" in faults[f"{prefix}.n[999]"]
