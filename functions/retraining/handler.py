"""Lambda entry of the retraining state machine: one function, dispatching on the payload's `step`.

Event: `{"step": "<functions.retraining.workflow.Step value>", "state": <RunState as JSON>}`; the result is the
next RunState as JSON (`workflow.build_definition` wires this up). An exception ends the invocation with
the exception's class name as the error, which the state machine retries (`Throttled`, `ResourceInUse`) or
catches into the failure notification.

Environment: read once by `RetrainingSettings.from_env` (steps.py), which names every missing or invalid
variable: LAKE_BUCKET, GLUE_DATABASE, EVENTS_TABLE, ATHENA_WORKGROUP, LOCK_TABLE, TOPIC_ARN, EVENT_BUS_NAME,
PERSONALIZE_DATASET_ARN, PERSONALIZE_SOLUTION_ARN, PERSONALIZE_CAMPAIGN_ARN, PERSONALIZE_IMPORT_ROLE_ARN,
SCORING, IMPORT_MODE, TRAINING_MODE, HISTORY_DAYS, ATTRIBUTION_DAYS, MIN_PROVISIONED_TPS, GATE_METRIC,
GATE_MARGIN, LOCK_TTL_SECONDS.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from functions.retraining.clients import (
    Boto3Athena, Boto3Notifier, Boto3ObjectStore, Boto3Personalize, DynamoRunStore,
)
from functions.retraining.run_state import RunState
from functions.retraining.settings import RetrainingSettings
from functions.retraining.steps import STEPS, Services
from functions.retraining.workflow import Step

logger = Logger(service="retraining")

# botocore retries throttling a few times itself; what is left becomes `Throttled` for the state machine.
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


def boto3_services(settings: RetrainingSettings, session: boto3.Session | None = None) -> Services:
    """The steps' services over real AWS clients."""
    session = session or boto3.Session()

    def client(name: str) -> Any:
        return session.client(name, config=_CLIENT_CONFIG)

    return Services(
        personalize=Boto3Personalize(client("personalize")),
        athena=Boto3Athena(client("athena")),
        objects=Boto3ObjectStore(client("s3")),
        runs=DynamoRunStore(client("dynamodb"), settings.lock_table),
        notifier=Boto3Notifier(client("sns"), client("events"), topic_arn=settings.topic_arn,
                               event_bus_name=settings.event_bus_name),
    )


@functools.cache
def _runtime() -> tuple[RetrainingSettings, Services]:
    settings = RetrainingSettings.from_env()
    return settings, boto3_services(settings)


def handle(event: Mapping[str, Any], settings: RetrainingSettings, services: Services) -> dict[str, Any]:
    """Run one step on the event's state; returns the next state."""
    try:
        step = Step(event.get("step"))
    except ValueError:
        raise ValueError(f"event step {event.get('step')!r} is not one of "
                         f"{', '.join(s.value for s in Step)}") from None
    state = RunState.from_dict(event.get("state") or {})
    logger.append_keys(run_id=state.run_id, step=step.value)
    result = STEPS[step](state, settings, services)
    logger.info("step done", extra={"outcome": result.outcome.value, "attempts": result.attempts,
                                    "query": result.query.status, "import_job": result.import_job.status,
                                    "training": result.training.status, "campaign": result.campaign.status})
    return result.to_dict()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, *_runtime())
