"""EventStreamPipeline: the event bus (Kinesis) and the queryable lake (S3 + Glue + Athena) behind it.

Two streams, so that trust is decided by where a record came from (docs/security.md, "Who may write what"):

- the *trusted* stream, written only by the trusted routes: the Pinpoint event stream, the SES EventBridge
  routes and the exposures function (RecommendationTracking);
- with `appProducerPolicy`, the *app* stream, the only one the app producer policy may write. Its consumers
  read it untrusted: no SES shapes, no reserved event types (`functions/events/normalise.py`).

Sources write raw records partitioned by user. One Firehose delivery stream per stream reads it through the
same normalising Lambda and writes Parquet under `events/dt=YYYY-MM-DD/` (Kinesis arrival date, UTC) of the same
table; records that fail normalisation land under `errors/` with their reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

import pulumi
import pulumi_aws as aws

from components.config import LakeConfig, SourcesConfig, StreamMode
from components.iam import Statement, assume_role_json, deny_insecure_transport, policy_json, resource_policy_json
from components.python_function import PythonFunction, PythonFunctionArgs
from components.stream_consumer import app_stream_environment, queue_depth_alarm, tls_only_queue_policy
from functions.events.canonical import LAKE_COLUMN_TYPES, LAKE_PARTITION_KEY, IdentityMode
from functions.events.ses import SES_ROUTES
from functions.lake_names import LakeNames

EVENTS_PREFIX = "events/"
ERRORS_PREFIX = "errors/"
INTERACTIONS_PREFIX = "interactions/"
# Each retraining run stages its import file under interactions/run=<id>/; old runs are only history.
INTERACTIONS_RUNS_PREFIX = "interactions/run="
INTERACTIONS_RUNS_RETENTION_DAYS = 30
QUERY_RESULTS_PREFIX = "athena-results/"
# The first day partition projection will look for; earlier `dt=` folders are never read.
LAKE_START_DATE = "2019-01-01"
# SES v2 event types, all published so the lake sees the full email lifecycle.
# How each AWS service that may use the data key is let in: the actions and the key-policy condition its
# documentation gives. A condition the service does not send on that path denies every request, silently.
KEY_SERVICE_GRANTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    # Personalize reads SSE-KMS import files from the lake for this account.
    "personalize.amazonaws.com": (("kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"), "aws:SourceAccount"),
    # EventBridge publishing to an SSE-KMS SNS topic: the SNS developer guide ("Encryption at rest", event
    # sources from AWS services) lists kms:Decrypt and kms:GenerateDataKey* and says aws:SourceAccount,
    # aws:SourceArn and aws:SourceOrgID are not supported in the key policy for EventBridge, so no condition.
    # The same two actions let EventBridge send to an SSE-KMS dead-letter queue (SQS developer guide, "Configure
    # KMS permissions for AWS services": GenerateDataKey and Decrypt for the sending service,
    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html).
    "events.amazonaws.com": (("kms:Decrypt", "kms:GenerateDataKey*"), None),
    # CloudWatch alarms publishing to an SSE-KMS SNS topic (same SNS page); source conditions are supported.
    "cloudwatch.amazonaws.com": (("kms:Decrypt", "kms:GenerateDataKey*"), "aws:SourceAccount"),
}

STREAM_RETENTION_HOURS = 24
"""Both streams' retention (functions/rules/dedupe.py MARK_KEEP_MS must exceed it)."""

# SES event destination names: ASCII letters, digits, _ and -, at most 64 characters (SES API reference,
# EventDestination `Name`, https://docs.aws.amazon.com/ses/latest/APIReference/API_EventDestination.html).
_NOT_SES_NAME = re.compile(r"[^A-Za-z0-9_-]")
MAX_SES_DESTINATION_CHARS = 64

SES_EVENT_TYPES = ["SEND", "REJECT", "BOUNCE", "COMPLAINT", "DELIVERY", "OPEN", "CLICK", "RENDERING_FAILURE",
                   "DELIVERY_DELAY", "SUBSCRIPTION"]


