"""Service-to-service credentials, read from mounted files so rotation needs no restart.

Two schemes, chosen by a service's settings (``build_auth``): a bearer token from a file
(``BearerTokenFileAuth``) or a short-lived JWT the worker signs (``SignedJwtAuth``). The
connection pool of ``clients.http`` asks for the token on every request (``TokenSource``),
so a rotated file is used from the next request on. A file that cannot be read or used is
a ``CredentialsUnavailable``: the call fails at once, without a retry (a rotation takes
longer than a call), and a wrong file at start-up is a ``ValueError`` when the client is
built.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jwt

from config.settings import HttpServiceSettings
from domain.errors import TransientError


class CredentialsUnavailable(TransientError):
    """A credential file cannot be read or used; it may be in the middle of a rotation."""


class TokenSource(Protocol):
    """A credential read when a request needs it: ``Authorization: Bearer <token()>``."""

    def token(self) -> str: ...


def build_auth(service: HttpServiceSettings) -> TokenSource | None:
    """The configured service-to-service credentials, checked once now (``ValueError``)."""
    if service.bearer_token_file is not None:
        return BearerTokenFileAuth(service.bearer_token_file)
    if service.jwt_signing_key_file is not None:
        if service.jwt_audience is None:  # also refused by HttpServiceSettings
            raise ValueError("jwt_audience is required when the worker signs tokens")
        return SignedJwtAuth(
            service.jwt_signing_key_file,
            algorithm=service.jwt_algorithm,
            audience=service.jwt_audience,
            issuer=service.jwt_issuer,
            ttl_seconds=service.jwt_ttl_seconds,
        )
    return None


def _file_version(path: Path) -> tuple[int, int, int]:
    """Changes when the file is rewritten or replaced (a Kubernetes secret swaps a symlink)."""
    try:
        stat = path.stat()
    except OSError as error:
        raise CredentialsUnavailable(f"cannot read {path}: {error.strerror}") from None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise CredentialsUnavailable(f"cannot read {path}: {error.strerror}") from None
    if not secret:
        raise CredentialsUnavailable(f"{path} is empty")
    return secret


class BearerTokenFileAuth:
    """``Authorization: Bearer <the file's content>``, re-read whenever the file changes.

    The file is stat'ed on every request (cheap) and read only when its inode, mtime or
    size changed, so a rotated token is used from the next request on, without a restart.
    The token is never logged and appears in no error message.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._token = ""
        try:
            self.token()
        except CredentialsUnavailable as error:
            raise ValueError(f"bearer_token_file: {error}") from None

    def token(self) -> str:
        version = _file_version(self._path)
        with self._lock:
            if version != self._version:
                raw = _read_secret(self._path)
                try:
                    token = raw.decode("ascii")
                except UnicodeDecodeError:
                    raise CredentialsUnavailable(f"{self._path} is not an ASCII token") from None
                if not token.isprintable() or " " in token:
                    raise CredentialsUnavailable(f"{self._path} holds more than one token")
                self._token, self._version = token, version
            return self._token


class SignedJwtAuth:
    """A short-lived JWT signed by the worker: ``Authorization: Bearer <jwt>``.

    One token is reused until shortly before it expires, so signing costs nothing per
    request; a changed key file is read and used at once (key rotation without a restart).
    ``clock`` is wall-clock time, because ``iat`` and ``exp`` are absolute.
    """

    def __init__(
        self,
        key_file: Path,
        *,
        algorithm: str,
        audience: str,
        issuer: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key_file = key_file
        self._algorithm = algorithm
        self._audience = audience
        self._issuer = issuer
        self._ttl = ttl_seconds
        # Re-sign this long before expiry, so a token never expires in flight or through a
        # little clock skew at the service.
        self._refresh_margin = min(60.0, ttl_seconds / 5)
        self._clock = clock
        self._lock = threading.Lock()
        self._key_version: tuple[int, int, int] | None = None
        self._key = b""
        self._token = ""
        self._expires_at = 0.0
        try:
            self.token()
        except CredentialsUnavailable as error:
            raise ValueError(f"jwt_signing_key_file: {error}") from None

    def token(self) -> str:
        version = _file_version(self._key_file)
        now = self._clock()
        with self._lock:
            if version != self._key_version:
                self._key = _read_secret(self._key_file)
                self._key_version = version
                self._expires_at = 0.0
            if now >= self._expires_at - self._refresh_margin:
                self._token = self._sign(int(now))
                self._expires_at = float(int(now) + self._ttl)
            return self._token

    def _sign(self, now: int) -> str:
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        try:
            return jwt.encode(claims, self._key, algorithm=self._algorithm)
        except (ValueError, TypeError, jwt.PyJWTError) as error:
            # The message of a key-parsing error could quote the key: name its type only.
            raise CredentialsUnavailable(
                f"cannot sign {self._algorithm} with {self._key_file}: {type(error).__name__}"
            ) from None
