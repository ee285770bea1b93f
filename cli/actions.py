"""`python -m cli actions …`: operate the RuleEngine's action delivery on a deployed stack.

`actions replay --queue-url URL` reads the dispatcher's dead-letter queue (real AWS, boto3's default
session: profile, region and credentials as for the AWS CLI) and redelivers each entry to the sinks that
failed, with the dispatcher's own code. A message is deleted only once every one of its failed sinks has
the entry; one that fails again stays in the queue (visible again when the run ends) with its errors
printed. Sinks the outbox already lists as delivered (e.g. done by an earlier replay that could not delete
its message) are not called again.

Supersede rule (docs/actions.md): attribute actions are last-writer-wins at every target, so an attribute
change is not replayed when the outbox holds a later change of the same rule and user (the later exit or
qualification, whatever became of it: delivered, pending, or dead-lettered too and replayed on its own).
The message is deleted, the entry marked `superseded`, and the output says which change superseded it.
A later change that appears while the entry is being redelivered is delivered again after it
(`dispatcher.reassert_later`), so the later change still wins.
"Later" comes from the entry keys (qualification n, exit n, qualification n+1 …), read in the outbox with
strongly consistent reads, so neither clocks nor the order the queue hands messages out in matter.
`trk_…` event actions are each their own action and always replay. `--dry-run` prints what would be
redelivered and what would be skipped, and changes nothing.

Targets come from flags, else the dispatcher's environment variables: `--event-bus` (`EVENT_BUS_NAME`),
`--pinpoint-app` (`PINPOINT_APPLICATION_ID`), `--connect-domain` (`CONNECT_DOMAIN_NAME`: the profile
attribute sink `customer_profiles` and the profile object sink `customer_profiles_objects`),
`--connect-profile-key` (`CONNECT_PROFILE_KEY`), `--connect-object-type` (`CONNECT_OBJECT_TYPE`),
`--connect-unknown-users` (`CONNECT_UNKNOWN_USERS`: `skip` or `create`), `--outbox-table` (`OUTBOX_TABLE`;
required: without it neither progress nor later changes can be known). The sinks are built by the
dispatcher's own `build_sinks`, so a replay writes exactly what the dispatcher would; a later change is
delivered again only to last-writer-wins sinks, never as a second profile object. A message naming a sink
that is not configured here stays.
The region is the queue's, read from its URL (`https://sqs.<region>.amazonaws.com/…`); the outbox and the
sinks are in the same stack, so in the same region. Credentials come from boto3's default chain; when there
are none the command says so in one line and exits 2 before any call.
Exit status: 0 when every message read was redelivered or skipped as superseded (or, dry run, could be),
1 otherwise, 2 without credentials or a region.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, TextIO

from cli.dead_letters import DeadLetterPass

EXIT_OK, EXIT_LEFT, EXIT_PROBLEMS = 0, 1, 2
# sqs.<region>.amazonaws.com[.cn] (today's endpoints) and <region>.queue.amazonaws.com (the legacy ones).
_QUEUE_URL_REGION = re.compile(r"https?://(?:sqs\.(?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?/",
                               re.IGNORECASE)
NO_CREDENTIALS = ("no AWS credentials found: run `aws configure` or `aws sso login`, or set AWS_PROFILE "
                  "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), and run again")


def region_from_queue_url(url: str) -> str | None:
    """The region of an SQS queue URL, None when the URL does not name one."""
    match = _QUEUE_URL_REGION.match(url.strip())
    return (match.group("a") or match.group("b")).lower() if match else None


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("actions", help="rule action delivery", description=__doc__.splitlines()[0])
    commands = group.add_subparsers(dest="command", required=True, metavar="{replay}")
    replay = commands.add_parser("replay", help="redeliver the dispatcher's dead letters to the sinks that failed",
                                 description=__doc__.split("\n\n")[1])
    replay.add_argument("--queue-url", required=True, metavar="URL", help="the dispatcher's dead-letter queue")
    replay.add_argument("--max", type=int, default=None, metavar="N", help="read at most N messages (default all)")
    replay.add_argument("--dry-run", action="store_true", help="print what would be redelivered; change nothing")
    env = os.environ.get
    replay.add_argument("--event-bus", default=env("EVENT_BUS_NAME"), metavar="NAME",
                        help="EventBridge bus (default $EVENT_BUS_NAME)")
    replay.add_argument("--pinpoint-app", default=env("PINPOINT_APPLICATION_ID"), metavar="ID",
                        help="Pinpoint project id (default $PINPOINT_APPLICATION_ID)")
    replay.add_argument("--connect-domain", default=env("CONNECT_DOMAIN_NAME"), metavar="NAME",
                        help="Customer Profiles domain (default $CONNECT_DOMAIN_NAME)")
    replay.add_argument("--connect-profile-key", default=env("CONNECT_PROFILE_KEY") or "_account", metavar="KEY",
                        help="profile search key holding the user id (default $CONNECT_PROFILE_KEY, else _account)")
    replay.add_argument("--connect-object-type", default=env("CONNECT_OBJECT_TYPE") or "EngagementLoopQualification",
                        metavar="NAME", help="profile object type of the qualification objects (default "
                                             "$CONNECT_OBJECT_TYPE, else EngagementLoopQualification)")
    replay.add_argument("--connect-unknown-users", type=_unknown_users,
                        default=env("CONNECT_UNKNOWN_USERS") or "skip",
                        metavar="{skip,create}", help="a user without a profile: skip, or create the profile with "
                                                      "the object (default $CONNECT_UNKNOWN_USERS, else skip)")
    replay.add_argument("--outbox-table", default=env("OUTBOX_TABLE"), required=not env("OUTBOX_TABLE"),
                        metavar="NAME", help="outbox table: sinks already done, later changes, progress "
                                             "(default $OUTBOX_TABLE)")
    replay.set_defaults(func=replay_command)


def _unknown_users(raw: str) -> Any:
    from functions.rules.profile_objects import UnknownUsers

    try:
        return UnknownUsers(raw.strip())
    except ValueError:
        choices = ", ".join(mode.value for mode in UnknownUsers)
        raise argparse.ArgumentTypeError(f"{raw!r} is invalid: expected one of {choices} (the flag, else "
                                         "$CONNECT_UNKNOWN_USERS)") from None


@dataclass
class ReplaySummary:
    """What a run did, message by message."""

    redelivered: int = 0
    would_redeliver: int = 0
    superseded: list[str] = field(default_factory=list)
    """One line per message skipped (or, dry run, to be skipped) because a later change supersedes it."""
    left: list[str] = field(default_factory=list)
    """One line per message that stays in the queue, saying why."""

    @property
    def read(self) -> int:
        return self.redelivered + self.would_redeliver + len(self.superseded) + len(self.left)


def replay_command(args: argparse.Namespace, *, session: Any = None, out: TextIO | None = None,
                   err: TextIO | None = None) -> int:
    import boto3

    out, err = out or sys.stdout, err or sys.stderr
    region = region_from_queue_url(args.queue_url)
    session = session or boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        print(f"actions replay: {NO_CREDENTIALS}", file=err)
        return EXIT_PROBLEMS
    if not session.region_name:
        print(f"actions replay: {args.queue_url!r} names no region (expected https://sqs.<region>.amazonaws.com/"
              "<account>/<queue>); pass the queue's URL as the console or the stack output shows it, or set "
              "AWS_REGION", file=err)
        return EXIT_PROBLEMS
    return _replay(args, session, out)


def _replay(args: argparse.Namespace, session: Any, out: TextIO) -> int:
    from functions.rules.outbox_table import OutboxTable

    sinks = replay_sinks(args, session)
    outbox = OutboxTable(session.client("dynamodb"), args.outbox_table)
    summary = replay_dead_letters(session.client("sqs"), args.queue_url, sinks, outbox,
                                  max_messages=args.max, dry_run=args.dry_run, out=out)
    for line in summary.left:
        print(f"kept: {line}", file=out)
    if args.dry_run:
        print(f"{summary.read:,} message(s) read: {summary.would_redeliver:,} would be redelivered, "
              f"{len(summary.left):,} could not be, {len(summary.superseded):,} would be skipped as superseded; "
              "nothing was changed", file=out)
    else:
        print(f"{summary.read:,} message(s) read: {summary.redelivered:,} redelivered and deleted, "
              f"{len(summary.left):,} kept in the queue, {len(summary.superseded):,} skipped as superseded and "
              "deleted",
              file=out)
    return EXIT_OK if not summary.left else EXIT_LEFT


def replay_sinks(args: argparse.Namespace, session: Any) -> dict[str, Any]:
    """The sinks the flags configure, by name, built by the dispatcher's `build_sinks`; EventBridge only with
    `--event-bus` (the dispatcher always has a bus, a replay need not)."""
    from functions.rules.dispatcher import DispatcherSettings, build_sinks
    from functions.rules.sinks import EventBridgeSink

    settings = DispatcherSettings(
        outbox_table=args.outbox_table, event_bus_name=args.event_bus or "", dead_letter_queue_url=args.queue_url,
        pinpoint_application_id=args.pinpoint_app or None, connect_domain_name=args.connect_domain or None,
        connect_profile_key=args.connect_profile_key, connect_object_type=args.connect_object_type,
        connect_unknown_users=args.connect_unknown_users)
    return {sink.name: sink for sink in build_sinks(settings, session)
            if args.event_bus or sink.name != EventBridgeSink.name}


def replay_dead_letters(sqs: Any, queue_url: str, sinks: Mapping[str, Any], outbox: Any, *,
                        max_messages: int | None = None, dry_run: bool = False, out: TextIO,
                        retry: Any = None) -> ReplaySummary:
    """Redeliver dead letters from `queue_url` to `sinks` (by name) and record progress in `outbox` (the
    dispatcher's `OutboxTable`); see the module docstring."""
    from functions.rules.dispatcher import DeadLetter, RetryPolicy, dispatch, reassert_later, record_wait
    from functions.rules.outbox import DeliveryStatus
    from functions.rules.profile_objects import ProfileObjectSink
    from functions.rules.sinks import is_last_writer_wins

    occurrence_sinks = frozenset({ProfileObjectSink.name})

    retry = retry or RetryPolicy()
    summary = ReplaySummary()
    queue = DeadLetterPass(sqs, queue_url, max_messages=max_messages)
    for message in queue.messages():
        message_id = message["MessageId"]
        try:
            letter = DeadLetter.from_json(message["Body"])
        except ValueError as error:
            summary.left.append(f"message {message_id}: {error}")
            queue.keep(message)
            continue
        entry = letter.entry
        progress = outbox.progress(entry.key)
        # In the configured sinks' order (the object sink, which creates a profile, before the attribute sink
        # that waits for it), whatever order the letter lists them in; unconfigured ones after, to be reported.
        failed = [name for name in letter.failed_sinks if name not in progress.delivered]
        pending = [name for name in sinks if name in failed] + [name for name in failed if name not in sinks]
        settled = DeliveryStatus.DELIVERED
        # Standard queues hand messages out in any order, so "later" is asked of the outbox, per message.
        later = outbox.later_change(entry) if pending else None
        if later is not None:
            # A later change supersedes the state sinks only; an occurrence sink (the profile object) still
            # gets this change's own record, as in dispatcher.handle_entry. Known by name too, so a replay not
            # configured for it keeps the message rather than drop the object.
            occurrences = [name for name in pending if name in occurrence_sinks
                           or (name in sinks and not is_last_writer_wins(sinks[name]))]
            if occurrences:
                state = [name for name in pending if name not in occurrences]
                if state:
                    print(f"{entry.key}: not redelivered to {', '.join(state)}: superseded by {later.describe()}",
                          file=out)
                pending, later, settled = occurrences, None, DeliveryStatus.SUPERSEDED
        if later is not None:
            what = (f"{entry.key} ({entry.change.value} {entry.name}) for {', '.join(pending)}: "
                    f"superseded by {later.describe()}")
            summary.superseded.append(what)
            if dry_run:
                print(f"would skip {what}", file=out)
                queue.keep(message)
            else:
                outbox.set_status(entry.key, DeliveryStatus.SUPERSEDED, _now_ms())
                queue.done(message)
                print(f"skipped {what}", file=out)
            continue
        missing = [name for name in pending if name not in sinks]
        if missing:
            summary.left.append(f"{entry.key}: sink(s) {', '.join(missing)} not configured for this replay")
            queue.keep(message)
            continue
        if dry_run:
            print(f"would redeliver {entry.key} ({entry.change.value} {entry.name}) to "
                  f"{', '.join(pending) or 'nothing (already delivered)'}", file=out)
            summary.would_redeliver += 1
            queue.keep(message)
            continue
        result = dispatch(entry, frozenset(), [sinks[name] for name in pending], log=outbox, retry=retry,
                          waiting_since_ms=progress.waiting_since_ms)
        # The next replay measures the wait from its start (restarted when the object was put just now).
        record_wait(outbox, entry.key, result, [sinks[name] for name in pending], _now_ms(), pending=False)
        # The supersede check above came before the sink calls: a later change delivered meanwhile must win.
        reasserted = reassert_later(entry, [sinks[name] for name in result.delivered], outbox, retry=retry)
        if reasserted is not None:
            print(f"{entry.key}: {reasserted.key}, a later change that appeared meanwhile, was delivered again "
                  "after it", file=out)
        if not result.complete:
            # Each error names its sink; a not-yet sink (no profile created yet) is asked again by a later replay.
            waiting = (f"{name}: {reason}" for name, reason in result.not_yet.items())
            errors = "; ".join([*result.failed.values(), *waiting])
            summary.left.append(f"{entry.key}: failed again: {errors}")
            queue.keep(message)
            continue
        outbox.set_status(entry.key, settled, _now_ms())
        queue.done(message)
        summary.redelivered += 1
        skipped = dict(result.skipped)
        targets = [f"{name} (skipped: {skipped[name]})" if name in skipped else name for name in pending]
        print(f"redelivered {entry.key} to {', '.join(targets) or 'nothing (already delivered)'}", file=out)
    queue.release()
    return summary


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000