@dataclass(frozen=True, kw_only=True)
class LakeAccess:
    """What another component needs to query the lake through Athena (EventStreamPipeline.lake_access())."""

    region: str
    account_id: pulumi.Input[str]
    bucket: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    """The data key of the lake, the query results and everything else the stack stores."""
    database: pulumi.Input[str]
    table: pulumi.Input[str]
    workgroup: pulumi.Input[str]

    def object_arns(self, prefix: str) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self.bucket_arn).apply(lambda arn: f"{arn}/{prefix}*")

    def query_statements(self) -> list[Statement]:
        """Running a query in the workgroup: Athena uses the caller's own permissions for the catalog, the
        lake's events and the results location."""
        region = self.region
        glue = pulumi.Output.from_input(self.account_id).apply(lambda a: f"arn:aws:glue:{region}:{a}")
        return [
            Statement(actions=["athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults"],
                      resources=[pulumi.Output.all(self.account_id, self.workgroup).apply(
                          lambda v: f"arn:aws:athena:{region}:{v[0]}:workgroup/{v[1]}")]),
            Statement(actions=["glue:GetDatabase", "glue:GetTable", "glue:GetPartition", "glue:GetPartitions"],
                      resources=[glue.apply(lambda g: f"{g}:catalog"),
                                 pulumi.Output.all(glue, self.database).apply(lambda v: f"{v[0]}:database/{v[1]}"),
                                 pulumi.Output.all(glue, self.database, self.table).apply(
                                     lambda v: f"{v[0]}:table/{v[1]}/{v[2]}")]),
            Statement(actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                      resources=[self.bucket_arn]),
            Statement(actions=["s3:GetObject"], resources=[self.object_arns(EVENTS_PREFIX)]),
            Statement(actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                               "s3:ListMultipartUploadParts"],
                      resources=[self.object_arns(QUERY_RESULTS_PREFIX)]),
            Statement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[self.key_arn]),
        ]


@dataclass(frozen=True, kw_only=True)
class EventStreamPipelineArgs:
    """Settings of the event stream and the lake; all come from stack config."""

    region: str
    """The stack's region."""
    identity_mode: IdentityMode
    """How the normaliser finds a user for a record; see IdentityMode."""
    sources: SourcesConfig
    """Optional sources: Pinpoint project, SES configuration set, app producer policy (which also creates the
    app stream)."""
    lake: LakeConfig
    """Athena scan limit, the lake's retention periods and its names (`LakeConfig.names`, required here: the
    Glue database, table and Athena workgroup, derived and checked when config is parsed)."""
    log_retention_days: int
    """Retention of every log group this component creates."""
    alarm_topic_arn: pulumi.Input[str]
    """The stack's alarm topic (Notifications.topic_arn): the normaliser's and the SES dead-letter queue's alarms
    notify it. Required."""
    secret_environment: bool = False
    """True when the stack config holds secret values: every function's environment is kept as a Pulumi
    secret (encrypted in the state, hidden in previews). Default False."""
    key_service_principals: Sequence[str] = ()
    """AWS services (e.g. `personalize.amazonaws.com`) that may use the data key on this account's behalf.
    Default: none."""
    personalize_read_prefix: str | None = None
    """A lake prefix Amazon Personalize may read (dataset imports). Default: none."""

    def __post_init__(self) -> None:
        if not self.region:
            raise ValueError("EventStreamPipelineArgs.region: expected the stack's AWS region, got ''")
        if self.lake.names is None:
            raise ValueError("EventStreamPipelineArgs.lake.names: expected the lake's names (LakeConfig.names, from "
                             "parse_stack_config with the stack name), got None")
        unknown = sorted(set(self.key_service_principals) - KEY_SERVICE_GRANTS.keys())
        if unknown:
            raise ValueError(f"EventStreamPipelineArgs.key_service_principals: expected some of "
                             f"{sorted(KEY_SERVICE_GRANTS)}, got {unknown}")


