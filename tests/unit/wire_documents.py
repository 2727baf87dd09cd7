"""Hypothesis strategies of wire data: valid commands of every type, and JSON texts.

The commands vary every field a producer controls: optional fields present or not, ids
of the whole id alphabet, free text in any script (quotes, backslashes, characters outside
the BMP), UUIDs in any case and timestamps with any offset, fraction and letter case. The
JSON texts are objects written several ways, with repeated keys, escapes and colons and
commas inside strings: what the fast and the strict readings must agree on.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas.commands import COMMAND_TYPES, Command

IDS = st.from_regex(r"[A-Za-z0-9._:@-]{1,24}", fullmatch=True)
TOKENS = st.from_regex(r"[A-Za-z0-9_:.-]{8,40}", fullmatch=True)
# Free text: anything but controls, surrogates and the bidi overrides the models refuse.
_REFUSED = (
    "\u061c\u200e\u200f"
    + "".join(map(chr, range(0x202A, 0x202F)))
    + "".join(map(chr, range(0x2066, 0x206A)))
)
TEXT = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters=_REFUSED),
    min_size=1,
    max_size=30,
)
EMAILS = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(
        st.characters(exclude_characters="@", exclude_categories=("Z", "Cc", "Cs")),
        min_size=1,
        max_size=12,
    ),
    st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True),
    st.sampled_from(["com", "example", "co.uk", "xn--p1ai"]),
)


@st.composite
def uuid_texts(draw: st.DrawFn) -> str:
    value = uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))
    return draw(st.sampled_from([str(value), str(value).upper(), value.hex]))


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 with an offset, in every spelling the decoder takes."""
    moment = draw(
        st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31))
    ).replace(tzinfo=UTC)
    minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + f"{local.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    if minutes == 0 and draw(st.booleans()):
        text += draw(st.sampled_from(["Z", "z"]))
    else:
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if draw(st.booleans()):
        text = text.replace("T", "t")
    return text


_ABSENT = object()


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, an explicit null, or (``_ABSENT``) no field at all."""
    return st.one_of(strategy, st.none(), st.just(_ABSENT))


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not _ABSENT}


CUSTOMERS = st.builds(lambda name, email: {"name": name, "email": email}, TEXT, EMAILS)
CARDS = st.fixed_dictionaries(
    {
        "brand": st.sampled_from(["visa", "mastercard", "amex", "discover", "jcb", "other"]),
        "last4": st.from_regex(r"[0-9]{4}", fullmatch=True),
        "expMonth": st.integers(1, 12),
        "expYear": st.integers(2000, 2100),
        "fingerprint": TOKENS,
    }
)

PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "AddPaymentMethod": st.builds(
        lambda method, token, card, name, default, customer: _present(
            {
                "paymentMethodId": method,
                "gatewayToken": token,
                "card": card,
                "billingName": name,
                "makeDefault": default,
                "customer": customer,
            }
        ),
        _optional(IDS),
        TOKENS,
        CARDS,
        _optional(TEXT),
        st.one_of(st.booleans(), st.just(_ABSENT)),
        _optional(CUSTOMERS),
    ),
    "UpdatePaymentMethod": st.builds(
        lambda method, month, year, name, source: _present(
            {
                "paymentMethodId": method,
                "expMonth": month,
                "expYear": year,
                "billingName": name,
                "source": source,
            }
        ),
        IDS,
        _optional(st.integers(1, 12)),
        _optional(st.integers(2000, 2100)),
        _optional(TEXT),
        st.sampled_from(["user", "account_updater", _ABSENT]),
    ),
    "RemovePaymentMethod": st.builds(
        lambda method, reason: _present({"paymentMethodId": method, "reason": reason}),
        IDS,
        st.sampled_from(["user_request", "card_closed", "fraud_suspected", _ABSENT]),
    ),
    "SetDefaultPaymentMethod": st.builds(lambda method: {"paymentMethodId": method}, IDS),
    "EraseUserData": st.just({}),
    "InitiatePayment": st.builds(
        lambda payment, order, amount, currency, saved, instrument, customer: _present(
            {
                "paymentId": payment,
                "orderId": order,
                "amount": amount,
                "currency": currency,
                "paymentMethodId": instrument if saved else None,
                "gatewayToken": None if saved else instrument,
                "customer": customer,
            }
        ),
        IDS,
        IDS,
        st.integers(1, 10**13),
        st.sampled_from(["EUR", "USD", "GBP", "JPY", "CHF"]),
        st.booleans(),
        TOKENS,
        _optional(CUSTOMERS),
    ),
    "LinkGuestPayments": st.builds(
        lambda ids: {"paymentIds": ids}, st.lists(IDS, min_size=1, max_size=5, unique=True)
    ),
}


@st.composite
def command_documents(draw: st.DrawFn, command_type: str | None = None) -> dict[str, Any]:
    """A valid command as a producer writes it (camelCase, JSON values)."""
    kind = command_type or draw(st.sampled_from(sorted(COMMAND_TYPES)))
    document = _present(
        {
            "commandId": draw(uuid_texts()),
            "type": kind,
            "schemaVersion": draw(st.sampled_from([1, _ABSENT])),
            "issuedAt": draw(timestamps()),
            "userId": draw(st.one_of(IDS, st.none())),
            "correlationId": draw(_optional(IDS)),
            "payload": draw(PAYLOADS[kind]),
        }
    )
    if kind == "EraseUserData" and draw(st.booleans()):
        del document["payload"]  # it has a default
    return document


def validated(document: dict[str, Any]) -> Command:
    """The command of a document, validated as the decoder does."""
    model = COMMAND_TYPES[document["type"]]
    return model.model_validate(document, by_alias=True, by_name=False)


# --- JSON texts ------------------------------------------------------------------------------

# Mostly text that needs no escape (the fast reading's), with colons and commas in it.
_KEY_TEXT = st.one_of(
    st.text(st.sampled_from("ab:, é\u2028😀1{}[]"), max_size=4),
    st.text(st.sampled_from('a:"\\\n'), max_size=3),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    _KEY_TEXT,
)


def _write(value: Any, style: str) -> str:
    """JSON text of a value; objects are lists of members, so keys may repeat."""
    comma, colon = (",", ":") if style == "compact" else (", ", ": ")
    if isinstance(value, tuple):  # an object: ((key, value), ...)
        members = comma.join(
            json.dumps(key, ensure_ascii=style == "ascii") + colon + _write(item, style)
            for key, item in value
        )
        return "{" + members + "}"
    if isinstance(value, list):
        return "[" + comma.join(_write(item, style) for item in value) + "]"
    return json.dumps(value, ensure_ascii=style == "ascii")


_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(st.tuples(_KEY_TEXT, children), max_size=4).map(tuple),
    ),
    max_leaves=12,
)
JSON_OBJECT_TEXTS = st.builds(
    lambda members, style: _write(tuple(members), style).encode(),
    st.lists(st.tuples(_KEY_TEXT, _VALUES), max_size=6),
    st.sampled_from(["compact", "spaced", "ascii"]),
)
