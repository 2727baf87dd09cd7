"""The three kinds of failure, under one root (``PaymentWorkerError``), each handled in
exactly one way (DESIGN.md §7 rule 5).

- A rejection: a business rule, or a dependency's final answer, said no, and the result
  says why. Rules return it (``domain.outcome.reject``); a client raises ``FinalAnswer``
  (a refused card, an unusable profile), which the gateway step turns into one.
- ``InvalidMessage`` (``schemas.errors``): the bytes are not a valid command; they go to
  the dead-letter topic.
- ``TransientError``: a dependency is unavailable; the command waits and is retried,
  never dead-lettered.
"""

from __future__ import annotations

from schemas.errors import PaymentWorkerError


class FinalAnswer(PaymentWorkerError):
    """A dependency answered for this command in a way that retrying cannot change: the
    command is rejected (or, for an authorization, declined) with a reason."""


class TransientError(PaymentWorkerError):
    """A dependency failed in a way that may pass; retry, never dead-letter."""
