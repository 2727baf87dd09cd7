"""The state that decisions read and produce; plain frozen values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

from schemas.events import EventEnvelope
from schemas.results import CommandResult

MAX_ACTIVE_PAYMENT_METHODS = 20

_Value = TypeVar("_Value")
# Per dataclass: its init fields' values in order, and each field's position.
_LAYOUTS: dict[type, tuple[Callable[[Any], tuple[Any, ...]], dict[str, int]]] = {}


def _with_changes(value: _Value, changes: dict[str, object]) -> _Value:
    """``dataclasses.replace(value, **changes)`` at two thirds of its cost (it reads every
    field's metadata in Python on each call; here the layout is read once per class)."""
    kind = type(value)
    layout = _LAYOUTS.get(kind)
    if layout is None:
        names = [f.name for f in fields(kind) if f.init]  # type: ignore[arg-type]
        layout = _LAYOUTS[kind] = (attrgetter(*names), {n: i for i, n in enumerate(names)})
    values_of, position = layout
    values = list(values_of(value))
    for name, changed in changes.items():
        if name not in position:
            raise TypeError(f"{kind.__name__} has no field {name!r}")
        values[position[name]] = changed
    return kind(*values)


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    payment_method_id: str
    user_id: str
    gateway_token: str | None
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    billing_name: str | None
    is_default: bool
    active: bool
    created_at: datetime
    updated_at: datetime

    def with_changes(self, **changes: object) -> PaymentMethod:
        return _with_changes(self, changes)


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment, kept without personal data; ``user_id`` is None for a guest."""

    payment_id: str
    user_id: str | None
    order_id: str
    amount: int
    currency: str
    payment_method_id: str | None
    status: str
    created_at: datetime
    updated_at: datetime

    def with_changes(self, **changes: object) -> Payment:
        return _with_changes(self, changes)


@dataclass(frozen=True, slots=True)
class AuthorizationAnswer:
    """What the payment gateway said about one authorization request."""

    approved: bool
    authorization_id: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class Profile:
    """A customer's name and email, for one gateway call; then dropped (never stored)."""

    name: str
    email: str

    def __repr__(self) -> str:
        # Personal data must not reach a log line or a traceback through repr().
        return "Profile(name=<redacted>, email=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class KeyState:
    """Everything a decision may read about one key (a user, or a guest payment)."""

    key: str
    last_sequence: int = 0
    methods: tuple[PaymentMethod, ...] = ()
    # Payment method ids named by this command that already belong to another key:
    # reusing one must be refused without revealing whose it is.
    taken_payment_method_ids: frozenset[str] = frozenset()
    # The payments this command names, whoever they belong to (looked up by id).
    payments: tuple[Payment, ...] = ()
    # The gateway's customer record of this user (no personal data: an opaque id).
    gateway_customer_id: str | None = None

    def payment(self, payment_id: str) -> Payment | None:
        return next((p for p in self.payments if p.payment_id == payment_id), None)

    @property
    def active_methods(self) -> tuple[PaymentMethod, ...]:
        return tuple(method for method in self.methods if method.active)

    @property
    def default_method(self) -> PaymentMethod | None:
        return next((m for m in self.methods if m.active and m.is_default), None)


@dataclass(frozen=True, slots=True)
class CustomerReference:
    """A change of the user's gateway customer id; ``None`` drops it (erasure)."""

    customer_id: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """What one command does: the result, its events, and the rows that change."""

    result: CommandResult
    events: tuple[EventEnvelope, ...] = ()
    changed_methods: tuple[PaymentMethod, ...] = field(default=())
    changed_payments: tuple[Payment, ...] = field(default=())
    last_sequence: int = 0
    # None: unchanged.
    customer_reference: CustomerReference | None = None


def apply_decision(state: KeyState, decision: Decision) -> KeyState:
    """A key's state once ``decision`` is carried out: the methods it changed replace the
    stored ones (new ones come last), its last sequence, its gateway customer.

    This is the one place the change is made (the store's staging, the in-memory stores
    and the models all call it). The per-command views of a state (``taken_payment_method_ids``,
    the named ``payments``) belong to the command that read them and are left empty.
    """
    methods = {method.payment_method_id: method for method in state.methods}
    for method in decision.changed_methods:
        methods[method.payment_method_id] = method
    customer_id = state.gateway_customer_id
    if decision.customer_reference is not None:
        customer_id = decision.customer_reference.customer_id
    return KeyState(
        key=state.key,
        last_sequence=decision.last_sequence,
        methods=tuple(methods.values()),
        gateway_customer_id=customer_id,
    )
