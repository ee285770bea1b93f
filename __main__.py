"""engagement-loop: compose the components from the stack's typed config and export their outputs."""

import pulumi

from components.config import ConfigError, load_stack_config
from components.event_stream_pipeline import EventStreamPipeline, EventStreamPipelineArgs

try:
    config = load_stack_config()
except ConfigError as error:
    # RunError prints the message alone: the user needs the list of problems, not a traceback.
    raise pulumi.RunError(str(error)) from None

pipeline = EventStreamPipeline(
    "events",
    EventStreamPipelineArgs(
        region=config.region,
        identity_mode=config.identity_mode,
        sources=config.sources,
        lake=config.lake,
        log_retention_days=config.log_retention_days,
    ),
)

pulumi.export("streamArn", pipeline.stream.arn)
pulumi.export("streamName", pipeline.stream.name)
pulumi.export("lakeBucket", pipeline.bucket.bucket)
pulumi.export("glueDatabase", pipeline.database.name)
pulumi.export("eventsTable", pipeline.table.name)
pulumi.export("athenaWorkgroup", pipeline.workgroup.name)
pulumi.export("dataKeyArn", pipeline.key.arn)
if pipeline.producer_policy is not None:
    pulumi.export("producerPolicyArn", pipeline.producer_policy.arn)
