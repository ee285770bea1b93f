"""engagement-loop: compose the components from the stack's typed config and export their outputs."""

import pulumi

from components.config import ConfigError, load_stack_config
from components.connect_profiles import ConnectProfileObjects, ConnectProfileObjectsArgs
from components.event_stream_pipeline import INTERACTIONS_PREFIX, EventStreamPipeline, EventStreamPipelineArgs
from components.notifications import Notifications, NotificationsArgs
from components.recommendation_tracking import RecommendationTracking, RecommendationTrackingArgs
from components.retraining_loop import RetrainingLoop, RetrainingLoopArgs
from components.rule_engine import RuleEngine, RuleEngineArgs

try:
    config = load_stack_config()
except ConfigError as error:
    # RunError prints the message alone: the user needs the list of problems, not a traceback.
    raise pulumi.RunError(str(error)) from None

# The alarm topic comes first, since every component's alarms notify it; it is encrypted with the data key, which the
# pipeline creates next (the deferred output resolves to that key's ARN).
data_key_arn, resolve_data_key_arn = pulumi.deferred_output()
alarms = Notifications("alarms", NotificationsArgs(key_arn=data_key_arn, existing_topic_arn=config.alarm_topic_arn))

pipeline = EventStreamPipeline(
    "events",
    EventStreamPipelineArgs(
        region=config.region,
        identity_mode=config.identity_mode,
        sources=config.sources,
        lake=config.lake,
        log_retention_days=config.log_retention_days,
        alarm_topic_arn=alarms.topic_arn,
        secret_environment=config.holds_secrets,
        # Personalize reads import files from the lake; EventBridge publishes run alerts to the encrypted retraining
        # topic (and sends undeliverable SES events to the encrypted dead-letter queue); CloudWatch alarms publish to
        # the encrypted alarm topic.
        key_service_principals=("personalize.amazonaws.com", "events.amazonaws.com", "cloudwatch.amazonaws.com"),
        personalize_read_prefix=INTERACTIONS_PREFIX,
    ),
)
resolve_data_key_arn(pipeline.key.arn)

# With a Customer Profiles domain: the object type the dispatcher writes qualifications to, and the campaign triggers
# on it; the rule engine takes the type's name from it, so its functions are created after the type.
connect_objects = (ConnectProfileObjects("connect", ConnectProfileObjectsArgs(connect=config.rules.connect))
                   if config.rules.connect is not None else None)

rule_engine = RuleEngine(
    "rules",
    RuleEngineArgs(
        region=config.region,
        log_retention_days=config.log_retention_days,
        identity_mode=config.identity_mode,
        rules=config.rules,
        stream_arn=pipeline.stream.arn,
        app_stream_arn=pipeline.app_stream.arn if pipeline.app_stream else None,
        app_may_report=config.sources.app_may_report,
        lake=pipeline.lake_access(config.region),
        alarm_topic_arn=alarms.topic_arn,
        secret_environment=config.holds_secrets,
        pinpoint_project_id=config.sources.pinpoint_project_id,
        connect_object_type=connect_objects.object_type_name if connect_objects is not None else None,
    ),
)

retraining = RetrainingLoop(
    "retraining",
    RetrainingLoopArgs(
        region=config.region,
        log_retention_days=config.log_retention_days,
        retraining=config.retraining,
        lake=pipeline.lake_access(config.region),
        alarm_topic_arn=alarms.topic_arn,
        secret_environment=config.holds_secrets,
    ),
)

tracking = RecommendationTracking(
    "tracking",
    RecommendationTrackingArgs(
        region=config.region,
        account_id=config.retraining.solution.account,
        log_retention_days=config.log_retention_days,
        stream_arn=pipeline.stream.arn,
        app_stream_arn=pipeline.app_stream.arn if pipeline.app_stream else None,
        app_may_report=config.sources.app_may_report,
        stream_key_arn=pipeline.key.arn,
        alarm_topic_arn=alarms.topic_arn,
        secret_environment=config.holds_secrets,
        identity_mode=config.identity_mode,
        scoring=config.retraining.scoring,
        pinpoint_project_id=config.sources.pinpoint_project_id,
        tracking_id=config.retraining.real_time_tracking_id,
    ),
)

pulumi.export("streamArn", pipeline.stream.arn)
pulumi.export("streamName", pipeline.stream.name)
pulumi.export("lakeBucket", pipeline.bucket.bucket)
pulumi.export("glueDatabase", pipeline.database.name)
pulumi.export("eventsTable", pipeline.table.name)
pulumi.export("athenaWorkgroup", pipeline.workgroup.name)
pulumi.export("dataKeyArn", pipeline.key.arn)
if pipeline.app_stream is not None and pipeline.producer_policy is not None:  # apps write here, and only here
    pulumi.export("appStreamArn", pipeline.app_stream.arn)
    pulumi.export("appStreamName", pipeline.app_stream.name)
    pulumi.export("producerPolicyArn", pipeline.producer_policy.arn)
pulumi.export("rulesVersion", config.rules.rules.version)
pulumi.export("countersTable", rule_engine.counters.name)
pulumi.export("outboxTable", rule_engine.outbox.name)
pulumi.export("actionDeadLetterQueueUrl", rule_engine.dead_letters.url)
if pipeline.ses_dead_letters is not None:  # SES events EventBridge could not put on the stream: `cli ses replay`
    pulumi.export("sesDeadLetterQueueUrl", pipeline.ses_dead_letters.url)
pulumi.export("retrainingStateMachineArn", retraining.state_machine.arn)
pulumi.export("retrainingTopicArn", retraining.topic.arn)  # run notifications; alarms go to alarmTopicArn
pulumi.export("alarmTopicArn", alarms.topic_arn)  # subscribe here: every alarm of the stack notifies this topic
pulumi.export("exposuresFunctionArn", tracking.exposures.function.arn)
if connect_objects is not None:  # what Connect admins pick in a journey's or campaign's event source
    pulumi.export("connectObjectTypeName", connect_objects.object_type_name)
