"""The replay with the Connect sinks on: the fixture stream through the real aggregator and dispatcher handlers
on moto (`--engine aws`), the dispatcher configured with a Customer Profiles domain as the stack configures it,
and an in-memory domain standing in for Customer Profiles (`customer_profiles_standin`: every request checked
against botocore's service model). Compared with an independent expectation (`expectation.py`): one profile
object per qualification of a user the domain knows, none for an unknown user in skip mode nor for a user
whose key two profiles share, objects and a created profile for unknown users in create mode — and neither
the dispatcher's batch redeliveries nor retried puts whose response was lost ever add an object."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from cli.aws_engine import run_aws_engine
from cli.replay import ReplayOptions
from functions.rules.sheet import parse_rules_sheet
from tests.e2e.customer_profiles_standin import CustomerProfilesStandIn
from tests.e2e.expectation import FIXTURE_SPECS, expect, read_records

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "replay"
DOMAIN, OBJECT_TYPE = "engagement", "EngagementLoopQualification"
KNOWN = ("u-1", "u-2", "u-3", "u-4")
"""Users with one profile each (AccountNumber = the user id)."""
SHARED = "u-5"
"""A user two unmerged profiles share."""


def expected_objects() -> list[dict[str, str]]:
    """Every qualification's object, from the rule semantics alone: keys `<rule>#<user>#<n>` for the user's n-th
    qualification of the rule (the fixture's user ids need no escaping), times in ISO-8601 UTC with ms."""
    records = read_records((FIXTURES / "events.jsonl").read_text(encoding="utf-8").splitlines())
    objects = []
    for spec in FIXTURE_SPECS:
        qualifications, _ = expect(spec, records)
        seen: Counter[str] = Counter()
        for q in sorted(qualifications, key=lambda q: q["event_time_ms"]):
            seen[q["user_id"]] += 1
            time = datetime.fromtimestamp(q["event_time_ms"] / 1000, tz=timezone.utc)
            objects.append({
                "outbox_key": f"{q['rule_id']}#{q['user_id']}#{seen[q['user_id']]}", "user_id": q["user_id"],
                "rule_id": q["rule_id"], "action_name": q["name"], "action": q["action"], "change": "qualified",
                "value": q["value"] or "", "event_time": time.strftime("%Y-%m-%dT%H:%M:%S.") +
                f"{q['event_time_ms'] % 1000:03d}+00:00"})
    return objects


def replay_with_connect(mode: str, **options: Any) -> tuple[dict[str, Any], CustomerProfilesStandIn]:
    domain = CustomerProfilesStandIn(DOMAIN, OBJECT_TYPE, allow_profile_creation=mode == "create",
                                     lose_put_responses=options.pop("lose_put_responses", 0.0), seed=7)
    for user in KNOWN:
        domain.add_profile(user)
    domain.add_profile(SHARED)
    domain.add_profile(SHARED)
    rule_set = parse_rules_sheet((FIXTURES / "rules.csv").read_text(encoding="utf-8"), source_name="rules.csv")
    lines = (FIXTURES / "events.jsonl").read_text(encoding="utf-8").splitlines()
    outcome = run_aws_engine(rule_set, lines, ReplayOptions(engine="aws", **options),
                             dispatcher_environment={"CONNECT_DOMAIN_NAME": DOMAIN, "CONNECT_PROFILE_KEY": "_account",
                                                     "CONNECT_OBJECT_TYPE": OBJECT_TYPE,
                                                     "CONNECT_UNKNOWN_USERS": mode},
                             clients={"customer-profiles": domain})
    return outcome, domain


def stored(domain: CustomerProfilesStandIn) -> list[dict[str, str]]:
    """The domain's objects without `event_id` (the engine's, for records that carry none), sorted."""
    assert all(isinstance(o["event_id"], str) for o in domain.objects.values())
    return sorted(({k: v for k, v in o.items() if k != "event_id"} for o in domain.objects.values()),
                  key=lambda o: o["outbox_key"])


def by_key(objects: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(objects, key=lambda o: o["outbox_key"])


@pytest.fixture(scope="module")
def skip_mode() -> tuple[dict[str, Any], CustomerProfilesStandIn]:
    return replay_with_connect("skip", batch_size=10)


def test_skip_mode_writes_one_object_per_qualification_of_a_known_user_and_nothing_else(skip_mode):
    outcome, domain = skip_mode
    expected = expected_objects()
    assert {o["user_id"] for o in expected} >= {*KNOWN, SHARED, "u-6"}  # the fixture covers every case
    assert stored(domain) == by_key([o for o in expected if o["user_id"] in KNOWN])
    for user in KNOWN:
        [profile] = domain.with_account(user)
        assert sorted(profile.objects) == sorted(o["outbox_key"] for o in expected if o["user_id"] == user)
    assert all(not p.objects for p in domain.with_account(SHARED))  # ambiguous: skipped, never attached
    assert len(domain.profiles) == len(KNOWN) + 2  # nobody created
    dispatched = outcome["stats"]["dispatched"]
    # Every entry is marked done for both Customer Profiles sinks, written or skipped; none dead-lettered.
    assert dispatched["customer_profiles_objects"] == dispatched["customer_profiles"] == dispatched["eventbridge"]
    assert outcome["stats"]["dead_lettered"] == 0


def test_the_attribute_sink_still_marks_every_profile_including_both_shared_ones(skip_mode):
    _, domain = skip_mode
    attribute_rules = {spec.name for spec in FIXTURE_SPECS if not spec.reset}
    qualified = {(o["user_id"], o["action_name"]) for o in expected_objects() if o["action"] == "attribute"}
    for profile in domain.profiles.values():
        ready = {name for name, value in profile.attributes.items() if name in attribute_rules}
        assert ready == {name for user, name in qualified if user == profile.account_number}
        assert all(profile.attributes[name] == "ready" for name in ready)


def test_create_mode_creates_each_unknown_users_profile_once_and_writes_their_objects():
    outcome, domain = replay_with_connect("create", batch_size=7)
    expected = [o for o in expected_objects() if o["user_id"] != SHARED]
    assert stored(domain) == by_key(expected)
    created = [p for p in domain.profiles.values() if p.created_by_object]
    unknown = {o["user_id"] for o in expected} - set(KNOWN)
    assert sorted(p.account_number for p in created) == sorted(unknown)  # one profile each
    for profile in created:
        assert sorted(profile.objects) == sorted(o["outbox_key"] for o in expected
                                                 if o["user_id"] == profile.account_number)
    assert outcome["stats"]["dead_lettered"] == 0


def test_redeliveries_and_lost_responses_never_duplicate_an_object(skip_mode):
    _, fault_free = skip_mode
    outcome, domain = replay_with_connect("skip", batch_size=4, duplicate_rate=0.3, fail_rate=0.5, seed=4,
                                          lose_put_responses=0.4)
    assert outcome["stats"]["redeliveries"]["dispatcher"] > 0 and domain.lost_responses
    assert domain.calls["PutProfileObject"] == len(domain.objects) + len(domain.lost_responses)  # retried once
    assert stored(domain) == stored(fault_free)
    for user in KNOWN:
        [profile] = domain.with_account(user)
        assert len(profile.objects) == len(set(profile.objects))
    assert outcome["stats"]["dead_lettered"] == 0
