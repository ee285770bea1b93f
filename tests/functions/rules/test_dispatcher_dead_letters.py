"""`python -m cli actions replay`: dead letters redelivered through the dispatcher's code, against moto
(the dead-letter queue, the outbox table, an EventBridge bus whose events land in a queue)."""

from __future__ import annotations

import io
import json
import time
from typing import Any, Iterator

import pytest
from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws

from cli.__main__ import build_parser
from functions.rules.dispatcher import DeadLetter
from functions.rules.outbox import Change, OutboxEntry, exit_key, qualification_key
from functions.rules.model import ActionKind
from tests.functions.rules.dispatcher_aws import create_dispatcher_aws

REGION = "us-east-1"
EVENT_TIME_MS = 1_764_000_000_000


def entry(user: str) -> OutboxEntry:
    return OutboxEntry(key=f"r-1#{user}#1", change=Change.QUALIFIED, rule_id="r-1", user_id=user,
                       action=ActionKind.EVENT, name="trk_purchase", value=None, event_id=f"evt-{user}",
                       event_time_ms=EVENT_TIME_MS, created_ms=EVENT_TIME_MS + 10)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("EVENT_BUS_NAME", "PINPOINT_APPLICATION_ID", "CONNECT_DOMAIN_NAME", "CONNECT_PROFILE_KEY",
                 "CONNECT_OBJECT_TYPE", "CONNECT_UNKNOWN_USERS", "OUTBOX_TABLE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        created = create_dispatcher_aws()
        yield {"sqs": created.sqs, "dynamodb": created.dynamodb, "dlq": created.dlq_url,
               "bus_queue": created.bus_queue_url}


def attribute_change(user: str, sequence: int, *, exit: bool = False) -> OutboxEntry:
    """Qualification `sequence` of window rule r-w (attribute `active`), or the exit that ends it."""
    key = (exit_key if exit else qualification_key)("r-w", user, sequence)
    created = EVENT_TIME_MS + 1000 * (2 * sequence + exit)
    return OutboxEntry(key=key, change=Change.EXITED if exit else Change.QUALIFIED, rule_id="r-w", user_id=user,
                       action=ActionKind.ATTRIBUTE, name="active", value=None if exit else "ready",
                       event_id="" if exit else f"evt-{sequence}", event_time_ms=created, created_ms=created)


def store(aws: dict[str, Any], item: dict[str, Any]) -> None:
    aws["dynamodb"].put_item(TableName="outbox", Item={k: TypeSerializer().serialize(v) for k, v in item.items()})


def dead_letter(aws: dict[str, Any], user: str | OutboxEntry, failed: tuple[str, ...], *,
                delivered: tuple[str, ...] = ()) -> None:
    """`user`'s trk_ entry (or the entry given) dead-lettered by the dispatcher: in the queue, and settled."""
    dead = entry(user) if isinstance(user, str) else user
    item = {**dead.to_item(), "status": "dead_lettered"}
    item.pop("pending_shard", None)  # a settled entry is out of the pending index
    if delivered:
        item["delivered_sinks"] = set(delivered)
    store(aws, item)
    letter = DeadLetter(entry=dead, failed_sinks=failed, errors={name: "throttled" for name in failed},
                        dead_lettered_ms=EVENT_TIME_MS + 99)
    aws["sqs"].send_message(QueueUrl=aws["dlq"], MessageBody=letter.to_json())


def delivered(aws: dict[str, Any], change: OutboxEntry, sinks: tuple[str, ...] = ("eventbridge",)) -> None:
    item = {**change.to_item(), "status": "delivered", "delivered_sinks": set(sinks)}
    item.pop("pending_shard", None)
    store(aws, item)


def stored_status(aws: dict[str, Any], key: str) -> str:
    return aws["dynamodb"].get_item(TableName="outbox", Key={"pk": {"S": key}})["Item"]["status"]["S"]


def run(aws: dict[str, Any], *flags: str) -> tuple[int, str]:
    args = build_parser({"actions": "cli.actions"}).parse_args(
        ["actions", "replay", "--queue-url", aws["dlq"], "--outbox-table", "outbox", *flags])
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


def queue_bodies(aws: dict[str, Any], queue: str) -> list[str]:
    messages = aws["sqs"].receive_message(QueueUrl=aws[queue], MaxNumberOfMessages=10).get("Messages", [])
    return [message["Body"] for message in messages]


def status(aws: dict[str, Any], user: str) -> str:
    return aws["dynamodb"].get_item(TableName="outbox", Key={"pk": {"S": f"r-1#{user}#1"}})["Item"]["status"]["S"]


def test_dry_run_lists_and_changes_nothing(aws):
    dead_letter(aws, "u-1", ("eventbridge",))
    code, output = run(aws, "--event-bus", "rules", "--dry-run")
    assert code == 0
    assert "would redeliver r-1#u-1#1 (qualified trk_purchase) to eventbridge" in output
    assert "1 message(s) read: 1 would be redelivered" in output
    assert len(queue_bodies(aws, "dlq")) == 1 and queue_bodies(aws, "bus_queue") == []
    assert status(aws, "u-1") == "dead_lettered"


def test_replay_redelivers_deletes_and_keeps_what_it_cannot_deliver(aws):
    dead_letter(aws, "u-1", ("eventbridge",))
    dead_letter(aws, "u-2", ("eventbridge", "pinpoint"))  # no Pinpoint project given: stays
    dead_letter(aws, "u-3", ("eventbridge",), delivered=("eventbridge",))  # done by an earlier run
    aws["sqs"].send_message(QueueUrl=aws["dlq"], MessageBody='{"something": "else"}')

    code, output = run(aws, "--event-bus", "rules")
    assert code == 1
    assert "4 message(s) read: 2 redelivered and deleted, 2 kept in the queue" in output
    assert "kept: r-1#u-2#1: sink(s) pinpoint not configured for this replay" in output
    assert "not a dispatcher dead letter" in output
    published = [json.loads(body)["detail"] for body in queue_bodies(aws, "bus_queue")]
    assert [(detail["key"], detail["name"]) for detail in published] == [("r-1#u-1#1", "trk_purchase")]
    assert status(aws, "u-1") == "delivered" and status(aws, "u-2") == "dead_lettered"
    assert len(queue_bodies(aws, "dlq")) == 2  # the kept messages are visible again at once


def test_a_sink_failing_again_keeps_the_message(aws):
    dead_letter(aws, "u-1", ("eventbridge",))
    code, output = run(aws, "--event-bus", "no-such-bus", "--max", "5")
    assert code == 1 and "kept: r-1#u-1#1: failed again: eventbridge: PutEvents failed" in output
    [body] = queue_bodies(aws, "dlq")
    assert DeadLetter.from_json(body).entry == entry("u-1")


# --- Supersede rule: a replay never undoes a later change ----------------------------------------------


def published(aws: dict[str, Any]) -> list[tuple[str, str]]:
    return [(json.loads(body)["detail-type"], json.loads(body)["detail"]["key"]) for body in queue_bodies(aws, "bus_queue")]


def test_a_qualification_whose_exit_was_delivered_is_skipped_and_said_so(aws):
    dead_letter(aws, attribute_change("u-1", 1), ("eventbridge",))
    delivered(aws, attribute_change("u-1", 1, exit=True))

    code, output = run(aws, "--event-bus", "rules")
    assert code == 0, output
    assert ("skipped r-w#u-1#1 (qualified active) for eventbridge: superseded by r-w#u-1#exit#1 "
            "(delivered to eventbridge)") in output
    assert "1 message(s) read: 0 redelivered and deleted, 0 kept in the queue, 1 skipped as superseded" in output
    assert published(aws) == []  # the user is not marked ready again after leaving
    assert queue_bodies(aws, "dlq") == []
    assert stored_status(aws, "r-w#u-1#1") == "superseded"


def test_another_users_changes_never_supersede_even_when_their_ids_look_like_keys(aws):
    dead_letter(aws, attribute_change("alice", 1), ("eventbridge",))
    dead_letter(aws, attribute_change("a#b", 1), ("eventbridge",))
    delivered(aws, attribute_change("alice#exit", 1))
    delivered(aws, attribute_change("alice#exit", 1, exit=True))
    delivered(aws, attribute_change("a%23b", 1, exit=True))
    # written before keys were escaped: user alice#exit's qualification 1, where alice's exit 1 would be
    delivered(aws, OutboxEntry(**{**vars_of(attribute_change("alice#exit", 1)), "key": "r-w#alice#exit#1"}))

    code, output = run(aws, "--event-bus", "rules")
    assert code == 0, output
    assert "2 message(s) read: 2 redelivered and deleted, 0 kept in the queue, 0 skipped as superseded" in output
    assert sorted(key for _, key in published(aws)) == ["r-w#a%23b#1", "r-w#alice#1"]


def test_a_change_written_before_keys_were_escaped_is_still_superseded(aws):
    # Dead-lettered under the old key form (user part unescaped) while the exit was written under the new one,
    # and the other way round: the outbox's 30-day retention and the queue hold both forms for a while.
    legacy_qualification = OutboxEntry(**{**vars_of(attribute_change("a#b", 1)), "key": "r-w#a#b#1"})
    dead_letter(aws, legacy_qualification, ("eventbridge",))
    delivered(aws, attribute_change("a#b", 1, exit=True))
    dead_letter(aws, attribute_change("50%", 1), ("eventbridge",))
    delivered(aws, OutboxEntry(**{**vars_of(attribute_change("50%", 1, exit=True)), "key": "r-w#50%#exit#1"}))

    code, output = run(aws, "--event-bus", "rules")
    assert code == 0, output
    assert "2 message(s) read: 0 redelivered and deleted, 0 kept in the queue, 2 skipped as superseded" in output
    assert "superseded by r-w#a%23b#exit#1" in output and "superseded by r-w#50%#exit#1" in output
    assert published(aws) == []


def vars_of(entry: OutboxEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in OutboxEntry.__slots__}


def test_a_later_requalification_also_supersedes_and_the_walk_reaches_the_newest(aws):
    dead_letter(aws, attribute_change("u-1", 1, exit=True), ("eventbridge",))
    delivered(aws, attribute_change("u-1", 2))
    delivered(aws, attribute_change("u-1", 2, exit=True))
    delivered(aws, attribute_change("u-1", 3))

    code, output = run(aws, "--event-bus", "rules")
    assert code == 0 and "superseded by r-w#u-1#3 (delivered to eventbridge)" in output
    assert published(aws) == []


@pytest.mark.parametrize("exit_first", [True, False], ids=["exit-read-first", "qualification-read-first"])
def test_when_both_are_dead_lettered_only_the_exit_is_delivered_in_whatever_order_they_are_read(aws, exit_first):
    qualification, exit_change = attribute_change("u-1", 1), attribute_change("u-1", 1, exit=True)
    for change in ((exit_change, qualification) if exit_first else (qualification, exit_change)):
        dead_letter(aws, change, ("eventbridge",))

    code, output = run(aws, "--event-bus", "rules")
    assert code == 0, output
    assert published(aws) == [("RuleExited", "r-w#u-1#exit#1")]
    assert "redelivered r-w#u-1#exit#1 to eventbridge" in output
    assert "skipped r-w#u-1#1 (qualified active) for eventbridge: superseded by r-w#u-1#exit#1" in output
    assert stored_status(aws, "r-w#u-1#1") == "superseded" and stored_status(aws, "r-w#u-1#exit#1") == "delivered"
    assert queue_bodies(aws, "dlq") == []


def test_dry_run_says_what_it_would_skip_and_why(aws):
    dead_letter(aws, attribute_change("u-1", 1), ("eventbridge",))
    dead_letter(aws, attribute_change("u-1", 1, exit=True), ("eventbridge",))
    dead_letter(aws, attribute_change("u-2", 1), ("eventbridge",))
    delivered(aws, attribute_change("u-2", 1, exit=True))

    code, output = run(aws, "--event-bus", "rules", "--dry-run")
    assert code == 0, output
    assert ("would skip r-w#u-1#1 (qualified active) for eventbridge: superseded by r-w#u-1#exit#1 "
            "(dead-lettered too, it is replayed on its own)") in output
    assert "would skip r-w#u-2#1 (qualified active) for eventbridge: superseded by r-w#u-2#exit#1 (delivered" in output
    assert "would redeliver r-w#u-1#exit#1 (exited active) to eventbridge" in output
    assert "3 message(s) read: 1 would be redelivered, 0 could not be, 2 would be skipped as superseded" in output
    assert published(aws) == [] and len(queue_bodies(aws, "dlq")) == 3
    assert stored_status(aws, "r-w#u-1#1") == "dead_lettered"


def test_a_pending_later_change_supersedes_too(aws):
    dead_letter(aws, attribute_change("u-1", 1), ("eventbridge",))
    store(aws, attribute_change("u-1", 1, exit=True).to_item())  # the dispatcher (or reconciler) has it next
    code, output = run(aws, "--event-bus", "rules")
    assert code == 0 and "superseded by r-w#u-1#exit#1 (pending" in output
    assert published(aws) == []


def test_event_actions_are_never_superseded_each_one_replays(aws):
    first = entry("u-1")
    second = OutboxEntry(key="r-1#u-1#2", change=Change.QUALIFIED, rule_id="r-1", user_id="u-1",
                         action=ActionKind.EVENT, name="trk_purchase", value=None, event_id="evt-2",
                         event_time_ms=EVENT_TIME_MS + 500, created_ms=EVENT_TIME_MS + 510)
    dead_letter(aws, first, ("eventbridge",))
    delivered(aws, second)
    code, output = run(aws, "--event-bus", "rules")
    assert code == 0 and "superseded" not in output.replace("0 skipped as superseded", "")
    assert published(aws) == [("RuleQualified", "r-1#u-1#1")]


def test_the_outbox_table_is_required(aws, capsys):
    with pytest.raises(SystemExit):
        build_parser({"actions": "cli.actions"}).parse_args(["actions", "replay", "--queue-url", aws["dlq"]])
    assert "--outbox-table" in capsys.readouterr().err


def test_a_later_change_delivered_while_the_replay_calls_the_sink_is_delivered_again_after_it(aws):
    from cli.actions import replay_dead_letters
    from functions.rules.dispatcher import NO_RETRY_DELAY
    from functions.rules.outbox_table import OutboxTable

    qualification, later = attribute_change("u-1", 1), attribute_change("u-1", 1, exit=True)
    dead_letter(aws, qualification, ("recording",))

    class SlowTarget:
        name = "recording"
        calls: list[str] = []

        def deliver(self, entry: OutboxEntry) -> None:
            if not self.calls:  # meanwhile the exit is created and delivered by the dispatcher
                delivered(aws, later, ("recording",))
                self.calls.append(later.key)
            self.calls.append(entry.key)

    target, out = SlowTarget(), io.StringIO()
    summary = replay_dead_letters(aws["sqs"], aws["dlq"], {"recording": target}, OutboxTable(aws["dynamodb"], "outbox"),
                                  out=out, retry=NO_RETRY_DELAY)
    assert summary.redelivered == 1
    assert target.calls == [later.key, qualification.key, later.key]  # the exit is what the target holds
    assert f"{later.key}, a later change that appeared meanwhile, was delivered again after it" in out.getvalue()


@pytest.mark.parametrize(("url", "region"), [
    ("https://sqs.eu-west-3.amazonaws.com/123456789012/dlq", "eu-west-3"),
    ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/dlq", "cn-north-1"),
    ("https://ap-south-1.queue.amazonaws.com/123456789012/dlq", "ap-south-1"),
    ("http://localhost:4566/000000000000/dlq", None),
])
def test_the_region_comes_from_the_queue_url(url, region):
    from cli.actions import region_from_queue_url

    assert region_from_queue_url(url) == region


def test_replay_uses_the_queue_urls_region_when_none_is_configured(aws, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    dead_letter(aws, "u-1", ("eventbridge",))
    code, output = run(aws, "--event-bus", "rules", "--dry-run")
    assert code == 0 and "1 message(s) read: 1 would be redelivered" in output


def test_missing_credentials_are_reported_in_one_line(monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    args = build_parser({"actions": "cli.actions"}).parse_args(
        ["actions", "replay", "--queue-url", "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq",
         "--outbox-table", "outbox"])
    assert args.func(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("actions replay: no AWS credentials found: run `aws configure`")


class StubbedProfilesSession:
    """The moto session, except that Customer Profiles (which moto lacks) is a Stubber-checked client."""

    def __init__(self, profiles: Any) -> None:
        import boto3

        self._session = boto3.session.Session(region_name=REGION)
        self.profiles = profiles
        self.region_name = REGION

    def get_credentials(self) -> Any:
        return self._session.get_credentials()

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.profiles if service == "customer-profiles" else self._session.client(service, **kwargs)


def test_the_connect_sinks_are_the_dispatchers_own_built_from_the_flags(aws, monkeypatch):
    from cli.actions import replay_sinks
    from functions.rules.profile_objects import ProfileObjectSink, UnknownUsers

    monkeypatch.setenv("CONNECT_OBJECT_TYPE", "FromEnv")
    args = build_parser({"actions": "cli.actions"}).parse_args(
        ["actions", "replay", "--queue-url", aws["dlq"], "--outbox-table", "outbox", "--connect-domain", "d",
         "--connect-profile-key", "user_id", "--connect-unknown-users", "create"])
    sinks = replay_sinks(args, StubbedProfilesSession(object()))
    assert list(sinks) == ["customer_profiles_objects", "customer_profiles"]  # create mode: the object first; no bus
    objects = sinks["customer_profiles_objects"]
    assert isinstance(objects, ProfileObjectSink)
    assert (objects._type, objects._key, objects._unknown) == ("FromEnv", "user_id", UnknownUsers.CREATE)


@pytest.mark.parametrize("source", ["flag", "environment"])
def test_a_bad_unknown_users_mode_is_refused_naming_the_choices(aws, monkeypatch, capsys, source):
    flags = ["--connect-unknown-users", "always"] if source == "flag" else []
    if source == "environment":
        monkeypatch.setenv("CONNECT_UNKNOWN_USERS", "always")
    with pytest.raises(SystemExit):
        build_parser({"actions": "cli.actions"}).parse_args(
            ["actions", "replay", "--queue-url", aws["dlq"], "--outbox-table", "outbox", *flags])
    err = capsys.readouterr().err
    assert "--connect-unknown-users" in err and "'always' is invalid: expected one of skip, create" in err


def test_a_dead_lettered_profile_object_is_replayed_and_creates_the_profile_in_create_mode(aws):
    import boto3
    from botocore.config import Config
    from botocore.stub import Stubber

    from functions.rules.profile_objects import object_json

    change = entry("u-7")
    dead_letter(aws, change, ("customer_profiles_objects",), delivered=("eventbridge", "customer_profiles"))
    client = boto3.client("customer-profiles", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))
    with Stubber(client) as stub:
        stub.add_response("search_profiles", {"Items": []},
                          {"DomainName": "engagement", "KeyName": "_account", "Values": ["u-7"]})
        stub.add_response("put_profile_object", {"ProfileObjectUniqueKey": "k"},
                          {"DomainName": "engagement", "ObjectTypeName": "EngagementLoopQualification",
                           "Object": object_json(change)})
        args = build_parser({"actions": "cli.actions"}).parse_args(
            ["actions", "replay", "--queue-url", aws["dlq"], "--outbox-table", "outbox",
             "--connect-domain", "engagement", "--connect-unknown-users", "create"])
        out = io.StringIO()
        code = args.func(args, session=StubbedProfilesSession(client), out=out)
        stub.assert_no_pending_responses()
    assert code == 0 and f"redelivered {change.key} to customer_profiles_objects" in out.getvalue()
    assert stored_status(aws, change.key) == "delivered"
    assert queue_bodies(aws, "dlq") == []


def test_a_superseded_dead_letter_still_writes_its_object_but_not_the_attribute(aws):
    # The exit was delivered meanwhile: the attribute (state) is the exit's, but the qualification's own object is
    # still written (it may start a campaign); the entry ends superseded.
    import boto3
    from botocore.config import Config
    from botocore.stub import Stubber

    from functions.rules.profile_objects import object_json

    change = attribute_change("u-1", 1)
    dead_letter(aws, change, ("customer_profiles", "customer_profiles_objects"))
    delivered(aws, attribute_change("u-1", 1, exit=True))
    client = boto3.client("customer-profiles", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))
    with Stubber(client) as stub:  # no UpdateProfile: only the object's search and put
        stub.add_response("search_profiles", {"Items": [{"ProfileId": "p-1"}]},
                          {"DomainName": "engagement", "KeyName": "_account", "Values": ["u-1"]})
        stub.add_response("put_profile_object", {"ProfileObjectUniqueKey": "k"},
                          {"DomainName": "engagement", "ObjectTypeName": "EngagementLoopQualification",
                           "Object": object_json(change)})
        args = build_parser({"actions": "cli.actions"}).parse_args(
            ["actions", "replay", "--queue-url", aws["dlq"], "--outbox-table", "outbox",
             "--connect-domain", "engagement"])
        out = io.StringIO()
        code = args.func(args, session=StubbedProfilesSession(client), out=out)
        stub.assert_no_pending_responses()
    assert code == 0 and f"redelivered {change.key} to customer_profiles_objects" in out.getvalue()
    assert stored_status(aws, change.key) == "superseded"
    assert queue_bodies(aws, "dlq") == []


def test_a_not_yet_letter_stays_until_the_profile_exists_and_the_sinks_go_in_the_configured_order(aws):
    # The letter lists the attribute sink first (as a dispatcher of this release never writes it); the replay still
    # puts the object first, keeps the message while the attribute sink has no profile, and delivers it later.
    from cli.actions import replay_dead_letters
    from functions.rules.dispatcher import NO_RETRY_DELAY
    from functions.rules.outbox_table import OutboxTable
    from functions.rules.sinks import NotYet
    from tests.functions.rules.test_dispatcher import FakeSink

    change = entry("u-9")
    dead_letter(aws, change, ("customer_profiles", "customer_profiles_objects"))
    calls: list[str] = []

    class Recording(FakeSink):
        def deliver(self, entry):
            calls.append(self.name)
            return super().deliver(entry)

    objects = Recording("customer_profiles_objects", last_writer_wins=False)
    attributes = Recording("customer_profiles", skip=NotYet("no profile yet"))
    sinks = {"customer_profiles_objects": objects, "customer_profiles": attributes}
    outbox = OutboxTable(aws["dynamodb"], "outbox")
    out = io.StringIO()
    summary = replay_dead_letters(aws["sqs"], aws["dlq"], sinks, outbox, out=out, retry=NO_RETRY_DELAY)
    assert calls == ["customer_profiles_objects", "customer_profiles"]
    assert summary.redelivered == 0 and "failed again: customer_profiles: no profile yet" in summary.left[0]
    assert stored_status(aws, change.key) == "dead_lettered"  # kept (not read here: that would hide it)
    waited = aws["dynamodb"].get_item(TableName="outbox", Key={"pk": {"S": change.key}})["Item"]["waiting_since_ms"]

    attributes.skip = None  # the profile exists now
    summary = replay_dead_letters(aws["sqs"], aws["dlq"], sinks, outbox, out=out, retry=NO_RETRY_DELAY)
    assert calls == ["customer_profiles_objects", "customer_profiles", "customer_profiles"]  # no second object
    assert summary.redelivered == 1 and stored_status(aws, change.key) == "delivered"
    assert queue_bodies(aws, "dlq") == []
    assert aws["dynamodb"].get_item(TableName="outbox", Key={"pk": {"S": change.key}})["Item"][
        "waiting_since_ms"] == waited


def test_a_superseded_letter_whose_object_sink_is_not_configured_here_is_kept(aws):
    # Without --connect-domain the replay cannot write the object the superseded change still owes: the message
    # stays (it must not be deleted as superseded, which would drop the object for good).
    change = attribute_change("u-1", 1)
    dead_letter(aws, change, ("eventbridge", "customer_profiles_objects"))
    delivered(aws, attribute_change("u-1", 1, exit=True))
    code, output = run(aws, "--event-bus", "rules")
    assert code == 1
    assert "sink(s) customer_profiles_objects not configured for this replay" in output
    assert "not redelivered to eventbridge: superseded by r-w#u-1#exit#1" in output
    assert len(queue_bodies(aws, "dlq")) == 1 and stored_status(aws, change.key) == "dead_lettered"
    assert published(aws) == []


def _waiting_replay(aws, *, object_delivered: bool, waited_hours: float):
    """A letter for the object and attribute sinks of `u-8`; the attribute sink never finds a profile."""
    from cli.actions import replay_dead_letters
    from functions.rules.dispatcher import NO_RETRY_DELAY
    from functions.rules.outbox_table import OutboxTable
    from functions.rules.sinks import NotYet
    from tests.functions.rules.test_dispatcher import FakeSink

    change = entry("u-8")
    dead_letter(aws, change, ("customer_profiles_objects", "customer_profiles"),
                delivered=("customer_profiles_objects",) if object_delivered else ())
    started = int(time.time() * 1000 - waited_hours * 3_600_000)
    aws["dynamodb"].update_item(TableName="outbox", Key={"pk": {"S": change.key}},
                                UpdateExpression="SET waiting_since_ms = :w", ExpressionAttributeValues={
                                    ":w": {"N": str(started)}})
    sinks = {"customer_profiles_objects": FakeSink("customer_profiles_objects", last_writer_wins=False),
             "customer_profiles": FakeSink("customer_profiles", skip=NotYet("no profile yet"))}
    out = io.StringIO()
    summary = replay_dead_letters(aws["sqs"], aws["dlq"], sinks, OutboxTable(aws["dynamodb"], "outbox"), out=out,
                                  retry=NO_RETRY_DELAY)
    return change, summary, out.getvalue(), started


def test_the_replay_measures_the_wait_from_when_it_began(aws):
    # The object is there already and the wait began two hours ago: the attribute is skipped, said so, and done.
    change, summary, output, _ = _waiting_replay(aws, object_delivered=True, waited_hours=2)
    assert summary.redelivered == 1 and stored_status(aws, change.key) == "delivered"
    assert (f"redelivered {change.key} to customer_profiles (skipped: no profile yet, but none appeared within "
            "60 minutes)") in output
    assert queue_bodies(aws, "dlq") == []


def test_a_replay_that_puts_the_object_starts_the_wait_afresh(aws):
    # The object put failed live (hours ago); the replay puts it now, so the profile is only now on its way: the
    # attribute waits (message kept) and the wait restarts, however old an earlier start.
    change, summary, output, started = _waiting_replay(aws, object_delivered=False, waited_hours=2)
    assert summary.redelivered == 0 and "failed again: customer_profiles: no profile yet" in summary.left[0]
    item = aws["dynamodb"].get_item(TableName="outbox", Key={"pk": {"S": change.key}})["Item"]
    assert int(item["waiting_since_ms"]["N"]) > started + 3_600_000
    assert item["delivered_sinks"]["SS"] == ["customer_profiles_objects"]
