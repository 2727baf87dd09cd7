"""Scripted faults for the sandbox services: answer chosen requests with chosen failures.

A ``FaultRule`` matches requests by method, a substring of the path and a substring of the
raw body, and answers ``times`` of them (``-1``: until cleared) with its status (default
500), JSON body (default ``{"error": "scripted"}``) or raw one (``text/plain``) and extra
headers, after ``delay_seconds`` (a timer). With ``effect`` the service first handles the
request as usual, its answer stored under its idempotency key (a gateway that charged, then
failed); without, the service never sees it. ``Faults`` holds a service's rules: the first
matching one with ``times`` left answers. Over HTTP (``/v1/_sandbox/faults``, never itself
faulted) a rule is a JSON object with camelCase names: ``path``, ``method``, ``matchBody``,
``times``, ``status``, ``body``, ``raw``, ``headers``, ``delaySeconds``, ``effect``.
With no rule set, a request costs one check of an empty list.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from sandbox.json_server import Answer

DEFAULT_BODY: Mapping[str, Any] = MappingProxyType({"error": "scripted"})


def _default_body() -> Mapping[str, Any]:
    return DEFAULT_BODY


# Headers the server writes itself: a rule may not script them (it would break framing).
_RESERVED_HEADERS = frozenset({"content-length", "connection", "transfer-encoding"})
# Statuses whose answers have no body in HTTP/1.1: a body would break the connection.
_BODYLESS = frozenset({HTTPStatus.NO_CONTENT.value, HTTPStatus.NOT_MODIFIED.value})
_JSON_NAMES = {
    "path": "path",
    "method": "method",
    "matchBody": "match_body",
    "times": "times",
    "status": "status",
    "body": "body",
    "raw": "raw",
    "headers": "headers",
    "delaySeconds": "delay_seconds",
    "effect": "effect",
}


class InvalidFaultRule(ValueError):
    """A rule that cannot be served (a bad field, or an unknown one)."""


def _check_header(name: str, value: str) -> None:
    if not name or any(ch in name for ch in ":\r\n \t") or "\r" in value or "\n" in value:
        raise InvalidFaultRule(f"bad header {name!r}")
    try:
        f"{name}{value}".encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidFaultRule(f"header {name!r} is not latin-1") from None
    if name.lower() in _RESERVED_HEADERS:
        raise InvalidFaultRule(f"header {name!r} is written by the server")


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One scripted answer; ``None`` matchers match anything. ``times``: -1 or >= 1."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR.value
    path: str | None = None
    method: str | None = None
    match_body: str | None = None
    times: int = 1
    body: Mapping[str, Any] = field(default_factory=_default_body)
    raw: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    effect: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not 200 <= self.status <= 599:
            raise InvalidFaultRule("status must be 200..599")
        object.__setattr__(self, "status", int(self.status))  # an HTTPStatus serves too
        if self.status in _BODYLESS:
            raise InvalidFaultRule(f"status {self.status} has no body")
        if isinstance(self.times, bool) or not (self.times == -1 or self.times >= 1):
            raise InvalidFaultRule("times must be -1 (until cleared) or at least 1")
        if self.raw is not None and self.body is not DEFAULT_BODY:
            raise InvalidFaultRule("a rule answers a body or a raw body, not both")
        if not self.delay_seconds >= 0:  # also refuses NaN
            raise InvalidFaultRule("delaySeconds must be >= 0")
        if self.method is not None and self.method != self.method.upper():
            object.__setattr__(self, "method", self.method.upper())
        for name, value in self.headers.items():
            _check_header(name, value)

    @classmethod
    def from_json(cls, rule: object) -> FaultRule:
        """A rule from its JSON form; ``InvalidFaultRule`` names what is wrong."""
        if not isinstance(rule, dict):
            raise InvalidFaultRule("a rule is a JSON object")
        unknown = set(rule) - set(_JSON_NAMES)
        if unknown:
            raise InvalidFaultRule(f"unknown rule fields {sorted(unknown)}")
        fields = {_JSON_NAMES[name]: value for name, value in rule.items()}
        for name in ("path", "method", "match_body", "raw"):
            if not isinstance(fields.get(name, ""), str):
                raise InvalidFaultRule(f"{name} must be a string")
        for name in ("status", "times"):
            value = fields.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidFaultRule(f"{name} must be an integer")
        delay = fields.get("delay_seconds", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise InvalidFaultRule("delaySeconds must be a number")
        if not isinstance(fields.get("body", {}), dict):
            raise InvalidFaultRule("body must be a JSON object")
        headers = fields.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(value, str) for value in headers.values()
        ):
            raise InvalidFaultRule("headers must map names to strings")
        if not isinstance(fields.get("effect", False), bool):
            raise InvalidFaultRule("effect must be true or false")
        return cls(**fields)

    def as_json(self, times: int | None = None) -> dict[str, Any]:
        """The JSON form (``times`` given: the matches it has left)."""
        rule: dict[str, Any] = {
            "status": self.status,
            "times": self.times if times is None else times,
            "effect": self.effect,
            "delaySeconds": self.delay_seconds,
        }
        for name, value in (
            ("path", self.path),
            ("method", self.method),
            ("matchBody", self.match_body),
        ):
            if value is not None:
                rule[name] = value
        if self.raw is not None:
            rule["raw"] = self.raw
        else:
            rule["body"] = dict(self.body)
        if self.headers:
            rule["headers"] = dict(self.headers)
        return rule

    def answer(self, done: Callable[[], None] | None = None) -> Answer:
        """The scripted answer (``done``: see ``sandbox.json_server.Answer``)."""
        body: dict[str, Any] | bytes
        body = self.raw.encode() if self.raw is not None else dict(self.body)
        return Answer(self.status, body, self.delay_seconds, self.headers or None, done)

    def matches(self, method: str, path: str, body: bytes) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or self.path in path)
            and (self.match_body is None or self.match_body.encode() in body)
        )


@dataclass(slots=True)
class _Armed:
    rule: FaultRule
    left: int  # -1: until cleared


class Faults:
    """A service's scripted faults; thread-safe (rules are added from tests' threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never changed in place; read without the lock only to see if it is empty.
        self._rules: list[_Armed] = []
        self.answered = 0

    def add(self, rules: Iterable[FaultRule]) -> None:
        armed = []
        for rule in rules:
            if not isinstance(rule, FaultRule):
                raise TypeError(f"a FaultRule was expected, not {type(rule).__name__}")
            armed.append(_Armed(rule, rule.times))
        with self._lock:
            self._rules = [*self._rules, *armed]

    def clear(self) -> int:
        """Drops every rule; returns how many there were."""
        with self._lock:
            count = len(self._rules)
            self._rules = []
        return count

    def listing(self) -> list[dict[str, Any]]:
        """The rules left, in order, with the matches each has left."""
        with self._lock:
            return [armed.rule.as_json(armed.left) for armed in self._rules]

    def take(self, method: str, path: str, body: bytes) -> FaultRule | None:
        """The rule that answers this request (one of its ``times`` used), or None."""
        if not self._rules:
            return None
        with self._lock:
            for index, armed in enumerate(self._rules):
                if not armed.rule.matches(method, path, body):
                    continue
                if armed.left > 0:
                    armed.left -= 1
                    if armed.left == 0:
                        self._rules = self._rules[:index] + self._rules[index + 1 :]
                self.answered += 1
                return armed.rule
        return None

    def endpoint(self, method: str, body: bytes) -> Answer:
        """``/v1/_sandbox/faults``: POST ``{"rules": [...]}`` adds, GET lists, DELETE clears."""
        if method == "GET":
            return Answer(HTTPStatus.OK, {"rules": self.listing()})
        if method == "DELETE":
            return Answer(HTTPStatus.OK, {"cleared": self.clear()})
        if method != "POST":
            return Answer(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "GET, POST or DELETE"})
        try:
            request = json.loads(body or b"{}")
            rules = request.get("rules") if isinstance(request, dict) else None
            if not isinstance(rules, list):
                raise InvalidFaultRule('expected {"rules": [rule, ...]}')
            parsed = [FaultRule.from_json(rule) for rule in rules]
        except (ValueError, TypeError) as error:  # InvalidFaultRule and bad JSON
            return Answer(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        self.add(parsed)
        return Answer(HTTPStatus.OK, {"added": len(parsed), "rules": self.listing()})
