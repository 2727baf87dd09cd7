"""Where the client may send requests at all: plain http:// only to this machine and only
when allowed, no credentials, query or fragment in the base URL; a refused URL builds no
client (``clients.endpoint_policy.checked_base_url``)."""

from __future__ import annotations

import pytest

from clients.http import build_http_client
from tests.integration.http_client.recording_user_service import lookup_for, settings, user_service


def test_plain_http_to_loopback_is_refused_unless_allowed() -> None:
    with user_service(None) as (url, seen):
        with pytest.raises(ValueError, match="allow_plain_http_on_loopback"):
            build_http_client(settings(url))
        assert seen.paths == []

        lookup = lookup_for(settings(url, allow_plain_http_on_loopback=True))
        assert lookup.profile("user-1") is not None
    assert seen.paths == ["/v1/users/user-1/profile"]


@pytest.mark.parametrize(
    "base_url", ["http://localhost:8080", "http://127.8.9.10", "http://[::1]:8080"]
)
def test_every_loopback_address_may_be_allowed(base_url: str) -> None:
    build_http_client(settings(base_url, allow_plain_http_on_loopback=True)).close()


@pytest.mark.parametrize(
    "base_url",
    [
        "http://user-service.internal",
        "http://10.0.0.7:8080",
        "http://192.168.1.20",
        "http://localhost.example.test",
        "http://[::2]",
    ],
)
def test_plain_http_elsewhere_is_always_refused(base_url: str) -> None:
    # Refused while building: no client exists, so no request can be sent.
    with pytest.raises(ValueError, match="refusing plain http://"):
        build_http_client(settings(base_url, allow_plain_http_on_loopback=True))


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://127.0.0.1",
        "https://user:secret@user-service.internal",
        "https://:secret@",
        "https://",
    ],
)
def test_other_unsafe_base_urls_are_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url") as raised:
        build_http_client(settings(base_url))
    assert "secret" not in str(raised.value)
