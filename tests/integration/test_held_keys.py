"""An outage holds only the keys whose next command needs the missing dependency.

A real worker process, the real broker and PostgreSQL, the User Service stand-in turned
off: commands that need a profile wait, in order; every other key keeps flowing.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from sandbox.user_service_server import UserServiceStubServer
from tests.factories import add_payment_method, command, encode
from tests.support.harness import WorkerProcess, produce, read_topic


def _with_customer(user: str, fingerprint: str) -> dict[str, Any]:
    card = add_payment_method(user, fingerprint=fingerprint)
    card["payload"]["customer"] = {"name": "Carried Person", "email": "carried@example.com"}
    return card


def test_a_user_service_outage_holds_only_the_keys_that_need_it(
    settings: Settings, worker: WorkerProcess, user_service: UserServiceStubServer
) -> None:
    user_service.stub.available = False
    waiting: dict[str, list[str]] = {}
    flowing: dict[str, list[str]] = {}
    messages = []
    for n in range(4):
        # The first card of a user without a customer in the command needs the profile;
        # the user's later commands wait behind it.
        user = f"user-needs-profile-{n}"
        first = add_payment_method(user, fingerprint=f"fp_wait_{n}_a")
        later = _with_customer(user, f"fp_wait_{n}_b")
        waiting[user] = [first["commandId"], later["commandId"]]
        messages += [(user.encode(), encode(first)), (user.encode(), encode(later))]
    for n in range(6):
        # These carry what the gateway needs, or need no gateway at all.
        user = f"user-flows-{n}"
        card = _with_customer(user, f"fp_flow_{n}")
        missing = command(
            "UpdatePaymentMethod",
            user,
            {"paymentMethodId": "pm-none", "billingName": "X", "source": "user"},
        )
        flowing[user] = [card["commandId"], missing["commandId"]]
        messages += [(user.encode(), encode(card)), (user.encode(), encode(missing))]
    produce(settings, messages)

    flowed = read_topic(settings, settings.topic_results, expected=12, timeout=90)
    assert {(r.key or b"").decode() for r in flowed} == set(flowing)
    for user, command_ids in flowing.items():
        assert [r.json()["commandId"] for r in flowed if r.key == user.encode()] == command_ids
    # Nothing of the waiting keys, and the worker still runs.
    again = read_topic(settings, settings.topic_results, expected=12, settle=3)
    assert {(r.partition, r.offset) for r in again} == {(r.partition, r.offset) for r in flowed}
    assert worker.is_running()
    assert "a dependency is unavailable" in worker.log()

    user_service.stub.available = True
    results = read_topic(settings, settings.topic_results, expected=20, timeout=90)
    resumed = [r for r in results if (r.key or b"").decode() in waiting]
    assert sorted(r.json()["status"] for r in resumed) == ["accepted"] * 8
    for user, command_ids in waiting.items():
        in_order = [r.json()["commandId"] for r in results if r.key == user.encode()]
        assert in_order == command_ids, "a held key resumes in order"
    assert read_topic(settings, settings.topic_dlq, expected=0, settle=0.5) == []
