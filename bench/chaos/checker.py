"""After the chaos: Postgres and a read_committed read of every topic against the model,
and the sandbox gateway's own records against Postgres and the events.

Each check counts its violations and keeps a few examples; the run passes only when every
count is zero.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from bench.chaos.model import (
    Expectation,
    ExpectedMessage,
    comparable_payload,
    method_summary,
    payment_summary,
)
from domain.model import Payment, PaymentMethod
from domain.projection import UserView, Verdict, advance
from domain.streams import event_stream_key, stream_user_id
from pipelines.dead_letters import HEADER_PREFIX
from pipelines.projection import decode_event
from schemas.card_numbers import bytes_may_hold_card_number
from state.tables import gateway_customers, payment_methods, payments, stream_sequences
from state.tables import processed_commands as inbox
from tests.support.harness import Record

EXAMPLES = 3


@dataclass
class Check:
    name: str
    violations: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, example: str) -> None:
        self.violations += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass(frozen=True)
class Observed:
    """Everything read back after the run."""

    results: list[Record]
    events: list[Record]
    dead_letters: list[Record]
    lag: int
    unexpected_worker_exits: int


@dataclass(frozen=True)
class DatabaseRows:
    inbox: dict[str, str]  # command id -> status
    methods: dict[str, PaymentMethod]
    payments: dict[str, Payment]
    sequences: dict[str, int]
    gateway_customers: dict[str, str]  # user id -> the gateway's customer id


def read_database(engine: Engine) -> DatabaseRows:
    with engine.connect() as connection:
        inbox_rows = {
            str(row.command_id): row.status
            for row in connection.execute(select(inbox.c.command_id, inbox.c.status))
        }
        methods = {
            row["payment_method_id"]: PaymentMethod(
                **{column: row[column] for column in PaymentMethod.__slots__}
            )
            for row in connection.execute(select(payment_methods)).mappings()
        }
        payment_rows = {
            row["payment_id"]: Payment(**{column: row[column] for column in Payment.__slots__})
            for row in connection.execute(select(payments)).mappings()
        }
        sequences = {
            row.stream_key: row.last_sequence
            for row in connection.execute(select(stream_sequences))
        }
        customers = {
            row.user_id: row.customer_id
            for row in connection.execute(
                select(gateway_customers.c.user_id, gateway_customers.c.customer_id)
            )
        }
    return DatabaseRows(inbox_rows, methods, payment_rows, sequences, customers)


@dataclass(frozen=True)
class GatewayAuthorization:
    authorization_id: str
    request_key: str | None
    reference: str | None  # the payment id
    status: str  # approved, declined or voided
    amount: int | None
    currency: str | None


@dataclass(frozen=True)
class GatewayCustomer:
    customer_id: str
    reference: str | None  # the user id
    has_profile: bool
    tokens: frozenset[str]


@dataclass(frozen=True)
class GatewayRecords:
    """What the sandbox gateway holds after the run (``GET /v1/_sandbox/records``)."""

    authorizations: list[GatewayAuthorization]
    customers: list[GatewayCustomer]  # live ones
    deleted_customers: list[tuple[str, str | None]]  # (id, reference)
    cancellations: int

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> GatewayRecords:
        def text(value: object) -> str | None:
            return None if value is None else str(value)

        return cls(
            authorizations=[
                GatewayAuthorization(
                    authorization_id=str(item["id"]),
                    request_key=text(item.get("requestKey")),
                    reference=text(item.get("reference")),
                    status=str(item.get("status")),
                    amount=item.get("amount"),
                    currency=text(item.get("currency")),
                )
                for item in document.get("authorizations", [])
            ],
            customers=[
                GatewayCustomer(
                    customer_id=str(item["id"]),
                    reference=text(item.get("reference")),
                    has_profile=bool(item.get("hasProfile")),
                    tokens=frozenset(str(token) for token in item.get("tokens") or ()),
                )
                for item in document.get("customers", [])
            ],
            deleted_customers=[
                (str(item["id"]), text(item.get("reference")))
                for item in document.get("deletedCustomers", [])
            ],
            cancellations=len(document.get("cancellations", [])),
        )

    def summary(self) -> str:
        statuses = Counter(a.status for a in self.authorizations)
        return (
            f"{len(self.authorizations)} authorizations ("
            + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
            + f"), {self.cancellations} cancellations, {len(self.customers)} live customers "
            f"({sum(1 for c in self.customers if not c.has_profile)} without a profile, "
            f"{sum(len(c.tokens) for c in self.customers)} attached tokens), "
            f"{len(self.deleted_customers)} deleted customers"
        )


def _by_key(records: list[Record]) -> dict[bytes | None, list[Record]]:
    grouped: dict[bytes | None, list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped[record.key].append(record)
    return grouped


def _short(key: bytes | None) -> str:
    return (key or b"").decode("utf-8", "replace")[:60]


class Checker:
    def __init__(
        self,
        expectation: Expectation,
        observed: Observed,
        rows: DatabaseRows,
        gateway: GatewayRecords,
    ) -> None:
        self._expected = expectation
        self._observed = observed
        self._rows = rows
        self._gateway = gateway
        self._events = [(record, record.json()) for record in observed.events]
        self._results = [(record, record.json()) for record in observed.results]

    def run(self) -> list[Check]:
        return [
            self._lost_commands(),
            self._results_match(),
            self._duplicated_event_ids(),
            self._events_for_rejected(),
            self._sequences_gap_free(),
            self._events_match(),
            self._dead_letters(),
            self._inbox(),
            self._state_matches_events(),
            self._payments_match_events(),
            self._state_matches_model(),
            self._authorizations_kept_or_voided(),
            self._stored_customers_exist(),
            self._erased_customers_gone(),
            self._tokens_attached_as_stored(),
            self._lag(),
            self._workers(),
        ]

    # --- results ----------------------------------------------------------------------

    def _lost_commands(self) -> Check:
        check = Check("lost commands (a valid command without a result)")
        answered = {document.get("commandId") for _, document in self._results}
        for command_id in self._expected.inbox:
            if command_id not in answered:
                check.fail(f"command {command_id} has no result")
        return check

    def _results_match(self) -> Check:
        """Per key, one result per message, in partition order, as the model says."""
        check = Check("results differ from the model (one per message, in order)")
        actual = _by_key([record for record, _ in self._results])
        originals: dict[str, bytes] = {}
        for record, document in self._results:
            command_id = document.get("commandId")
            if command_id and document.get("status") != "invalid":
                originals.setdefault(command_id, record.value or b"")
        for key, expected in self._expected.by_key().items():
            got = actual.get(key, [])
            if len(got) != len(expected):
                check.fail(f"key {_short(key)}: {len(got)} results for {len(expected)} messages")
            for position, (message, record) in enumerate(zip(expected, got, strict=False)):
                problem = _result_problem(message, record, originals)
                if problem:
                    check.fail(f"key {_short(key)} #{position}: {problem}")
        for key in set(actual) - set(self._expected.by_key()):
            check.fail(f"{len(actual[key])} results on key {_short(key)} that got no message")
        return check

    # --- events -----------------------------------------------------------------------

    def _duplicated_event_ids(self) -> Check:
        check = Check("duplicated eventIds")
        counts = Counter(document["eventId"] for _, document in self._events)
        for event_id, count in counts.items():
            if count > 1:
                check.fail(f"event {event_id} seen {count} times")
        return check

    def _events_for_rejected(self) -> Check:
        check = Check("events of commands that were not accepted")
        not_accepted = {
            command_id
            for command_id, status in self._expected.inbox.items()
            if status != "accepted"
        }
        accepted_results = {
            document["commandId"]
            for _, document in self._results
            if document.get("status") == "accepted"
        }
        for _, document in self._events:
            command_id = document["commandId"]
            if command_id in not_accepted or command_id not in accepted_results:
                check.fail(f"event {document['eventId']} of command {command_id}")
        return check

    def _sequences_gap_free(self) -> Check:
        check = Check("per-stream sequences not gap-free (1..n)")
        streams: dict[str, list[int]] = defaultdict(list)
        for record, document in sorted(self._events, key=lambda e: (e[0].partition, e[0].offset)):
            stream = event_stream_key(document["userId"], (record.key or b"").decode())
            streams[stream].append(document["sequence"])
        for stream, sequences in streams.items():
            if sequences != list(range(1, len(sequences) + 1)):
                check.fail(f"stream {stream[:60]}: {sequences[:12]}...")
        return check

    def _events_match(self) -> Check:
        check = Check("events differ from the model")
        actual = _by_key([record for record, _ in self._events])
        expected_by_key: dict[bytes | None, list[Any]] = defaultdict(list)
        for message in self._expected.messages:
            expected_by_key[message.record.key].extend(message.events)
        for key in set(actual) | set(expected_by_key):
            got = [record.json() for record in actual.get(key, [])]
            want = expected_by_key.get(key, [])
            if len(got) != len(want):
                check.fail(f"key {_short(key)}: {len(got)} events, the model says {len(want)}")
            for document, event in zip(got, want, strict=False):
                seen = (
                    document["eventId"],
                    document["type"],
                    document["sequence"],
                    document["commandId"],
                    comparable_payload(document["type"], document["payload"]),
                )
                wanted = (
                    event.event_id,
                    event.type,
                    event.sequence,
                    event.command_id,
                    event.payload,
                )
                if seen != wanted:
                    check.fail(f"key {_short(key)}: got {seen}, the model says {wanted}")
                    break
        return check

    # --- dead letters -----------------------------------------------------------------

    def _dead_letters(self) -> Check:
        check = Check("DLQ is not exactly the poison set")
        expected = {
            (m.record.partition, m.record.offset): m
            for m in self._expected.messages
            if m.poison_reason is not None
        }
        seen: Counter[tuple[int, int]] = Counter()
        for record in self._observed.dead_letters:
            headers = {k: v.decode("utf-8", "replace") for k, v in record.headers.items()}
            source = (
                int(headers.get(HEADER_PREFIX + "source.partition", "-1")),
                int(headers.get(HEADER_PREFIX + "source.offset", "-1")),
            )
            seen[source] += 1
            message = expected.get(source)
            if message is None:
                check.fail(f"dead letter of {source}, which is not poison")
                continue
            reason = headers.get(HEADER_PREFIX + "reason")
            if reason != str(message.poison_reason):
                check.fail(f"dead letter of {source}: reason {reason}, not {message.poison_reason}")
            original = message.record.value or b""
            if (
                headers.get(HEADER_PREFIX + "payload.sha256")
                != hashlib.sha256(original).hexdigest()
            ):
                check.fail(f"dead letter of {source}: payload hash differs")
            withheld = headers.get(HEADER_PREFIX + "body.withheld") == "true"
            if message.poison_reason == "sensitive_data":
                if not withheld or record.value:
                    check.fail(f"dead letter of {source}: card data not withheld")
            elif (record.value or b"") != original and not (
                # The worker withholds any refused body whose bytes may hold a card
                # number (a digit run that passes the scanner's cheap test), as documented.
                withheld and not record.value and bytes_may_hold_card_number(original)
            ):
                check.fail(f"dead letter of {source}: body differs from the original")
        for source in expected:
            if seen[source] != 1:
                check.fail(f"poison {source} dead-lettered {seen[source]} times")
        return check

    # --- Postgres ---------------------------------------------------------------------

    def _inbox(self) -> Check:
        check = Check("inbox rows differ from the distinct valid commands")
        rows = self._rows.inbox
        for command_id in set(rows) - set(self._expected.inbox):
            check.fail(f"inbox row {command_id} for no valid command")
        for command_id, status in self._expected.inbox.items():
            if command_id not in rows:
                check.fail(f"command {command_id} not in the inbox")
            elif rows[command_id] != status:
                check.fail(f"command {command_id}: inbox says {rows[command_id]}, model {status}")
        return check

    def _state_matches_events(self) -> Check:
        """Fold each user's events like the User Service would; Postgres must agree."""
        check = Check("Postgres state differs from what the events say")
        views: dict[str, UserView] = {}
        last_sequence: dict[str, int] = {}
        for record, document in sorted(self._events, key=lambda e: (e[0].partition, e[0].offset)):
            key = event_stream_key(document["userId"], (record.key or b"").decode())
            last_sequence[key] = max(last_sequence.get(key, 0), document["sequence"])
            view_event = decode_event(record.value)
            if view_event is None:
                continue
            view = views.get(view_event.user_id) or UserView(view_event.user_id)
            view, verdict = advance(view, view_event)
            if verdict in (Verdict.GAP, Verdict.DUPLICATE, Verdict.HELD):
                check.fail(f"user {view_event.user_id}: event {view_event.event_id} {verdict}")
            views[view_event.user_id] = view
        stored: dict[str, set[tuple[str, int, int, bool]]] = defaultdict(set)
        for method in self._rows.methods.values():
            if method.active:
                stored[method.user_id].add(
                    (method.payment_method_id, method.exp_month, method.exp_year, method.is_default)
                )
        for user_id in set(stored) | set(views):
            view_methods = views[user_id].methods if user_id in views else ()
            folded = {
                (m.payment_method_id, m.exp_month, m.exp_year, m.is_default) for m in view_methods
            }
            if folded != stored.get(user_id, set()):
                check.fail(
                    f"user {user_id}: events say {sorted(folded)}, Postgres {stored[user_id]}"
                )
        if last_sequence != self._rows.sequences:
            differing = {
                k
                for k in set(last_sequence) | set(self._rows.sequences)
                if last_sequence.get(k) != self._rows.sequences.get(k)
            }
            for key in sorted(differing):
                check.fail(
                    f"key {key}: last event sequence {last_sequence.get(key)}, "
                    f"stream_sequences {self._rows.sequences.get(key)}"
                )
        return check

    def _payments_match_events(self) -> Check:
        check = Check("Postgres payments differ from what the events say")
        statuses: dict[str, str] = {}
        for _, document in sorted(self._events, key=lambda e: (e[0].partition, e[0].offset)):
            payment_id = document["payload"].get("paymentId")
            status = _PAYMENT_STATUS.get(document["type"])
            if payment_id and status:
                statuses[payment_id] = status
        for payment_id, payment in self._rows.payments.items():
            if statuses.get(payment_id) != payment.status:
                check.fail(
                    f"payment {payment_id}: Postgres {payment.status}, "
                    f"events {statuses.get(payment_id)}"
                )
        for payment_id in set(statuses) - set(self._rows.payments):
            check.fail(f"payment {payment_id} has events but no row")
        return check

    def _state_matches_model(self) -> Check:
        check = Check("Postgres state differs from the model")
        model_methods = {
            method_id: method
            for state in self._expected.keys.values()
            for method_id, method in state.methods.items()
        }
        for method_id in set(model_methods) | set(self._rows.methods):
            want = model_methods.get(method_id)
            got = self._rows.methods.get(method_id)
            if (want and method_summary(want)) != (got and method_summary(got)):
                check.fail(
                    f"payment method {method_id}: Postgres "
                    f"{got and method_summary(got)}, model {want and method_summary(want)}"
                )
        model_payments = {
            payment_id: payment
            for state in self._expected.keys.values()
            for payment_id, payment in state.payments.items()
        }
        for payment_id in set(model_payments) | set(self._rows.payments):
            want_payment = model_payments.get(payment_id)
            got_payment = self._rows.payments.get(payment_id)
            if (want_payment and payment_summary(want_payment)) != (
                got_payment and payment_summary(got_payment)
            ):
                check.fail(f"payment {payment_id}: Postgres {got_payment}, model {want_payment}")
        sequences = {
            key: state.last_sequence
            for key, state in self._expected.keys.items()
            if state.last_sequence
        }
        if sequences != self._rows.sequences:
            check.fail("stream_sequences differ from the model's last sequences")
        customers = {
            stream_user_id(key)
            for key, state in self._expected.keys.items()
            if state.has_gateway_customer
        }
        for user_id in customers ^ set(self._rows.gateway_customers):
            check.fail(f"user {user_id}: gateway customer reference differs from the model")
        return check

    # --- the gateway's records -------------------------------------------------------

    def _authorizations_kept_or_voided(self) -> Check:
        """Every approved authorization is a stored authorized payment's, and vice versa."""
        check = Check(
            "gateway authorizations neither kept nor voided (or kept payments without one)"
        )
        authorized: dict[str, set[str]] = defaultdict(set)  # payment id -> authorization ids
        for _, document in self._events:
            if document["type"] == "PaymentAuthorized":
                payload = document["payload"]
                authorized[payload["paymentId"]].add(payload["authorizationId"])
        approved: dict[str, GatewayAuthorization] = {}
        for authorization in self._gateway.authorizations:
            if authorization.status != "approved":
                continue  # declined, or voided: nothing was kept
            approved[authorization.authorization_id] = authorization
            payment = self._rows.payments.get(authorization.reference or "")
            where = (
                f"approved {authorization.authorization_id} (key {authorization.request_key}) "
                f"for {authorization.reference}"
            )
            if payment is None:
                check.fail(f"{where}: no such payment stored, and not voided")
            elif payment.status != "authorized":
                check.fail(f"{where}: the payment is {payment.status}, and it was not voided")
            elif authorization.authorization_id not in authorized[payment.payment_id]:
                check.fail(
                    f"{where}: the payment's PaymentAuthorized names "
                    f"{sorted(authorized[payment.payment_id])}, and it was not voided"
                )
            elif (authorization.amount, authorization.currency) != (
                payment.amount,
                payment.currency,
            ):
                check.fail(
                    f"{where}: {authorization.amount} {authorization.currency}, "
                    f"the payment {payment.amount} {payment.currency}"
                )
        for payment in self._rows.payments.values():
            if payment.status != "authorized":
                continue
            ids = authorized.get(payment.payment_id, set())
            kept = [i for i in ids if i in approved and approved[i].reference == payment.payment_id]
            if not kept:
                statuses = {
                    a.authorization_id: a.status
                    for a in self._gateway.authorizations
                    if a.reference == payment.payment_id or a.authorization_id in ids
                }
                check.fail(
                    f"authorized payment {payment.payment_id} (events name {sorted(ids)}) has "
                    f"no approved gateway authorization; the gateway has {statuses}"
                )
        return check

    def _stored_customers_exist(self) -> Check:
        check = Check(
            "stored gateway customers not live at the gateway with their user as reference"
        )
        live = {customer.customer_id: customer for customer in self._gateway.customers}
        deleted = {customer_id for customer_id, _ in self._gateway.deleted_customers}
        owners: dict[str, list[str]] = defaultdict(list)
        for user_id, customer_id in sorted(self._rows.gateway_customers.items()):
            owners[customer_id].append(user_id)
            customer = live.get(customer_id)
            if customer is None:
                gone = "deleted" if customer_id in deleted else "never created"
                check.fail(f"user {user_id}: stored customer {customer_id} is {gone}")
            elif customer.reference != user_id:
                check.fail(
                    f"user {user_id}: stored customer {customer_id} has reference "
                    f"{customer.reference}"
                )
        for customer_id, users in owners.items():
            if len(users) > 1:
                check.fail(f"customer {customer_id} stored for {len(users)} users: {users[:3]}")
        return check

    def _erased_customers_gone(self) -> Check:
        """After an erasure that had a customer: it is deleted, and no other one lives on
        for the user but one stored for a card saved after the erasure."""
        check = Check("erased users' gateway customers not deleted")
        live: dict[str, list[str]] = defaultdict(list)
        for customer in self._gateway.customers:
            live[customer.reference or ""].append(customer.customer_id)
        deleted = Counter(reference or "" for _, reference in self._gateway.deleted_customers)
        for key, state in self._expected.keys.items():
            user_id = stream_user_id(key)
            if not state.erasures_with_customer or user_id is None:
                continue
            stored = self._rows.gateway_customers.get(user_id)
            if not state.has_gateway_customer and stored is not None:
                check.fail(f"erased user {user_id}: Postgres still names customer {stored}")
            # A card saved after the last erasure made a new customer: that one may live.
            allowed = {stored} if stored is not None and state.has_gateway_customer else set()
            left = sorted(set(live[user_id]) - allowed)
            if left:
                check.fail(f"erased user {user_id}: live customers {left} at the gateway")
            if deleted[user_id] < state.erasures_with_customer:
                check.fail(
                    f"erased user {user_id}: {state.erasures_with_customer} erasures with a "
                    f"customer, {deleted[user_id]} deleted customers with reference {user_id} "
                    "at the gateway"
                )
        return check

    def _tokens_attached_as_stored(self) -> Check:
        """Active methods' tokens attached to their user's customer; removed ones detached."""
        check = Check("gateway tokens attached otherwise than the stored methods say")
        live = {customer.customer_id: customer for customer in self._gateway.customers}
        holders: dict[str, list[str]] = defaultdict(list)  # token -> live customers
        for customer in self._gateway.customers:
            for token in customer.tokens:
                holders[token].append(customer.customer_id)
        tokens_ever = {
            method_id: tokens
            for state in self._expected.keys.values()
            for method_id, tokens in state.method_tokens.items()
        }
        active: dict[str, set[str]] = defaultdict(set)  # user id -> active tokens
        for method in self._rows.methods.values():
            if method.active and method.gateway_token:
                active[method.user_id].add(method.gateway_token)
        for method in sorted(self._rows.methods.values(), key=lambda m: m.payment_method_id):
            where = f"user {method.user_id} method {method.payment_method_id}"
            if method.active:
                customer_id = self._rows.gateway_customers.get(method.user_id)
                stored = live.get(customer_id or "")
                if method.gateway_token is None:
                    check.fail(f"{where}: active without a token")
                elif stored is None:
                    check.fail(f"{where}: active, but no live stored customer ({customer_id})")
                elif method.gateway_token not in stored.tokens:
                    check.fail(
                        f"{where}: token {method.gateway_token} not attached to {customer_id}"
                    )
                continue
            for token in sorted(tokens_ever.get(method.payment_method_id, set())):
                if token in active[method.user_id]:
                    continue  # the same card saved again, as another active method
                if holders.get(token):
                    check.fail(f"{where}: removed, token {token} still on {holders[token]}")
        return check

    # --- the run itself ---------------------------------------------------------------

    def _lag(self) -> Check:
        check = Check("consumer lag not back to 0")
        if self._observed.lag != 0:
            check.fail(f"lag {self._observed.lag}")
        return check

    def _workers(self) -> Check:
        check = Check("workers that exited without being killed")
        for _ in range(self._observed.unexpected_worker_exits):
            check.fail("a worker exited by itself (see the fault log and worker logs)")
        return check


_PAYMENT_STATUS = {
    "PaymentInitiated": "initiated",
    "PaymentAuthorized": "authorized",
    "PaymentDeclined": "declined",
}


def _result_problem(message: ExpectedMessage, record: Record, originals: dict[str, bytes]) -> str:
    document: dict[str, Any] = json.loads(record.value or b"{}")
    want = message.result
    if want.same_as is not None:
        original = originals.get(want.same_as)
        if original is None or (record.value or b"") != original:
            return f"duplicate of {want.same_as} did not get the original's result"
        return ""
    got = (document.get("status"), document.get("reason"))
    if got != (want.status, want.reason):
        return f"{want.command_id}: got {got}, the model says {(want.status, want.reason)}"
    if want.status == "invalid":
        return ""
    details = (
        document.get("commandId"),
        tuple(document.get("eventIds") or ()),
        document.get("paymentMethodId"),
        document.get("paymentId"),
    )
    wanted = (want.command_id, want.event_ids, want.payment_method_id, want.payment_id)
    if details != wanted:
        return f"{want.command_id}: got {details}, the model says {wanted}"
    return ""
