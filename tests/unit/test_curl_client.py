"""The libcurl client's own parts that need no server: its failure reasons and the headers
of an answer (the client against real servers is in tests/integration/http_client/)."""

from __future__ import annotations

import pycurl
import pytest

from clients.curl_client import RawHeaders, failure_reason
from clients.endpoint_policy import checked_base_url
from config.settings import UserServiceSettings


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pycurl.E_OPERATION_TIMEDOUT, "timeout"),
        (pycurl.E_COULDNT_CONNECT, "connect_error"),
        (pycurl.E_COULDNT_RESOLVE_HOST, "connect_error"),
        (pycurl.E_PEER_FAILED_VERIFICATION, "tls_error"),
        (pycurl.E_SSL_CONNECT_ERROR, "tls_error"),
        (pycurl.E_SSL_CACERT_BADFILE, "tls_error"),
        (pycurl.E_RECV_ERROR, "transport_error"),
        (pycurl.E_GOT_NOTHING, "transport_error"),
        (-1, "transport_error"),
    ],
)
def test_each_libcurl_error_has_the_reason_the_retries_and_the_breaker_expect(
    code: int, reason: str
) -> None:
    assert failure_reason(code) == reason


def test_headers_are_case_insensitive_and_only_the_final_answers() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Type: application/json"
        b"\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
    )
    headers = RawHeaders(raw)

    assert headers["retry-after"] == headers["RETRY-AFTER"] == "7"
    assert headers.get("X-Interim") is None  # the 1xx answer's headers are not the answer's
    assert headers["Set-Cookie"] == "a=1, b=2"
    assert len(headers) == 3


@pytest.mark.parametrize(
    ("base_url", "path", "url"),
    [
        # The scheme's own port: none in the URL (a production address, usually).
        (
            "https://user-service.internal",
            "/v1/users/u/profile",
            "https://user-service.internal/v1/users/u/profile",
        ),
        (
            "https://gw.example:8443/api/",
            "/v1/authorizations",
            "https://gw.example:8443/api/v1/authorizations",
        ),
        ("http://[::1]:8080", "/v1/x", "http://[::1]:8080/v1/x"),
    ],
)
def test_a_request_goes_below_the_base_url_as_configured(
    base_url: str, path: str, url: str
) -> None:
    service = UserServiceSettings(base_url=base_url, allow_plain_http_on_loopback=True)
    assert checked_base_url(service).below(path) == url
