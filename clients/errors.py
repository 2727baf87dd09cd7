"""The error every outbound call fails with when a service gave no usable answer now.

A module of its own because it is raised on both sides of a call: by the request engine
(``clients.http``) and by the circuit breaker (``clients.circuit_breaker``, whose refusal
is one), which the engine itself uses. The service clients import it from ``clients.http``.
"""

from __future__ import annotations

from domain.errors import TransientError


class ServiceUnavailable(TransientError):
    """The service gave no usable answer now; the command waits and is retried.

    ``reason`` is a short fixed code (``timeout``, ``http_503``, ``circuit_open``...) that is
    safe in a log line: it never holds a URL, a body or a credential.
    """

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} unavailable: {reason}")
        self.service = service
        self.reason = reason