class EventStreamPipeline(pulumi.ComponentResource):
    """Kinesis event bus, optional sources, Firehose normalisation into a partitioned Parquet lake."""

    def __init__(self, name: str, args: EventStreamPipelineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:event_stream_pipeline:EventStreamPipeline", name, None, opts)
        self._name = name
        self._region = args.region
        self._child = pulumi.ResourceOptions(parent=self)
        self._account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id

        key_services = set(args.key_service_principals)
        if args.sources.ses_configuration_set:
            # EventBridge sends undeliverable SES events to the dead-letter queue, which is encrypted with this key.
            key_services.add("events.amazonaws.com")
        self.key = aws.kms.Key(
            f"{name}-key", description="engagement-loop: event stream, lake and query results",
            enable_key_rotation=True, deletion_window_in_days=30,
            policy=self._key_policy(sorted(key_services)), opts=self._child)
        # `streamMode`: on demand by default; provisioned costs less while the traffic is small and steady, since
        # an on-demand stream's hourly price is owed whatever flows (docs/cost.md, "The stream's fixed price").
        self.stream = self._new_stream(
            f"{name}-stream",
            shards=args.sources.stream_shards if args.sources.stream_mode is StreamMode.PROVISIONED else None)
        # Provisioned, not on demand: an on-demand stream grows its shards with its writers' traffic, and each
        # shard is another concurrent batch of every consumer, so the app stream's writers could take the Lambda
        # concurrency the trusted stream's consumers need (docs/security.md, "What a hostile producer can cost").
        self.app_stream = (self._new_stream(f"{name}-app-stream", shards=args.sources.app_stream_shards)
                           if args.sources.app_producer_policy else None)
        self._write_to_stream = [
            Statement(actions=["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"],
                      resources=[self.stream.arn]),
            Statement(actions=["kms:GenerateDataKey"], resources=[self.key.arn]),
        ]

        self._build_bucket(args.lake, args.personalize_read_prefix)
        assert args.lake.names is not None  # checked by the Args
        self._build_catalog(args.lake, args.lake.names)
        self._build_firehose(args)

        self.producer_policy = None
        if self.app_stream is not None:
            self.producer_policy = aws.iam.Policy(
                f"{name}-producer-policy",
                description="Attach to applications that write canonical events to the engagement app stream",
                policy=policy_json(self._write_to_app_stream(args.region)), opts=self._child)
        self.pinpoint_event_stream = None
        if args.sources.pinpoint_project_id:
            self._build_pinpoint_source(args.region, args.sources.pinpoint_project_id)
        self.ses_rule = None
        self.ses_rules = {}
        self.ses_dead_letters = None
        if args.sources.ses_configuration_set:
            self._build_ses_source(args.sources.ses_configuration_set, args.lake.names, args.alarm_topic_arn)

        self.register_outputs({
            "stream_arn": self.stream.arn, "stream_name": self.stream.name,
            "app_stream_arn": self.app_stream.arn if self.app_stream else None, "bucket": self.bucket.bucket,
            "database": self.database.name, "table": self.table.name, "workgroup": self.workgroup.name,
            "producer_policy_arn": self.producer_policy.arn if self.producer_policy else None,
            "ses_dead_letter_queue_url": self.ses_dead_letters.url if self.ses_dead_letters else None,
        })

    def _new_stream(self, child_name: str, *, shards: int | None = None) -> aws.kinesis.Stream:
        """An encrypted stream: on demand, or with `shards` provisioned shards."""
        return aws.kinesis.Stream(
            child_name,
            stream_mode_details={"stream_mode": "ON_DEMAND" if shards is None else "PROVISIONED"},
            shard_count=shards,
            encryption_type="KMS", kms_key_id=self.key.arn,
            retention_period=STREAM_RETENTION_HOURS,
            opts=self._child)

    def _write_to_app_stream(self, region: str) -> list[Statement]:
        """What an app needs to put records on the app stream, and nothing on the trusted one.

        PutRecord, PutRecords and DescribeStreamSummary on the stream; an SSE-KMS stream's producer also needs
        kms:GenerateDataKey on its key (Kinesis developer guide, "Permissions to use user-generated KMS keys",
        https://docs.aws.amazon.com/streams/latest/dev/permissions-user-key-KMS.html), granted only through
        Kinesis (`kms:ViaService`, https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html) and
        for the app stream only (Kinesis passes the stream ARN as encryption context `aws:kinesis:arn`, same
        Kinesis page): the app cannot use the stack's data key for anything else, the trusted stream included.
        """
        assert self.app_stream is not None
        return [
            Statement(actions=["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"],
                      resources=[self.app_stream.arn]),
            Statement(actions=["kms:GenerateDataKey"], resources=[self.key.arn],
                      conditions={"StringEquals": {"kms:ViaService": f"kinesis.{region}.amazonaws.com",
                                                   "kms:EncryptionContext:aws:kinesis:arn": self.app_stream.arn}}),
        ]

    def lake_access(self, region: str) -> LakeAccess:
        return LakeAccess(region=region, account_id=self._account_id, bucket=self.bucket.bucket,
                          bucket_arn=self.bucket.arn, key_arn=self.key.arn, database=self.database.name,
                          table=self.table.name, workgroup=self.workgroup.name)

    # --- the lake ------------------------------------------------------------------------------------

    def _key_policy(self, service_principals: Sequence[str]) -> pulumi.Output[str]:
        def document(account: str) -> str:
            statements: list[dict[str, Any]] = [{
                # The account's IAM policies decide who uses the key, as with a default key policy.
                "Sid": "AccountAdministersAndDelegatesToIam", "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*", "Resource": "*",
            }]
            for principal in sorted(set(service_principals)):
                actions, source_key = KEY_SERVICE_GRANTS[principal]
                statement: dict[str, Any] = {
                    "Sid": "Use" + principal.split(".")[0].capitalize(), "Effect": "Allow",
                    "Principal": {"Service": principal}, "Action": list(actions), "Resource": "*"}
                if source_key:
                    statement["Condition"] = {"StringEquals": {source_key: account}}
                statements.append(statement)
            return json.dumps({"Version": "2012-10-17", "Statement": statements})
        return self._account_id.apply(document)

    def _build_bucket(self, lake: LakeConfig, personalize_read_prefix: str | None) -> None:
        name, child = self._name, self._child
        self.bucket = aws.s3.Bucket(f"{name}-lake", opts=child)
        aws.s3.BucketOwnershipControls(
            f"{name}-lake-ownership", bucket=self.bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-lake-public-access", bucket=self.bucket.id, block_public_acls=True,
            block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-lake-encryption", bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                                "kms_master_key_id": self.key.arn},
                    "bucket_key_enabled": True}], opts=child)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lake-lifecycle", bucket=self.bucket.id,
            rules=[
                {"id": "expire-query-results", "status": "Enabled",
                 "filter": {"prefix": QUERY_RESULTS_PREFIX},
                 "expiration": {"days": lake.query_results_retention_days}},
                {"id": "expire-errors", "status": "Enabled", "filter": {"prefix": ERRORS_PREFIX},
                 "expiration": {"days": lake.errors_retention_days}},
                {"id": "expire-staged-interactions", "status": "Enabled",
                 "filter": {"prefix": INTERACTIONS_RUNS_PREFIX},
                 "expiration": {"days": INTERACTIONS_RUNS_RETENTION_DAYS}},
                {"id": "abort-incomplete-uploads", "status": "Enabled", "filter": {"prefix": ""},
                 "abort_incomplete_multipart_upload": {"days_after_initiation": 7}},
            ], opts=child)
        objects = self.bucket.arn.apply(lambda arn: f"{arn}/*")
        statements: list[dict[str, Any]] = [deny_insecure_transport("s3:*", [self.bucket.arn, objects])]
        if personalize_read_prefix:
            # Dataset imports read with Personalize's own principal besides the role passed to them.
            personalize = {"Service": "personalize.amazonaws.com"}
            only_ours = {"StringEquals": {"aws:SourceAccount": self._account_id}}
            statements += [
                {"Sid": "PersonalizeListsImports", "Effect": "Allow", "Principal": personalize,
                 "Action": "s3:ListBucket", "Resource": self.bucket.arn,
                 "Condition": {**only_ours, "StringLike": {"s3:prefix": f"{personalize_read_prefix}*"}}},
                {"Sid": "PersonalizeReadsImports", "Effect": "Allow", "Principal": personalize,
                 "Action": "s3:GetObject",
                 "Resource": self.bucket.arn.apply(lambda arn: f"{arn}/{personalize_read_prefix}*"),
                 "Condition": only_ours},
            ]
        aws.s3.BucketPolicy(f"{name}-lake-policy", bucket=self.bucket.id,
                            policy=resource_policy_json(statements), opts=child)

    def _build_catalog(self, lake: LakeConfig, names: LakeNames) -> None:
        name, child = self._name, self._child
        self.database = aws.glue.CatalogDatabase(f"{name}-database", name=names.database, opts=child)
        events_location = self.bucket.bucket.apply(lambda bucket: f"s3://{bucket}/{EVENTS_PREFIX}")
        self.table = aws.glue.CatalogTable(
            f"{name}-events-table",
            name=names.table, database_name=self.database.name, table_type="EXTERNAL_TABLE",
            parameters={
                "classification": "parquet",
                "EXTERNAL": "TRUE",
                # Partition projection: Athena computes the dt= partitions, so no crawler and no
                # partition maintenance, and a date predicate prunes to the days it names.
                "projection.enabled": "true",
                f"projection.{LAKE_PARTITION_KEY}.type": "date",
                f"projection.{LAKE_PARTITION_KEY}.format": "yyyy-MM-dd",
                f"projection.{LAKE_PARTITION_KEY}.range": f"{LAKE_START_DATE},NOW",
                f"projection.{LAKE_PARTITION_KEY}.interval": "1",
                f"projection.{LAKE_PARTITION_KEY}.interval.unit": "DAYS",
                "storage.location.template": events_location.apply(
                    lambda location: f"{location}{LAKE_PARTITION_KEY}=${{{LAKE_PARTITION_KEY}}}/"),
            },
            partition_keys=[{"name": LAKE_PARTITION_KEY, "type": "string"}],
            storage_descriptor={
                "location": events_location,
                "input_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "output_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "ser_de_info": {"serialization_library":
                                "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
                "columns": [{"name": column, "type": column_type}
                            for column, column_type in LAKE_COLUMN_TYPES.items()],
            },
            opts=child)
        self.workgroup = aws.athena.Workgroup(
            f"{name}-workgroup",
            name=names.workgroup,
            configuration={
                "enforce_workgroup_configuration": True,
                "publish_cloudwatch_metrics_enabled": True,
                "bytes_scanned_cutoff_per_query": lake.athena_scan_limit_gb * 1024 ** 3,
                "result_configuration": {
                    "output_location": self.bucket.bucket.apply(lambda b: f"s3://{b}/{QUERY_RESULTS_PREFIX}"),
                    "encryption_configuration": {"encryption_option": "SSE_KMS", "kms_key_arn": self.key.arn},
                },
            },
            force_destroy=True,
            opts=child)

    # --- Firehose: stream -> normaliser -> Parquet --------------------------------------------------

    def _build_firehose(self, args: EventStreamPipelineArgs) -> None:
        name, child = self._name, self._child
        self.transform = PythonFunction(
            f"{name}-normalise",
            PythonFunctionArgs(
                handler="functions.events.firehose_transform.handler",
                description="engagement-loop: normalise raw records into canonical events for the lake",
                region=args.region, log_retention_days=args.log_retention_days,
                alarm_topic_arn=args.alarm_topic_arn,
                secret_environment=args.secret_environment,
                # The function tells the app stream's batches from the trusted one's by the event's
                # sourceKinesisStreamArn (functions/events/firehose_transform.py).
                environment={"IDENTITY_MODE": args.identity_mode.value,
                             **app_stream_environment(self.app_stream.arn if self.app_stream else None,
                                                      args.sources.app_may_report)},
                timeout_seconds=120, memory_mb=512),
            opts=child)
        self.firehose = self._delivery_stream("firehose", self.stream, args)
        self.app_firehose = None
        if self.app_stream is not None:
            self.app_firehose = self._delivery_stream("app-firehose", self.app_stream, args)

    def _delivery_stream(self, role: str, source: aws.kinesis.Stream,
                         args: EventStreamPipelineArgs) -> aws.kinesis.FirehoseDeliveryStream:
        """One stream into the lake: the same processor, prefixes, table and settings for every stream; a role,
        policy and log group of its own, reading only `source`. Children are named `{name}-{role}…`."""
        name, child = self._name, self._child
        prefix = f"{name}-{role}"
        # One ARN on both sides: Firehose invokes exactly the LambdaArn processor parameter, and the Firehose
        # developer guide ("Controlling access", Lambda data transformation) grants lambda:InvokeFunction and
        # lambda:GetFunctionConfiguration on that qualified `function:NAME:VERSION` ARN; a grant on the
        # unqualified ARN does not cover a qualified invocation.
        processor_arn = self.transform.function.arn.apply(lambda arn: f"{arn}:$LATEST")
        firehose_logs = aws.cloudwatch.LogGroup(
            f"{prefix}-logs", retention_in_days=args.log_retention_days, opts=child)
        firehose_log_stream = aws.cloudwatch.LogStream(
            f"{prefix}-log-stream", log_group_name=firehose_logs.name, name="S3Delivery", opts=child)

        region, account = args.region, self._account_id
        glue_resources = [
            account.apply(lambda a: f"arn:aws:glue:{region}:{a}:catalog"),
            pulumi.Output.all(account, self.database.name).apply(
                lambda v: f"arn:aws:glue:{region}:{v[0]}:database/{v[1]}"),
            pulumi.Output.all(account, self.database.name, self.table.name).apply(
                lambda v: f"arn:aws:glue:{region}:{v[0]}:table/{v[1]}/{v[2]}"),
        ]
        firehose_role = aws.iam.Role(
            f"{prefix}-role",
            assume_role_policy=assume_role_json("firehose.amazonaws.com", source_account=account),
            opts=child)
        firehose_policy = aws.iam.RolePolicy(
            f"{prefix}-policy", role=firehose_role.id,
            policy=policy_json([
                Statement(actions=["kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                                   "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:ListShards"],
                          resources=[source.arn]),
                Statement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[self.key.arn]),
                # The S3 actions the Firehose developer guide grants a delivery role ("Grant Firehose access to an
                # Amazon S3 destination", https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html),
                # the bucket's on the bucket and the objects' only under the two prefixes this stream writes.
                Statement(actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                          resources=[self.bucket.arn]),
                Statement(actions=["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                          resources=[self.bucket.arn.apply(lambda arn: f"{arn}/{EVENTS_PREFIX}*"),
                                     self.bucket.arn.apply(lambda arn: f"{arn}/{ERRORS_PREFIX}*")]),
                Statement(actions=["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"],
                          resources=[processor_arn]),
                Statement(actions=["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"],
                          resources=glue_resources),
                Statement(actions=["logs:PutLogEvents"],
                          resources=[firehose_logs.arn.apply(lambda arn: f"{arn}:*")]),
            ]),
            opts=child)

        return aws.kinesis.FirehoseDeliveryStream(
            prefix,
            destination="extended_s3",
            kinesis_source_configuration={"kinesis_stream_arn": source.arn, "role_arn": firehose_role.arn},
            extended_s3_configuration={
                "role_arn": firehose_role.arn,
                "bucket_arn": self.bucket.arn,
                "kms_key_arn": self.key.arn,
                # Both delivery streams write the same prefixes: Firehose names each object after its delivery
                # stream (https://docs.aws.amazon.com/firehose/latest/dev/s3-object-name.html), so they never
                # overwrite each other's files.
                "prefix": f"{EVENTS_PREFIX}{LAKE_PARTITION_KEY}=!{{partitionKeyFromLambda:{LAKE_PARTITION_KEY}}}/",
                "error_output_prefix": f"{ERRORS_PREFIX}!{{firehose:error-output-type}}/"
                                       f"{LAKE_PARTITION_KEY}=!{{timestamp:yyyy-MM-dd}}/",
                # Parquet conversion and dynamic partitioning both require at least 64 MiB buffers.
                "buffering_size": 64,
                "buffering_interval": 300,
                "compression_format": "UNCOMPRESSED",  # Parquet compresses its own pages (SNAPPY below)
                "dynamic_partitioning_configuration": {"enabled": True, "retry_duration": 300},
                "processing_configuration": {
                    "enabled": True,
                    "processors": [{
                        "type": "Lambda",
                        "parameters": [
                            {"parameter_name": "LambdaArn",
                             "parameter_value": processor_arn},
                            {"parameter_name": "BufferSizeInMBs", "parameter_value": "1"},
                            {"parameter_name": "BufferIntervalInSeconds", "parameter_value": "60"},
                        ],
                    }],
                },
                "data_format_conversion_configuration": {
                    "enabled": True,
                    # Case-sensitive keys: by default the OpenX SerDe lower-cases every JSON key before
                    # deserializing (OpenXJsonSerDe `CaseInsensitive`, default true,
                    # https://docs.aws.amazon.com/firehose/latest/APIReference/API_OpenXJsonSerDe.html), which would
                    # turn the attribute `productCategory` into `productcategory` in the lake (rules match attribute
                    # names exactly) and fail a record whose map holds two keys differing only by case. The column
                    # names need no folding: Glue's are lower case and so are the normaliser's keys
                    # (LAKE_COLUMN_TYPES). Dots in attribute keys are kept as they are.
                    "input_format_configuration": {"deserializer": {"open_x_json_ser_de": {
                        "case_insensitive": False, "convert_dots_in_json_keys_to_underscores": False}}},
                    "output_format_configuration": {"serializer": {"parquet_ser_de": {"compression": "SNAPPY"}}},
                    "schema_configuration": {"database_name": self.database.name, "table_name": self.table.name,
                                             "role_arn": firehose_role.arn, "region": region},
                },
                "cloudwatch_logging_options": {"enabled": True, "log_group_name": firehose_logs.name,
                                               "log_stream_name": firehose_log_stream.name},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[firehose_policy]))

    # --- optional sources ----------------------------------------------------------------------------

    def _build_pinpoint_source(self, region: str, project_id: str) -> None:
        name, child = self._name, self._child
        project_arn = self._account_id.apply(lambda a: f"arn:aws:mobiletargeting:{region}:{a}:apps/{project_id}")
        role = aws.iam.Role(
            f"{name}-pinpoint-role",
            assume_role_policy=assume_role_json("pinpoint.amazonaws.com", source_account=self._account_id,
                                                source_arn=project_arn),
            description="Lets the Pinpoint project's event stream write into the engagement stream",
            opts=child)
        # The permissions policy Pinpoint's developer guide gives for an event stream to Kinesis ("IAM role for
        # streaming events to Kinesis"): PutRecords and DescribeStream on the stream; the stream is SSE-KMS, so a
        # producer also needs kms:GenerateDataKey on its key (Kinesis server-side encryption).
        policy = aws.iam.RolePolicy(f"{name}-pinpoint-policy", role=role.id, policy=policy_json([
            Statement(actions=["kinesis:PutRecords", "kinesis:DescribeStream"], resources=[self.stream.arn]),
            Statement(actions=["kms:GenerateDataKey"], resources=[self.key.arn]),
        ]), opts=child)
        self.pinpoint_event_stream = aws.pinpoint.EventStream(
            f"{name}-pinpoint-events", application_id=project_id, destination_stream_arn=self.stream.arn,
            role_arn=role.arn, opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]))

    def _build_ses_source(self, configuration_set: str, names: LakeNames,
                          alarm_topic_arn: pulumi.Input[str]) -> None:
        name, child = self._name, self._child
        region = self._region
        default_bus_arn = self._account_id.apply(lambda a: f"arn:aws:events:{region}:{a}:event-bus/default")
        aws.sesv2.ConfigurationSetEventDestination(
            f"{name}-ses-events", configuration_set_name=configuration_set,
            event_destination_name=ses_event_destination_name(names),
            event_destination={"enabled": True, "matching_event_types": SES_EVENT_TYPES,
                               "event_bridge_destination": {"event_bus_arn": default_bus_arn}},
            opts=child)
        # One rule per partition key (functions/events/ses.py SES_ROUTES): a rule whose key path is absent from
        # the event would fail every delivery of it. The user route keeps the original resource names.
        self.ses_rules = {
            route.name: aws.cloudwatch.EventRule(
                f"{name}-ses{_route_suffix(route.name)}-rule",
                description=f"SES events of configuration set {configuration_set} into the stream, "
                            f"keyed by {route.partition_key_path}",
                event_pattern=pulumi.Output.json_dumps({
                    "source": ["aws.ses"],
                    "detail": {"mail": {"tags": {"ses:configuration-set": [configuration_set],
                                                 **route.tag_conditions}}},
                }), opts=child)
            for route in SES_ROUTES
        }
        self.ses_rule = self.ses_rules["user"]
        rule_arns = pulumi.Output.all(*(rule.arn for rule in self.ses_rules.values()))
        # Events EventBridge cannot deliver (throttling, a missing key) wait here for `python -m cli ses replay`.
        # They are whole SES events (addresses, headers), so they are kept under the stack's data key, which lets
        # EventBridge encrypt them (KEY_SERVICE_GRANTS); whoever replays them needs kms:Decrypt on it.
        self.ses_dead_letters = aws.sqs.Queue(
            f"{name}-ses-dlq", kms_master_key_id=self.key.arn, message_retention_seconds=14 * 24 * 3600,
            opts=child)
        # Only the SES rules may send here (the permissions of the EventBridge guide's "Granting permissions to
        # the dead-letter queue", https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html).
        tls_only_queue_policy(f"{name}-ses-dlq-policy", self.ses_dead_letters, child, statements=[
            {"Sid": "SesRulesDeadLetters", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
             "Action": "sqs:SendMessage", "Resource": self.ses_dead_letters.arn,
             "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}}}])
        queue_depth_alarm(f"{name}-ses-dlq-depth", self.ses_dead_letters,
                          "SES events EventBridge could not put on the stream: replay them with "
                          "`python -m cli ses replay`", alarm_topic_arn, child)
        role = aws.iam.Role(
            f"{name}-ses-role",
            assume_role_policy=assume_role_json("events.amazonaws.com", source_account=self._account_id,
                                                source_arn=rule_arns),
            opts=child)
        policy = aws.iam.RolePolicy(f"{name}-ses-policy", role=role.id,
                                    policy=policy_json(self._write_to_stream), opts=child)
        for route in SES_ROUTES:
            aws.cloudwatch.EventTarget(
                f"{name}-ses{_route_suffix(route.name)}-target", rule=self.ses_rules[route.name].name,
                arn=self.stream.arn, role_arn=role.arn,
                kinesis_target={"partition_key_path": route.partition_key_path},
                retry_policy={"maximum_retry_attempts": 185, "maximum_event_age_in_seconds": 24 * 3600},
                dead_letter_config={"arn": self.ses_dead_letters.arn},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]))


def ses_event_destination_name(names: LakeNames) -> str:
    """The SES event destination's name: the lake's workgroup name (project and stack, already sanitised for
    Athena) with every character SES refuses (the `.` a stack name may hold) turned into `-`, at most 64
    characters (a longer one keeps its first 55 and 8 hex of a hash of the whole, like functions/lake_names.py)."""
    name = _NOT_SES_NAME.sub("-", names.workgroup)
    if len(name) <= MAX_SES_DESTINATION_CHARS:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{name[:MAX_SES_DESTINATION_CHARS - 9]}-{digest}"


def _route_suffix(route_name: str) -> str:
    return "" if route_name == "user" else f"-{route_name}"
