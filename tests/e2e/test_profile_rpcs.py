"""Every RPC rule of the contract, against a real server and database."""

import threading
import uuid
from collections.abc import Callable

import grpc
import psycopg
from google.protobuf import field_mask_pb2, struct_pb2

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import Metadata, field_violations, rpc_error, service, user

NewUser = Callable[[], tuple[str, Metadata]]


def _full_profile() -> pb.Profile:
    params = struct_pb2.Struct()
    params.update({"split": "push-pull", "days": [1, 3, 5], "deload": {"every_weeks": 4}})
    return pb.Profile(
        age=34,
        sex="female",
        height_cm=170,
        weight_kg=64,
        experience_level="intermediate",
        limitations="left knee: no deep squats",
        primary_goal="strength",
        available_equipment=["barbell", "dumbbells"],
        session_length="60m",
        generation_params=params,
    )


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def _upsert(stub: pb_grpc.ProfileServiceStub, md: Metadata, profile: pb.Profile, *mask: str):
    request = pb.UpsertRequest(profile=profile)
    if mask:
        request.update_mask.CopyFrom(_mask(*mask))
    return stub.Upsert(request, metadata=md, timeout=5)


# Get


def test_user_gets_own_profile_with_empty_or_own_owner_id(stub, new_user: NewUser) -> None:
    sub, md = new_user()
    created = _upsert(stub, md, _full_profile())
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5) == created
    assert stub.Get(pb.GetRequest(owner_id=sub), metadata=md, timeout=5) == created
    assert created.owner_id == sub
    uuid.UUID(created.id)


