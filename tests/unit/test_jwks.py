"""Which keys of a JWKS document are used, without fetching one."""

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from profile_service.auth.jwks import parse_key_set


def _public_jwk(key: Any, **extra: Any) -> dict[str, Any]:
    algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    jwk: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key()))
    return {**jwk, **extra}


EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _parse(*keys: Any) -> dict[str, str]:
    """kid → algorithm of the usable keys."""
    found = parse_key_set(json.dumps({"keys": list(keys)}).encode())
    return {kid: key.algorithm_name for kid, key in found.items()}


def test_the_algorithm_comes_from_the_key_type_when_alg_is_absent() -> None:
    assert _parse(_public_jwk(EC_KEY, kid="ec"), _public_jwk(RSA_KEY, kid="rsa")) == {
        "ec": "ES256",
        "rsa": "RS256",
    }


def test_the_algorithm_comes_from_the_key_s_alg() -> None:
    assert _parse(_public_jwk(RSA_KEY, kid="rsa", alg="RS512")) == {"rsa": "RS512"}


@pytest.mark.parametrize(
    "unusable",
    [
        {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "hmac"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        _public_jwk(RSA_KEY, kid="as-hmac", alg="HS256"),
        _public_jwk(RSA_KEY, kid="none", alg="none"),
        _public_jwk(EC_KEY, kid="ec-as-rsa", alg="RS256"),
        _public_jwk(RSA_KEY),  # no kid: no token could name it
        _public_jwk(RSA_KEY, kid=""),
        _public_jwk(RSA_KEY, kid="enc", use="enc"),
        {**_public_jwk(EC_KEY, kid="private"), "d": "AAAA"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not a key",
    ],
    ids=[
        "oct",
        "oct-hs256",
        "rsa-labelled-hs256",
        "alg-none",
        "ec-labelled-rs256",
        "no-kid",
        "empty-kid",
        "encryption-key",
        "private-key",
        "broken",
        "not-an-object",
    ],
)
def test_only_public_asymmetric_signing_keys_with_a_kid_are_used(unusable: Any) -> None:
    assert _parse(unusable, _public_jwk(EC_KEY, kid="good")) == {"good": "ES256"}


@pytest.mark.parametrize(
    "document",
    [b"not json", b"[]", b'{"keys": {}}', json.dumps({"keys": [{"kty": "oct", "k": "eA"}]})],
)
def test_a_document_without_a_usable_key_is_an_error(document: bytes | str) -> None:
    with pytest.raises(ValueError):
        parse_key_set(document.encode() if isinstance(document, str) else document)
