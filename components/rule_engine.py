"""RuleEngine: real-time per-user counters for the rules sheet, and the actions they trigger.

```
stream (+ app stream) ─► aggregator (counters + outbox, one DynamoDB transaction per (rule, user) and batch)
outbox stream ─► dispatcher ─► EventBridge (always) / Pinpoint / Customer Profiles ─► dead letters
schedules: sweeper (window-rule exits), backfill (new date/window rules, from the lake),
           reconciler (outbox entries still pending after RECONCILE_AFTER_SECONDS, via the pending index)
```

The rules are published as a JSON document next to the lake; the functions re-read it within a minute,
so a changed sheet needs `pulumi up` but no function redeploy, and the change shows in the diff.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.config import RulesConfig
from components.event_stream_pipeline import LakeAccess
from components.iam import Statement
from components.notifications import notify
from components.python_function import PythonFunctionArgs
from components.scheduled_function import ScheduledFunction, ScheduledFunctionArgs
from components.stream_consumer import (
    SourceKind,
    StreamConsumer,
    StreamConsumerArgs,
    app_stream_environment,
    queue_depth_alarm,
    tls_only_queue_policy,
)
from functions.events.canonical import IdentityMode
from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.rules.backfill import BackfillCount
from functions.rules.outbox import (
    CREATED_MS,
    PARTITION_KEY,
    PENDING_INDEX,
    PENDING_SHARD,
    SWEEP_DAY,
    SWEEP_INDEX,
    TTL_ATTRIBUTE,
)
from functions.rules.reconcile import DEFAULT_PENDING_AFTER_SECONDS

RULES_KEY = "rules/rules.json"
SWEEP_SCHEDULE = "rate(15 minutes)"  # window-rule exits must happen within an hour
BACKFILL_SCHEDULE = "rate(15 minutes)"
BACKFILL_FAILING_HOURS = 2
"""Alarm when backfill queries failed in each of this many hours in a row (8 runs at BACKFILL_SCHEDULE): a query
that fails on every run, not one transient failure that the next run retries."""
RECONCILE_EVERY_MINUTES = 5
RECONCILE_SCHEDULE = f"rate({RECONCILE_EVERY_MINUTES} minutes)"
RECONCILE_AFTER_SECONDS = DEFAULT_PENDING_AFTER_SECONDS
"""Outbox entries pending longer than this are the reconciler's; younger ones are the live dispatcher's."""
EVENT_BUS = "default"


AGGREGATOR_MEMORY_MB = 1769
"""The aggregator function's memory size: one full vCPU. Lambda gives CPU in proportion to memory, one vCPU at
1,769 MB (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html), and the aggregator is
CPU-bound once its DynamoDB requests overlap (GROUP_CONCURRENCY). At 5 ms per request `python -m bench.aggregator`
(bench/results/aggregator.json) measures 2,110 events/s per invocation here (twice a shard's write limit, as
ParallelizationFactor 1 needs with a Pinpoint source) and models 690 at 512 MB; 2,000 needs 1,660 MB. The cost:
827 GB-s per million events against 727 at 512 MB with the same code, and 3,607 for the sequential aggregator
at 512 MB. More memory buys nothing: one Python process uses one vCPU at most."""


@dataclass(frozen=True, kw_only=True)
class RuleEngineArgs:
    """The rules, the stream they count and where their actions go."""

    region: str
    """The stack's region."""
    log_retention_days: int
    identity_mode: IdentityMode
    """How the aggregator finds the user of a record."""
    rules: RulesConfig
    """Parsed rules sheet, Customer Profiles domain and counter TTL, from stack config."""
    stream_arn: pulumi.Input[str]
    """The trusted engagement stream (EventStreamPipeline.stream)."""
    lake: LakeAccess
    """Where the rules are published and what the backfill queries; its key encrypts the tables."""
    alarm_topic_arn: pulumi.Input[str]
    """The stack's alarm topic (Notifications.topic_arn): every alarm of the engine notifies it. Required."""
    secret_environment: bool = False
    """True when the stack config holds secret values: every function's environment is kept as a Pulumi
    secret (encrypted in the state, hidden in previews). Default False."""
    pinpoint_project_id: str | None = None
    """Also set attributes / put `trk_` events in this Pinpoint project. Default: no."""
    app_stream_arn: pulumi.Input[str] | None = None
    """The app stream (EventStreamPipeline.app_stream), counted too but untrusted (docs/security.md). Default:
    none."""
    app_may_report: frozenset[str] = frozenset()
    """`appMayReport`: reserved push event types the app stream may still carry. Default none."""
    connect_object_type: pulumi.Input[str] | None = None
    """The Customer Profiles object type's name as created (ConnectProfileObjects.object_type_name), so the
    functions that write objects of it come after it. Default: `rules.connect.object_type_name`, unordered."""