def test_user_cannot_read_another_users_profile(stub, new_user: NewUser) -> None:
    alice, alice_md = new_user()
    _, bob_md = new_user()
    _upsert(stub, alice_md, _full_profile())
    error = rpc_error(lambda: stub.Get(pb.GetRequest(owner_id=alice), metadata=bob_md, timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_get_without_a_profile_is_not_found(stub, new_user: NewUser) -> None:
    _, md = new_user()
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_get_with_a_non_uuid_owner_id_is_invalid(stub, new_user: NewUser) -> None:
    _, md = new_user()
    error = rpc_error(lambda: stub.Get(pb.GetRequest(owner_id="bob"), metadata=md, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "owner_id" in field_violations(error)


def test_service_get_requires_an_owner_id(stub) -> None:
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=service(), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "owner_id" in field_violations(error)


def test_service_reads_any_profile_including_soft_deleted(stub, new_user: NewUser) -> None:
    sub, md = new_user()
    created = _upsert(stub, md, _full_profile())
    assert stub.Get(pb.GetRequest(owner_id=sub), metadata=service(), timeout=5) == created
    stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)
    seen = stub.Get(pb.GetRequest(owner_id=sub), metadata=service(), timeout=5)
    assert seen.HasField("deleted_at")
    assert seen.limitations == created.limitations


# Upsert


def test_upsert_creates_with_every_field(stub, new_user: NewUser) -> None:
    sub, md = new_user()
    created = _upsert(stub, md, _full_profile())
    expected = _full_profile()
    expected.id, expected.owner_id = created.id, sub
    expected.created_at.CopyFrom(created.created_at)
    expected.updated_at.CopyFrom(created.updated_at)
    expected.etag = created.etag
    assert created == expected
    assert created.created_at.seconds > 0
    assert len(created.etag) == 34 and created.etag[0] == created.etag[-1] == '"'
    assert not created.HasField("deleted_at")


def test_masked_upsert_changes_only_the_named_fields(stub, new_user: NewUser) -> None:
    _, md = new_user()
    before = _upsert(stub, md, _full_profile())
    after = _upsert(stub, md, pb.Profile(age=35, weight_kg=70, sex="other"), "age", "weight_kg")
    assert (after.age, after.weight_kg) == (35, 70)
    assert after.sex == before.sex  # set in the message, but not in the mask
    for field in ("height_cm", "limitations", "available_equipment", "generation_params"):
        assert getattr(after, field) == getattr(before, field)
    assert after.created_at == before.created_at
    assert after.updated_at.ToDatetime() > before.updated_at.ToDatetime()


def test_masked_upsert_can_clear_a_field(stub, new_user: NewUser) -> None:
    _, md = new_user()
    _upsert(stub, md, _full_profile())
    after = _upsert(stub, md, pb.Profile(), "limitations", "available_equipment")
    assert not after.HasField("limitations")
    assert list(after.available_equipment) == []
    assert after.age == 34


def test_masked_upsert_creates_with_other_fields_null(stub, new_user: NewUser) -> None:
    _, md = new_user()
    created = _upsert(stub, md, _full_profile(), "age")
    assert created.age == 34
    assert not created.HasField("sex")
    assert not created.HasField("generation_params")


def test_upsert_without_mask_writes_only_what_the_request_populates(
    stub, new_user: NewUser
) -> None:
    """Contract v1.1 (AIP-134's implied mask): a partial message never wipes the rest."""
    _, md = new_user()
    full = _upsert(stub, md, _full_profile())
    after = _upsert(stub, md, pb.Profile(age=40, available_equipment=["rings"]))
    assert (after.age, list(after.available_equipment)) == (40, ["rings"])
    for field in ("sex", "height_cm", "weight_kg", "limitations", "generation_params"):
        assert getattr(after, field) == getattr(full, field), field
    # An empty mask is the same as none.
    request = pb.UpsertRequest(profile=pb.Profile(sex="f"), update_mask=_mask())
    again = stub.Upsert(request, metadata=md, timeout=5)
    assert (again.sex, again.age, again.limitations) == ("f", 40, full.limitations)


def test_upsert_with_the_star_mask_replaces_every_field(stub, new_user: NewUser) -> None:
    _, md = new_user()
    _upsert(stub, md, _full_profile())
    after = _upsert(stub, md, pb.Profile(age=40), "*")
    assert after.age == 40
    for field in ("sex", "height_cm", "weight_kg", "limitations", "generation_params"):
        assert not after.HasField(field), field
    assert list(after.available_equipment) == []
    error = rpc_error(lambda: _upsert(stub, md, pb.Profile(age=41), "*", "age"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'*' must be the only path" in field_violations(error)["update_mask"]


def test_upsert_ignores_output_only_fields_in_the_profile(stub, new_user: NewUser) -> None:
    _, md = new_user()
    created = _upsert(stub, md, _full_profile())
    echoed = pb.Profile()
    echoed.CopyFrom(created)
    echoed.id = str(uuid.uuid4())
    echoed.deleted_at.GetCurrentTime()
    again = _upsert(stub, md, echoed)
    assert again.id == created.id
    assert not again.HasField("deleted_at")


def test_upsert_rejects_output_only_and_unknown_mask_paths(stub, new_user: NewUser) -> None:
    _, md = new_user()
    for path in ("id", "created_at", "updated_at", "deleted_at", "owner_id", "shoe_size", "age.x"):
        error = rpc_error(lambda p=path: _upsert(stub, md, pb.Profile(age=30), "age", p))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, path
        assert path in field_violations(error)["update_mask"]
    assert rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5)).code() == (
        grpc.StatusCode.NOT_FOUND
    )


def test_user_cannot_upsert_someone_elses_profile(stub, new_user: NewUser) -> None:
    alice, _ = new_user()
    _, bob_md = new_user()
    error = rpc_error(lambda: _upsert(stub, bob_md, pb.Profile(owner_id=alice, age=30)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_service_role_cannot_upsert(stub) -> None:
    profile = pb.Profile(owner_id=str(uuid.uuid4()), age=30)
    error = rpc_error(lambda: _upsert(stub, service(), profile))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_concurrent_first_upserts_of_one_owner_make_one_row(
    stub, new_user: NewUser, admin: psycopg.Connection
) -> None:
    sub, md = new_user()
    barrier = threading.Barrier(20)
    codes: list[grpc.StatusCode] = []

    def first_upsert(age: int) -> None:
        barrier.wait()
        try:
            _upsert(stub, md, pb.Profile(age=age))
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())

    threads = [threading.Thread(target=first_upsert, args=(20 + i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [grpc.StatusCode.OK] * 20
    rows = admin.execute(
        "SELECT count(*), min(age) >= 20 FROM profile.profiles WHERE owner_id = %s", (sub,)
    ).fetchone()
    assert rows == (1, True)


# SoftDelete


def test_soft_delete_hides_the_profile_from_its_owner(stub, new_user: NewUser) -> None:
    _, md = new_user()
    created = _upsert(stub, md, _full_profile())
    deleted = stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)
    assert deleted.id == created.id
    assert deleted.HasField("deleted_at")
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_soft_delete_twice_or_without_profile_is_not_found(stub, new_user: NewUser) -> None:
    _, md = new_user()
    error = rpc_error(lambda: stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    _upsert(stub, md, _full_profile())
    stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)
    error = rpc_error(lambda: stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_user_cannot_soft_delete_someone_elses_profile(
    stub, new_user: NewUser, admin: psycopg.Connection
) -> None:
    alice, alice_md = new_user()
    _, bob_md = new_user()
    _upsert(stub, alice_md, _full_profile())
    request = pb.SoftDeleteRequest(owner_id=alice)
    error = rpc_error(lambda: stub.SoftDelete(request, metadata=bob_md, timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    row = admin.execute(
        "SELECT deleted_at FROM profile.profiles WHERE owner_id = %s", (alice,)
    ).fetchone()
    assert row == (None,)


def test_service_role_cannot_soft_delete(stub, new_user: NewUser) -> None:
    sub, md = new_user()
    _upsert(stub, md, _full_profile())
    request = pb.SoftDeleteRequest(owner_id=sub)
    error = rpc_error(lambda: stub.SoftDelete(request, metadata=service(), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_upsert_after_soft_delete_starts_afresh(
    stub, new_user: NewUser, admin: psycopg.Connection
) -> None:
    sub, md = new_user()
    _upsert(stub, md, _full_profile())
    admin.execute(
        "UPDATE profile.profiles SET created_at = created_at - interval '1 day' "
        "WHERE owner_id = %s",
        (sub,),
    )
    old = stub.Get(pb.GetRequest(), metadata=md, timeout=5)
    stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)

    fresh = _upsert(stub, md, pb.Profile(age=50, weight_kg=80), "age")
    assert fresh.age == 50
    assert not fresh.HasField("deleted_at")
    assert fresh.created_at.ToDatetime() > old.created_at.ToDatetime()
    for field in ("sex", "weight_kg", "limitations", "primary_goal", "generation_params"):
        assert not fresh.HasField(field), field
    assert list(fresh.available_equipment) == []
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5) == fresh
    count = admin.execute(
        "SELECT count(*) FROM profile.profiles WHERE owner_id = %s", (sub,)
    ).fetchone()
    assert count == (1,)


def test_a_users_profile_is_keyed_by_the_token_sub(stub) -> None:
    sub = str(uuid.uuid4())
    created = _upsert(stub, user(sub), pb.Profile(age=30))
    assert created.owner_id == sub
    assert _upsert(stub, user(sub.upper()), pb.Profile(age=31)).id == created.id


def test_purge_time_is_set_exactly_while_the_profile_is_soft_deleted(
    stub, new_user: NewUser
) -> None:
    """AIP-164: deleted_at plus PURGE_MIN_RETENTION_DAYS (30 for the test server)."""
    sub, md = new_user()
    active = _upsert(stub, md, pb.Profile(age=30))
    assert not active.HasField("purge_time")
    deleted = stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)
    assert deleted.purge_time.seconds == deleted.deleted_at.seconds + 30 * 86400
    assert deleted.purge_time.nanos == deleted.deleted_at.nanos
    seen = stub.Get(pb.GetRequest(owner_id=sub), metadata=service(), timeout=5)
    assert seen.purge_time == deleted.purge_time
    restarted = _upsert(stub, md, pb.Profile(age=31))  # a fresh start: active again
    assert not restarted.HasField("purge_time")
