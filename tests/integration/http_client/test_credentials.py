"""Credentials the server checks: a bearer token read from a file (a rotated file is used
from the next request on), and JWTs the worker signs, re-signed before expiry and after a
key rotation; an unusable file fails when the client is built (``clients.auth``)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clients.auth import SignedJwtAuth
from clients.http import build_http_client
from domain.errors import TransientError
from tests.integration.http_client.recording_user_service import (
    Authorizer,
    lookup_for,
    settings,
    user_service,
)

AUDIENCE = "user-service"


def test_the_bearer_token_comes_from_a_file_and_a_rotated_file_is_picked_up(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    valid = {"Bearer token-one"}
    with user_service(server_tls, authorize=lambda header: header in valid) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file, bearer_token_file=token_file))
        assert lookup.profile("user-1") is not None

        # Rotation: the service accepts only the new token, the file is replaced.
        valid.clear()
        valid.add("Bearer token-two-rotated")
        token_file.write_text("token-two-rotated\n")
        stat = token_file.stat()
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        lookup.forget("user-1")
        assert lookup.profile("user-1") is not None
    assert seen.authorizations == ["Bearer token-one", "Bearer token-two-rotated"]


def test_a_refused_token_is_a_transient_error(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("revoked")
    with user_service(server_tls, authorize=lambda _: False) as (url, _seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file, bearer_token_file=token_file))
        with pytest.raises(TransientError, match="http_401"):
            lookup.profile("user-1")


def test_a_missing_token_file_is_refused_when_the_client_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bearer_token_file"):
        build_http_client(settings("https://127.0.0.1:1", bearer_token_file=tmp_path / "none"))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def verifier(key: rsa.RSAPrivateKey, audience: str) -> Authorizer:
    """The server side: a valid RS256 JWT from the worker, for this audience."""

    def authorize(header: str | None) -> bool:
        if header is None or not header.startswith("Bearer "):
            return False
        try:
            jwt.decode(
                header.removeprefix("Bearer "),
                key.public_key(),
                algorithms=["RS256"],
                audience=audience,
                issuer="payment-worker",
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return False
        return True

    return authorize


def test_a_jwt_signed_by_the_worker_verifies_at_the_server(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(pem(rsa_key))
    with user_service(server_tls, authorize=verifier(rsa_key, AUDIENCE)) as (url, seen):
        service = settings(
            url, ca_bundle=ca_file, jwt_signing_key_file=key_file, jwt_audience=AUDIENCE
        )
        assert lookup_for(service).profile("user-1") is not None

        elsewhere = service.model_copy(update={"jwt_audience": "another-service"})
        with pytest.raises(TransientError, match="http_401"):
            lookup_for(elsewhere).profile("user-1")
    token = seen.authorizations[0]
    assert token is not None
    claims = jwt.decode(token.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == service.jwt_ttl_seconds


def issued_at(token: str, key: rsa.RSAPrivateKey) -> int:
    """``iat`` of a token signed by ``key`` (verified), whatever the real time is."""
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["RS256"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    return int(claims["iat"])


def test_the_jwt_is_reused_then_re_signed_before_expiry_and_after_key_rotation(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(pem(rsa_key))
    now = [1_800_000_000.0]
    auth = SignedJwtAuth(
        key_file,
        algorithm="RS256",
        audience=AUDIENCE,
        issuer="payment-worker",
        ttl_seconds=300,
        clock=lambda: now[0],
    )
    first = auth.token()
    now[0] += 200
    assert auth.token() == first
    now[0] += 50  # within a minute of expiry
    second = auth.token()
    assert issued_at(second, rsa_key) == issued_at(first, rsa_key) + 250

    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(pem(new_key))
    stat = key_file.stat()
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    rotated = auth.token()
    assert rotated != second
    assert issued_at(rotated, new_key) == issued_at(second, rsa_key)


@pytest.mark.parametrize("algorithm", ["ES256", "HS256"])
def test_the_other_algorithms_sign_too(tmp_path: Path, algorithm: str) -> None:
    key_file = tmp_path / "signing.key"
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        key_file.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        verifying: Any = private.public_key()
    else:
        key_file.write_text("a-shared-secret-of-at-least-32-bytes!\n")
        verifying = b"a-shared-secret-of-at-least-32-bytes!"
    auth = SignedJwtAuth(
        key_file, algorithm=algorithm, audience=AUDIENCE, issuer="payment-worker", ttl_seconds=60
    )
    claims = jwt.decode(auth.token(), verifying, algorithms=[algorithm], audience=AUDIENCE)
    assert claims["iss"] == "payment-worker"


def test_a_key_that_does_not_fit_the_algorithm_is_refused_when_the_client_is_built(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "signing.key"
    key_file.write_text("not a PEM key")
    service = settings("https://127.0.0.1:1", jwt_signing_key_file=key_file, jwt_audience=AUDIENCE)
    with pytest.raises(ValueError, match="jwt_signing_key_file") as raised:
        build_http_client(service)
    assert "not a PEM key" not in str(raised.value)
