"""The field table (fields.py) is the proto's Profile, field for field and kind for kind."""

from google.protobuf.descriptor import FieldDescriptor

from profile_service.domain.fields import FIELDS, Kind
from profile_service.v1 import profile_service_pb2 as pb


def _kind(field: FieldDescriptor) -> Kind:
    if field.message_type is not None:
        return {"google.protobuf.Struct": "json", "google.protobuf.Timestamp": "timestamp"}[
            field.message_type.full_name
        ]  # type: ignore[return-value]
    if field.is_repeated:
        return "text_list"
    if field.type == FieldDescriptor.TYPE_INT32:
        return "int"
    if field.name == "etag":
        return "etag"
    return "uuid" if field.name in ("id", "owner_id") else "text"


def test_the_table_lists_every_profile_field_with_its_kind() -> None:
    proto = {f.name: _kind(f) for f in pb.Profile.DESCRIPTOR.fields}
    assert {f.name: f.kind for f in FIELDS} == proto


def test_every_writable_field_has_a_limit() -> None:
    for f in FIELDS:
        if f.writable:
            assert f.high or f.max_chars or f.max_bytes, f.name
            if f.kind == "text_list":
                assert f.max_items, f.name
