"""What a service client needs of the wire: one attempt, one whole answer.

``ResilientHttp`` (``clients.http``) runs its attempts through an ``HttpClient``: the
libcurl one that ``build_http_client`` makes (``clients.curl_client``), or a test's
scripted one.
"""

from __future__ import annotations

import json as json_codec
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One answer, read whole (the services' answers are small JSON documents).

    ``headers`` is case-insensitive. Neither the body nor the headers are in ``repr()``: a
    profile is personal data, and must not reach a log line through a traceback.
    """

    status_code: int
    headers: Mapping[str, str] = field(repr=False)
    content: bytes = field(repr=False)

    def json(self) -> Any:
        """The body as JSON; a ``ValueError`` if it is not JSON."""
        return json_codec.loads(self.content)


class TransportFailure(Exception):
    """An attempt got no answer; ``reason`` says why, as a fixed code safe in a log line:
    ``timeout``, ``connect_error``, ``tls_error`` or ``transport_error``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoFreeConnection(TransportFailure):
    """Every connection of our own pool stayed busy for the attempt's timeout: nothing was
    sent, so this says nothing of the service."""

    def __init__(self) -> None:
        super().__init__("pool_timeout")


class HttpClient(Protocol):
    """What ``ResilientHttp`` needs of the wire: one attempt, no retries of its own.

    ``send`` raises ``TransportFailure`` (``NoFreeConnection`` when nothing was sent) when no
    answer came, and ``CredentialsUnavailable`` when the credentials cannot be read; any
    status is an answer. ``timeout`` bounds each socket operation and the wait for a free
    connection.
    """

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse: ...
