"""Where a service may be called, and whom to trust there: the base URL and TLS policy.

Personal data and credentials must travel encrypted (DESIGN.md §7): ``checked_base_url``
refuses anything but https://, except plain http:// to this machine when a developer said
so (``allow_plain_http_on_loopback``), and a URL that carries credentials, a query or a
fragment; ``tls_context`` trusts the configured CA bundle only (else the system's CAs),
checks the certificate and the host name, and presents a client certificate if one is set.
``clients.http.build_http_client`` applies both once, when it builds a service's client,
so a wrong setting fails at start-up rather than on the first command.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from config.settings import HttpServiceSettings


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: traffic that never leaves this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class BaseUrl:
    """Where a service is: ``scheme://host[:port]path``; ``port`` None for the scheme's."""

    scheme: str
    host: str  # an IPv6 address keeps its brackets
    port: int | None
    path: str

    def below(self, path: str) -> str:
        """The URL of ``path`` (quoted, starting with ``/``) below this base."""
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path.rstrip('/')}{path}"


def checked_base_url(service: HttpServiceSettings) -> BaseUrl:
    """The base URL, refused unless personal data and credentials would travel encrypted."""
    try:
        url = parse_url(service.base_url)
    except LocationParseError:
        # urllib3's message quotes the URL, which may hold a password.
        raise ValueError("base_url is not a URL, e.g. https://user-service.internal") from None
    if url.auth is not None:
        raise ValueError("base_url must not carry credentials; use a token or key file")
    if not url.host:
        raise ValueError(f"base_url needs a host, e.g. https://user-service.internal (got {url})")
    if url.query is not None or url.fragment is not None:
        raise ValueError("base_url must not have a query or a fragment")
    checked = BaseUrl(url.scheme or "", url.host, url.port, url.path or "")
    if checked.scheme == "https":
        return checked
    if checked.scheme != "http":
        raise ValueError(f"base_url must be https:// (got {url.scheme or 'no scheme'})")
    if not is_loopback_host(url.host):
        raise ValueError(
            f"refusing plain http:// to {url.host}: personal data and credentials would cross "
            "the network unencrypted; use https://"
        )
    if not service.allow_plain_http_on_loopback:
        raise ValueError(
            f"plain http:// to {url.host} needs allow_plain_http_on_loopback=true "
            "(local development only)"
        )
    return checked


def tls_context(service: HttpServiceSettings) -> ssl.SSLContext:
    """Trust ``ca_bundle`` only, else the system's CAs; present a client certificate if set.

    Checks the certificate and the host name (``create_default_context``), TLS 1.2 at least.
    """
    try:
        if service.ca_bundle is not None:
            context = ssl.create_default_context(cafile=str(service.ca_bundle))
        else:
            context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if service.client_certificate is not None and service.client_key is not None:
            context.load_cert_chain(
                certfile=str(service.client_certificate), keyfile=str(service.client_key)
            )
    except (OSError, ssl.SSLError) as error:
        # The error names the file; the URL is left out (it is checked separately).
        raise ValueError(
            f"cannot load ca_bundle, client_certificate or client_key: {error}"
        ) from None
    return context
