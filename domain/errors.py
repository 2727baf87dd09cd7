"""The three kinds of failure, under one root (``PaymentWorkerError``), each handled in
exactly one way (DESIGN.md §7 rule 5).

- A rejection: a business rule, or a dependency's final answer, said no, and the result
  says why. Rules return it (``domain.outcome.reject``); a client raises a
  ``FinalAnswer`` (a refused card, an unusable profile), and ``domain.completion`` turns
  it into a rejection (or, for an authorization, a decline) with a reason.
- ``InvalidMessage`` (``schemas.errors``): the bytes are not a valid command; they go to
  the dead-letter topic.
- ``TransientError``: a dependency is unavailable; the command waits and is retried,
  never dead-lettered.

The final answers are named by what they mean for a command, not by a protocol: the
clients map their protocol's answers onto them (``clients.gateway``'s docstring gives the
HTTP statuses), and the domain decides what each one does.
"""

from __future__ import annotations

from schemas.errors import PaymentWorkerError


class FinalAnswer(PaymentWorkerError):
    """A dependency answered for this command in a way that retrying cannot change."""


class Refused(FinalAnswer):
    """The dependency will not do this (the card, the customer record): final."""


class NotThere(Refused):
    """The dependency holds nothing under that id; for an undo (a detach, a delete, a
    cancel) that means it is already done."""


class OutsideContract(FinalAnswer):
    """An answer the dependency's contract does not allow (a status, a body), or another
    request held under the same idempotency key: what it did is unknown to the worker."""


class OutcomeUnknown(OutsideContract):
    """An authorization's answer says neither approved nor declined."""


class ProfileUnusable(FinalAnswer):
    """The User Service answered for this user in a way that can never give a profile.

    ``reason`` is ``malformed_profile`` (a 200 whose body is not a name and an email) or
    ``http_<status>`` (a 4xx that is final); neither holds any of the answer's content.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"user_service: no usable profile ({reason})")
        self.reason = reason


class TransientError(PaymentWorkerError):
    """A dependency failed in a way that may pass; retry, never dead-letter."""
