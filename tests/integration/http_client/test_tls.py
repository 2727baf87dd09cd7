"""TLS to the User Service: the server's certificate is checked against the configured CA
and the host name before any request, and a client certificate is presented when set
(``clients.endpoint_policy.tls_context``)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from clients.http import ServiceUnavailable, build_http_client
from domain.errors import TransientError
from domain.model import Profile
from tests.integration.http_client.recording_user_service import lookup_for, settings, user_service


def test_a_profile_is_fetched_over_tls_with_the_right_ca(
    server_tls: ssl.SSLContext, ca_file: Path
) -> None:
    with user_service(server_tls) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file))
        assert lookup.profile("user-1") == Profile("Ada Lovelace", "ada@example.test")
        assert lookup.profile("user-2") is None
    assert seen.paths == ["/v1/users/user-1/profile", "/v1/users/user-2/profile"]


def test_a_server_signed_by_another_ca_is_refused_before_any_request(
    server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with user_service(server_tls) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=other_ca, retries=3))
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-1")
    assert raised.value.reason == "tls_error"
    assert seen.paths == []


def test_a_certificate_for_another_host_is_refused_before_any_request(
    ca: trustme.CA, ca_file: Path
) -> None:
    elsewhere = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("user-service.example.test").configure_cert(elsewhere)
    with user_service(elsewhere) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file))
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-1")
    assert raised.value.reason == "tls_error"
    assert seen.paths == []


def test_mtls_a_client_without_a_certificate_is_refused_and_one_with_it_accepted(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("payment-worker@example.test", common_name="payment-worker")
    certificate, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(certificate))
    client.private_key_pem.write_to_path(str(key))
    requiring = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(requiring)
    client_ca.configure_trust(requiring)
    requiring.verify_mode = ssl.CERT_REQUIRED

    with user_service(requiring) as (url, seen):
        anonymous = lookup_for(settings(url, ca_bundle=ca_file))
        with pytest.raises(TransientError):
            anonymous.profile("user-1")
        assert seen.paths == []

        identified = lookup_for(
            settings(url, ca_bundle=ca_file, client_certificate=certificate, client_key=key)
        )
        assert identified.profile("user-1") is not None
    assert seen.paths == ["/v1/users/user-1/profile"]
    presented = seen.client_certificates[0]
    assert presented is not None
    assert (("commonName", "payment-worker"),) in presented["subject"]


def test_a_missing_ca_bundle_is_refused_when_the_client_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ca_bundle"):
        build_http_client(settings("https://127.0.0.1:1", ca_bundle=tmp_path / "missing.pem"))
