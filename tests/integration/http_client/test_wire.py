"""What goes over the wire and how a failed attempt is named: a redirect is an answer (not
followed), a late answer a ``timeout`` retried within the budget, a closed port a
``connect_error``; the environment's proxies and .netrc are ignored, and the path is sent
as quoted."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from clients.http import ServiceUnavailable
from tests.integration.http_client.recording_user_service import (
    Answer,
    lookup_for,
    profile_of,
    settings,
    user_service,
)


def test_a_redirect_is_an_answer_and_is_not_followed() -> None:
    def redirect(path: str) -> Answer:
        return 302, {}, {"Location": "/v1/users/user-1/profile"}

    with user_service(None, respond=redirect) as (url, seen):
        lookup = lookup_for(settings(url, allow_plain_http_on_loopback=True, retries=3))
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-2")
    assert raised.value.reason == "http_302"
    assert seen.paths == ["/v1/users/user-2/profile"]


def test_an_answer_later_than_the_timeout_is_a_timeout_within_the_budget() -> None:
    def late(path: str) -> Answer:
        time.sleep(2.0)
        return profile_of(path)

    with user_service(None, respond=late) as (url, seen):
        service = settings(
            url,
            allow_plain_http_on_loopback=True,
            timeout_seconds=0.3,
            total_budget_seconds=0.8,
            retries=5,
        )
        lookup = lookup_for(service)
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-1")
        elapsed = time.monotonic() - began
    assert raised.value.reason == "timeout"
    assert 1 < len(seen.paths) <= 3  # retried, as far as the budget goes
    assert elapsed < 0.8 + 0.3


def test_a_port_where_nothing_listens_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lookup = lookup_for(settings(f"http://127.0.0.1:{port}", allow_plain_http_on_loopback=True))
    with pytest.raises(ServiceUnavailable) as raised:
        lookup.profile("user-1")
    assert raised.value.reason == "connect_error"


def test_proxies_and_netrc_from_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: a proxy would fail
    with user_service(None) as (url, seen):
        lookup = lookup_for(settings(url, allow_plain_http_on_loopback=True))
        assert lookup.profile("user-1") is not None
    assert seen.authorizations == [None]


def test_the_base_url_path_and_the_quoted_user_id_reach_the_server_as_sent() -> None:
    with user_service(None) as (url, seen):
        lookup = lookup_for(settings(f"{url}/api/", allow_plain_http_on_loopback=True))
        assert lookup.profile("../admin?x=1#") is None
    assert seen.paths == ["/api/v1/users/..%2Fadmin%3Fx%3D1%23/profile"]