class RuleEngine(pulumi.ComponentResource):
    """Counters, outbox, aggregator, dispatcher, sweeper and backfill for the rules sheet."""

    def __init__(self, name: str, args: RuleEngineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:rule_engine:RuleEngine", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        lake, region = args.lake, args.region
        account = pulumi.Output.from_input(lake.account_id)
        encryption = {"enabled": True, "kms_key_arn": lake.key_arn}
        # Reserving concurrency 1 keeps scheduled runs from overlapping, but Lambda rejects a reservation that
        # would leave the account's unreserved concurrency below 100, so it is opt-in (rulesReservedConcurrency).
        # Overlapping runs stay correct without it: the sweeper's and backfill's counter writes are conditional
        # on the version they read and their outbox entries on `attribute_not_exists`, so the loser of a race
        # re-reads or skips; the reconciler delivers through the dispatcher's handle_entry, which already runs
        # alongside the dispatcher itself (consistent re-read, `delivered_sinks`, conditional status writes).
        single_run = 1 if args.rules.reserve_concurrency else None

        self.counters = aws.dynamodb.Table(
            f"{name}-counters", billing_mode="PAY_PER_REQUEST", hash_key=PARTITION_KEY,
            attributes=[{"name": PARTITION_KEY, "type": "S"}, {"name": SWEEP_DAY, "type": "S"}],
            global_secondary_indexes=[{"name": SWEEP_INDEX, "hash_key": SWEEP_DAY, "range_key": PARTITION_KEY,
                                       "projection_type": "ALL"}],
            ttl={"attribute_name": TTL_ATTRIBUTE, "enabled": True}, point_in_time_recovery={"enabled": True},
            server_side_encryption=encryption, opts=child)
        # The sparse pending index: only entries still pending carry `pending_shard`, so one Query per shard
        # returns them oldest first (docs/actions.md). ALL: the reconciler re-dispatches from the index.
        self.outbox = aws.dynamodb.Table(
            f"{name}-outbox", billing_mode="PAY_PER_REQUEST", hash_key=PARTITION_KEY,
            attributes=[{"name": PARTITION_KEY, "type": "S"}, {"name": PENDING_SHARD, "type": "S"},
                        {"name": CREATED_MS, "type": "N"}],
            global_secondary_indexes=[{"name": PENDING_INDEX, "hash_key": PENDING_SHARD, "range_key": CREATED_MS,
                                       "projection_type": "ALL"}],
            stream_enabled=True, stream_view_type="NEW_IMAGE",
            ttl={"attribute_name": TTL_ATTRIBUTE, "enabled": True}, point_in_time_recovery={"enabled": True},
            server_side_encryption=encryption, opts=child)
        self.rules_object = aws.s3.BucketObjectv2(
            f"{name}-rules", bucket=lake.bucket, key=RULES_KEY, content=args.rules.rules.to_json(),
            content_type="application/json", opts=child)

        rules_arn = lake.object_arns(RULES_KEY)
        use_key = Statement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[lake.key_arn])
        read_rules = Statement(actions=["s3:GetObject"], resources=[rules_arn])
        # Every counter change is a conditional PutItem, alone or inside TransactWriteItems (authorised per item).
        counters_rw = Statement(actions=["dynamodb:GetItem", "dynamodb:PutItem"], resources=[self.counters.arn])
        # Outbox entries are only ever created (in the counter's transaction); the dispatcher marks them.
        outbox_create = Statement(actions=["dynamodb:PutItem"], resources=[self.outbox.arn])
        rules_env = {"COUNTERS_TABLE": self.counters.name, "OUTBOX_TABLE": self.outbox.name,
                     "RULES_BUCKET": lake.bucket, "RULES_KEY": RULES_KEY}

        self.aggregator = StreamConsumer(
            f"{name}-aggregator",
            StreamConsumerArgs(
                source_kind=SourceKind.KINESIS, source_arn=args.stream_arn, source_key_arn=lake.key_arn,
                failure_key_arn=lake.key_arn,
                # The app stream's mapping gets its own failure queue, to the function as APP_FAILURES_QUEUE_URL:
                # the aggregator sends the app stream's rejects there, away from the trusted queue's alarm.
                other_sources={"app": args.app_stream_arn} if args.app_stream_arn is not None else {},
                # Concurrent batches of one shard keep order per partition key only. Apps and SES partition by
                # user; Pinpoint's event stream does not promise to, and the counters' redelivery mark needs a
                # user's records applied in order.
                parallelization_factor=1 if args.pinpoint_project_id else 10,
                function=PythonFunctionArgs(
                    handler="functions.rules.aggregator.lambda_handler",
                    description="engagement-loop: count events per rule and user, exactly once",
                    region=region, log_retention_days=args.log_retention_days, alarm_topic_arn=args.alarm_topic_arn,
                    secret_environment=args.secret_environment, timeout_seconds=120,
                    memory_mb=AGGREGATOR_MEMORY_MB,
                    environment={**rules_env, "IDENTITY_MODE": args.identity_mode.value,
                                 # The aggregator tells the app stream's records by their eventSourceARN.
                                 **app_stream_environment(args.app_stream_arn, args.app_may_report),
                                 **({} if args.app_stream_arn is not None else {"APP_FAILURES_QUEUE_URL": ""}),
                                 "COUNTER_TTL_DAYS": str(args.rules.counter_ttl_days),
                                 "DEDUPE_HORIZON_HOURS": str(args.rules.dedupe_horizon_hours)},
                    # BatchGetItem: the concurrent aggregator reads a batch's counters in one request
                    # (CounterStore.read_many); the other counters functions do not.
                    statements=[counters_rw, Statement(actions=["dynamodb:BatchGetItem"], resources=[self.counters.arn]),
                                outbox_create, read_rules, use_key]),
            ),
            opts=child)

        self.dead_letters = aws.sqs.Queue(
            f"{name}-action-dead-letters", sqs_managed_sse_enabled=True,
            message_retention_seconds=14 * 24 * 3600, opts=child)
        tls_only_queue_policy(f"{name}-action-dead-letters-policy", self.dead_letters, child)
        queue_depth_alarm(f"{name}-action-dead-letters-depth", self.dead_letters,
                          "Rule actions no sink retry could deliver: redeliver with `python -m cli actions replay`",
                          args.alarm_topic_arn, child)
        sink_statements = [
            Statement(actions=["events:PutEvents"],
                      resources=[account.apply(lambda a: f"arn:aws:events:{region}:{a}:event-bus/{EVENT_BUS}")]),
        ]
        if args.pinpoint_project_id:
            project = args.pinpoint_project_id
            sink_statements.append(Statement(
                actions=["mobiletargeting:GetUserEndpoints", "mobiletargeting:UpdateEndpoint",
                         "mobiletargeting:PutEvents"],
                # These actions take the project's endpoints, users and events, never the project itself
                # (Service Authorization Reference, Amazon Pinpoint): the project's sub-resources only.
                resources=[account.apply(lambda a: f"arn:aws:mobiletargeting:{region}:{a}:apps/{project}/*")]))
        connect = args.rules.connect
        if connect is not None:
            domain, object_type = connect.domain_name, connect.object_type_name
            domain_arn = account.apply(lambda a: f"arn:aws:profile:{region}:{a}:domains/{domain}")
            sink_statements.append(Statement(
                actions=["profile:SearchProfiles", "profile:UpdateProfile"], resources=[domain_arn]))
            # PutProfileObject is authorised on the domain and on the object type (Service Authorization
            # Reference, Amazon Connect Customer Profiles): both, and only the stack's object type.
            sink_statements.append(Statement(
                actions=["profile:PutProfileObject"],
                resources=[domain_arn, account.apply(
                    lambda a: f"arn:aws:profile:{region}:{a}:domains/{domain}/object-types/{object_type}")]))
        # What delivering an entry takes, for the dispatcher and the reconciler alike (one delivery path):
        # the sinks, the outbox (progress, status, and BatchGetItem for the later-change check), the
        # dead-letter queue, the key the table is encrypted with.
        delivery_statements = [
            *sink_statements,
            Statement(actions=["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem"],
                      resources=[self.outbox.arn]),
            Statement(actions=["sqs:SendMessage"], resources=[self.dead_letters.arn]),
            use_key,
        ]
        delivery_env = {"OUTBOX_TABLE": self.outbox.name, "EVENT_BUS_NAME": EVENT_BUS,
                        "DEAD_LETTER_QUEUE_URL": self.dead_letters.url,
                        "PINPOINT_APPLICATION_ID": args.pinpoint_project_id or "",
                        "CONNECT_DOMAIN_NAME": connect.domain_name if connect else "",
                        "CONNECT_PROFILE_KEY": connect.profile_key if connect else "",
                        "CONNECT_OBJECT_TYPE": (args.connect_object_type if args.connect_object_type is not None
                                                else connect.object_type_name if connect else ""),
                        "CONNECT_UNKNOWN_USERS": connect.unknown_users.value if connect else ""}
        self.dispatcher = StreamConsumer(
            f"{name}-dispatcher",
            StreamConsumerArgs(
                source_kind=SourceKind.DYNAMODB, source_arn=self.outbox.stream_arn, failure_key_arn=lake.key_arn,
                filter_patterns=['{"eventName": ["INSERT"]}'], batch_size=25,
                function=PythonFunctionArgs(
                    handler="functions.rules.dispatcher.lambda_handler",
                    description="engagement-loop: deliver rule actions to their sinks, once each",
                    region=region, log_retention_days=args.log_retention_days, alarm_topic_arn=args.alarm_topic_arn,
                    secret_environment=args.secret_environment, timeout_seconds=120,
                    environment=delivery_env, statements=delivery_statements),
            ),
            opts=child)

        # Entries whose stream record the dispatcher never got (24-hour stream retention, exhausted mapping
        # retries, a recreated mapping) are found through the pending index and delivered by the same code.
        reconciler_service = f"{name}-reconciler"
        self.reconciler = ScheduledFunction(
            f"{name}-reconciler",
            ScheduledFunctionArgs(
                schedule_expression=RECONCILE_SCHEDULE,
                function=PythonFunctionArgs(
                    handler="functions.rules.reconcile.lambda_handler",
                    description="engagement-loop: deliver rule actions still pending after the threshold",
                    region=region, log_retention_days=args.log_retention_days, alarm_topic_arn=args.alarm_topic_arn,
                    secret_environment=args.secret_environment, timeout_seconds=300,
                    reserved_concurrency=single_run,
                    environment={**delivery_env, "RECONCILE_AFTER_SECONDS": str(RECONCILE_AFTER_SECONDS),
                                 "POWERTOOLS_SERVICE_NAME": reconciler_service,
                                 "POWERTOOLS_METRICS_NAMESPACE": DEFAULT_METRICS_NAMESPACE},
                    statements=[
                        # Query is authorised on the index resource type, table/NAME/index/INDEX
                        # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html).
                        Statement(actions=["dynamodb:Query"],
                                  resources=[_index_arn(self.outbox, PENDING_INDEX)]),
                        *delivery_statements,
                    ])),
            opts=child)
        # A healthy loop sees nothing older than the threshold plus one run; two runs more means entries are
        # pending that reconciliation does not settle. No data means the reconciler is not running: alarm too.
        self.pending_age_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-outbox-pending-age",
            alarm_description=("Rule actions have been pending in the outbox for longer than the reconciler "
                               "threshold plus two runs (or the reconciler reports nothing): see docs/actions.md"),
            namespace=DEFAULT_METRICS_NAMESPACE, metric_name="OldestPendingEntryAgeSeconds", statistic="Maximum",
            dimensions={"service": reconciler_service}, period=2 * RECONCILE_EVERY_MINUTES * 60,
            evaluation_periods=1, threshold=RECONCILE_AFTER_SECONDS + 2 * RECONCILE_EVERY_MINUTES * 60,
            comparison_operator="GreaterThanThreshold", treat_missing_data="breaching",
            **notify(args.alarm_topic_arn), opts=child)

        self.sweeper = ScheduledFunction(
            f"{name}-sweeper",
            ScheduledFunctionArgs(
                schedule_expression=SWEEP_SCHEDULE,
                function=PythonFunctionArgs(
                    handler="functions.rules.sweeper.lambda_handler",
                    description="engagement-loop: window-rule users who dropped below their rule exit",
                    region=region, log_retention_days=args.log_retention_days, alarm_topic_arn=args.alarm_topic_arn,
                    secret_environment=args.secret_environment, timeout_seconds=300,
                    reserved_concurrency=single_run, environment=rules_env,
                    statements=[
                        Statement(actions=["dynamodb:Query"],
                                  resources=[_index_arn(self.counters, SWEEP_INDEX)]),
                        counters_rw, outbox_create, read_rules, use_key,
                    ])),
            opts=child)

        # Named here so that the alarm's `service` dimension is the one Powertools publishes the counts with.
        backfill_service = f"{name}-backfill"
        self.backfill = ScheduledFunction(
            f"{name}-backfill",
            ScheduledFunctionArgs(
                schedule_expression=BACKFILL_SCHEDULE,
                function=PythonFunctionArgs(
                    handler="functions.rules.backfill.lambda_handler",
                    description="engagement-loop: count a new date or window rule's history from the lake",
                    region=region, log_retention_days=args.log_retention_days, alarm_topic_arn=args.alarm_topic_arn,
                    secret_environment=args.secret_environment, timeout_seconds=900,
                    memory_mb=1024, reserved_concurrency=single_run,
                    environment={**rules_env, "ATHENA_WORKGROUP": lake.workgroup, "GLUE_DATABASE": lake.database,
                                 "EVENTS_TABLE": lake.table,
                                 "COUNTER_TTL_DAYS": str(args.rules.counter_ttl_days),
                                 "DEDUPE_HORIZON_HOURS": str(args.rules.dedupe_horizon_hours),
                                 "POWERTOOLS_SERVICE_NAME": backfill_service,
                                 "POWERTOOLS_METRICS_NAMESPACE": DEFAULT_METRICS_NAMESPACE},
                    statements=[counters_rw, outbox_create, read_rules, *lake.query_statements()])),
            opts=child)
        # A failed query is only logged and retried by the next run (functions/rules/backfill.py); one that fails
        # on every run (a value the query cannot sum, a dropped table) would leave its rule unbackfilled forever.
        self.backfill_failing_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-backfill-queries-failing",
            alarm_description=(f"Backfill queries failed in each of the last {BACKFILL_FAILING_HOURS} hours: a rule's "
                               "history is not being counted; see the backfill function's log and docs/backfill.md"),
            namespace=DEFAULT_METRICS_NAMESPACE, metric_name=BackfillCount.QUERIES_FAILED.value, statistic="Sum",
            dimensions={"service": backfill_service}, period=3600, evaluation_periods=BACKFILL_FAILING_HOURS,
            datapoints_to_alarm=BACKFILL_FAILING_HOURS, threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
            **notify(args.alarm_topic_arn), opts=child)

        self.register_outputs({"counters_table": self.counters.name, "outbox_table": self.outbox.name,
                               "dead_letter_queue_url": self.dead_letters.url})


def _index_arn(table: aws.dynamodb.Table, index: str) -> pulumi.Output[str]:
    """A table's index ARN, `table/NAME/index/INDEX`: the resource type Query on an index is authorised on."""
    return table.arn.apply(lambda arn: f"{arn}/index/{index}")
