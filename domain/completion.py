"""The part of a decision that the gateway's answers finish: customer profiles, saved
cards, authorizations. ``decide`` says what a command does on a key's state; for the
commands that touch the gateway, ``Completion.complete`` carries that out through the
ports (``domain.ports``) and turns each answer into the final decision: a card the
gateway refuses rejects the command, an authorization's answer settles the payment, a
customer the gateway created is recorded. The worker's pipeline, the benchmark's
expected model and the chaos run's model all call it, each with its own gateway.

What the gateway holds and what the worker stores must agree whatever the gateway
answers (docs: the table of answers):

- a customer the gateway created is kept (its reference stored) even when the command is
  then rejected, so that EraseUserData can delete it;
- a card whose token is replaced (re-added with a new expiry) has its old token detached;
- an authorization the worker does not keep (its payment id was taken by another command,
  or the answer did not say whether it authorized) is cancelled, and the cancel is retried
  until the gateway confirms it;
- a detach or a delete is done when the gateway confirms it or says it has nothing
  (``NotThere``), a cancel only when the gateway confirms it; any other final answer
  makes the key wait and try again.

Every call carries an idempotency key derived from the command, so a replayed batch
repeats its calls without creating anything new. The User Service is asked for a profile
only when the gateway needs one and the command did not bring it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from domain.decisions import creates_gateway_customer
from domain.errors import (
    FinalAnswer,
    NotThere,
    OutsideContract,
    ProfileUnusable,
    Refused,
    TransientError,
)
from domain.model import (
    AuthorizationAnswer,
    CustomerReference,
    Decision,
    KeyState,
    Profile,
)
from domain.outcome import own_method, reject
from domain.payment_rules import payment_instrument, settle_authorization
from domain.ports import PaymentGateway, ProfileSource, idempotency_key, profile_key
from schemas.commands import (
    AddPaymentMethod,
    Command,
    Customer,
    EraseUserData,
    InitiatePayment,
    RemovePaymentMethod,
)
from schemas.results import Reason

# The decline code of a payment whose authorization was cancelled because the gateway's
# answer did not say whether it authorized.
AUTHORIZATION_CANCELLED = "authorization_cancelled"
# The decline code of an authorization the gateway refused as a request (a 4xx: e.g. a
# token it does not know): nothing was made, so it is a decline.
REFUSED_REQUEST = "gateway_refused_request"


class _Rejected(FinalAnswer):
    """A gateway step refused the command; ``customer`` is what the gateway holds for the
    user by then (a customer created before the refusal is kept)."""

    def __init__(self, reason: Reason, customer: CustomerReference | None) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.customer = customer


def needs_gateway(command: Command, decision: Decision) -> bool:
    """Whether completing this decision may call out (else it is final as it is)."""
    if decision.result.status != "accepted":
        # A payment id taken meanwhile: this command may have authorized on an earlier
        # try (before another worker stored the id); what it made must be cancelled.
        return isinstance(command, InitiatePayment) and (
            decision.result.reason == Reason.PAYMENT_ID_TAKEN
        )
    return bool(decision.events) and isinstance(
        command, AddPaymentMethod | RemovePaymentMethod | EraseUserData | InitiatePayment
    )


class Completion:
    """Completes decisions through one gateway and one profile source."""

    def __init__(self, gateway: PaymentGateway, profiles: ProfileSource) -> None:
        self._gateway = gateway
        self._profiles = profiles

    def complete(
        self, command: Command, state: KeyState, decision: Decision, now: datetime
    ) -> Decision:
        """The final decision once the gateway has answered; may add events or reject.

        Raises ``TransientError`` when a call must be tried again (same keys, later).
        """
        if not needs_gateway(command, decision):
            return decision
        try:
            match command:
                case AddPaymentMethod():
                    return self._save_card(command, state, decision)
                case RemovePaymentMethod():
                    return self._remove_card(command, state, decision)
                case EraseUserData():
                    return self._erase(command, state, decision)
                case InitiatePayment() if decision.result.status != "accepted":
                    self._cancel_authorization(command, "payment_id_taken")
                    return decision
                case InitiatePayment():
                    return self._authorize(command, state, decision, now)
        except _Rejected as rejected:
            refusal = reject(command, state, rejected.reason)
            return replace(refusal, customer_reference=rejected.customer)
        return decision

    def _profile(self, user_id: str, carried: Customer | None) -> Profile:
        if carried is not None:
            return Profile(name=carried.name, email=carried.email)
        try:
            profile = self._profiles.profile(user_id)
        except ProfileUnusable:
            raise _Rejected(Reason.USER_PROFILE_UNUSABLE, None) from None
        if profile is None:
            raise _Rejected(Reason.USER_NOT_FOUND, None)
        return profile

    def _save_card(
        self, command: AddPaymentMethod, state: KeyState, decision: Decision
    ) -> Decision:
        if command.user_id is None:  # guests were rejected by the rule already
            return decision
        customer_id, created = self._customer(command, command.user_id, state)
        with _refusal_rejects(created):
            self._gateway.attach_payment_method(
                customer_id=customer_id,
                gateway_token=command.payload.gateway_token,
                idempotency_key=idempotency_key(command.command_id, "attach"),
            )
        replaced = _replaced_token(state, decision)
        if replaced is not None:
            # The same card re-added with a new expiry: its old token leaves the gateway.
            with _already_gone("detach a replaced card"):
                self._gateway.detach_payment_method(
                    customer_id=customer_id,
                    gateway_token=replaced,
                    idempotency_key=idempotency_key(command.command_id, "detach-replaced"),
                )
        if created is not None:
            decision = replace(decision, customer_reference=created)
        return decision

    def _customer(
        self, command: AddPaymentMethod | InitiatePayment, user_id: str, state: KeyState
    ) -> tuple[str, CustomerReference | None]:
        """The user's gateway customer id, and its reference when this call created it.

        Once per user, the gateway's customer is created holding only the user id, then
        given the name and email (from the command, else the User Service) in a call of
        its own: the profile is the one input that may change between two tries, and
        setting it again is harmless, so every other request stays the same on a retry.
        The profile is looked up first: a user the User Service does not know gets no
        customer at all.
        """
        if state.gateway_customer_id is not None:
            return state.gateway_customer_id, None
        profile = self._profile(user_id, command.payload.customer)
        with _refusal_rejects(None):
            customer_id = self._gateway.create_customer(
                reference=user_id,
                idempotency_key=idempotency_key(command.command_id, "create-customer"),
            )
        created = CustomerReference(customer_id)
        with _refusal_rejects(created):
            self._gateway.set_customer_profile(
                customer_id=customer_id,
                name=profile.name,
                email=profile.email,
                idempotency_key=profile_key(command.command_id, profile.name, profile.email),
            )
        return customer_id, created

    def _remove_card(
        self, command: RemovePaymentMethod, state: KeyState, decision: Decision
    ) -> Decision:
        removed = own_method(state, command.payload.payment_method_id)
        if state.gateway_customer_id is not None and removed and removed.gateway_token:
            with _already_gone("detach a card"):
                self._gateway.detach_payment_method(
                    customer_id=state.gateway_customer_id,
                    gateway_token=removed.gateway_token,
                    idempotency_key=idempotency_key(command.command_id, "detach"),
                )
        return decision

    def _erase(self, command: EraseUserData, state: KeyState, decision: Decision) -> Decision:
        if command.user_id is None:  # guests were rejected by the rule already
            return decision
        self._profiles.forget(command.user_id)
        if state.gateway_customer_id is None:
            return decision
        with _already_gone("delete a customer"):
            self._gateway.delete_customer(
                customer_id=state.gateway_customer_id,
                idempotency_key=idempotency_key(command.command_id, "delete-customer"),
            )
        return replace(decision, customer_reference=CustomerReference(None))

    def _authorize(
        self, command: InitiatePayment, state: KeyState, decision: Decision, now: datetime
    ) -> Decision:
        # Fraud checks want the payer's email. It goes in the request only when the
        # command carries it. A user's payment names the user's gateway customer, which
        # holds the email; without a carried email and without a customer, the customer
        # is created first (with the User Service's profile). A looked-up email never
        # goes in the request itself, so the request is the same on every try.
        carried = command.payload.customer
        customer_id = state.gateway_customer_id
        created: CustomerReference | None = None
        if command.user_id is not None and creates_gateway_customer(command, state):
            customer_id, created = self._customer(command, command.user_id, state)
        try:
            answer = self._gateway.authorize(
                payment_id=command.payload.payment_id,
                amount=command.payload.amount,
                currency=command.payload.currency,
                gateway_token=payment_instrument(command, state),
                idempotency_key=idempotency_key(command.command_id, "authorize"),
                customer_id=customer_id,
                email=carried.email if carried is not None else None,
            )
        except OutsideContract:
            # OutcomeUnknown, or another request under this key: approved or not, it
            # must not stay. Cancelled, and recorded as declined.
            self._cancel_authorization(command, "outcome_unknown")
            answer = AuthorizationAnswer(approved=False, decline_code=AUTHORIZATION_CANCELLED)
        except Refused:
            # A 4xx to an authorization makes nothing: a decline.
            answer = AuthorizationAnswer(approved=False, decline_code=REFUSED_REQUEST)
        settled = settle_authorization(command, decision, answer, now)
        return settled if created is None else replace(settled, customer_reference=created)

    def _cancel_authorization(self, command: InitiatePayment, reason: str) -> None:
        """Void whatever this command's authorization request made at the gateway. Only a
        confirmation will do, not even ``NotThere``: the gateway's confirmation also bars
        the request key, so an authorization still in flight cannot appear afterwards."""
        try:
            self._gateway.cancel_authorization(
                request_key=idempotency_key(command.command_id, "authorize"),
                payment_id=command.payload.payment_id,
                idempotency_key=idempotency_key(command.command_id, "cancel-authorization"),
                reason=reason,
            )
        except FinalAnswer as refusal:
            raise TransientError(f"the gateway did not confirm a cancel: {refusal}") from None


@contextmanager
def _refusal_rejects(customer: CustomerReference | None) -> Iterator[None]:
    """A final gateway answer to a step of saving a card rejects the command, keeping the
    customer that the gateway holds by then."""
    try:
        yield
    except OutsideContract:
        raise _Rejected(Reason.GATEWAY_UNEXPECTED_ANSWER, customer) from None
    except Refused:
        # The gateway will not take this customer record or card; retrying cannot
        # change that, so the command is rejected rather than left waiting.
        raise _Rejected(Reason.GATEWAY_REFUSED, customer) from None


@contextmanager
def _already_gone(action: str) -> Iterator[None]:
    """An undo call is done when the gateway confirms it or says it has nothing; any
    other final answer leaves something behind, so the key waits and tries again."""
    try:
        yield
    except NotThere:
        return
    except FinalAnswer as refusal:
        raise TransientError(f"the gateway did not {action}: {refusal}") from None


def _replaced_token(state: KeyState, decision: Decision) -> str | None:
    """The token a re-added card replaces, if the decision changed a stored method's."""
    for changed in decision.changed_methods:
        before = own_method(state, changed.payment_method_id)
        if (
            before is not None
            and before.gateway_token is not None
            and before.gateway_token != changed.gateway_token
        ):
            return before.gateway_token
    return None
