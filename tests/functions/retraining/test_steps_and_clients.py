"""The pieces under the runs: settings from the environment, the run state's JSON, error translation, the lock
store, the notifier and the Lambda entry."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from functions.retraining import handler
from functions.retraining.clients import (
    Boto3Notifier, Notification, ResourceInUse, Throttled, translate_errors,
)
from functions.retraining.run_state import ErrorInfo, RunState
from functions.retraining.settings import ImportMode, RetrainingSettings, TrainingMode
from functions.retraining.steps import values_csv
from functions.retraining.workflow import Outcome
from tests.functions.retraining.world import ENV, NOW, RUN_ID, FakeLambdaContext, World


def test_settings_from_env_with_defaults():
    settings = RetrainingSettings.from_env(ENV)
    assert settings.import_mode is ImportMode.FULL and settings.training_mode is TrainingMode.FULL
    assert (settings.database, settings.table, settings.event_bus_name) == ("engagement_loop", "events", "default")
    assert settings.min_provisioned_tps is None and settings.gate_metric is None
    assert settings.exclude_streamed is False
    assert RetrainingSettings.from_env({**ENV, "EXCLUDE_STREAMED": "true"}).exclude_streamed is True
    assert settings.scoring.values == {"_email.open": 1.0, "_email.click": 5.0, "purchase": 20.0}


def test_settings_accept_the_stack_configs_list_form_of_scoring():
    settings = RetrainingSettings.from_env({**ENV, "SCORING": '["_email.open=2", "purchase=30"]',
                                            "IMPORT_MODE": "INCREMENTAL", "TRAINING_MODE": "AUTO"})
    assert settings.scoring.values == {"_email.open": 2.0, "purchase": 30.0}
    assert (settings.import_mode, settings.training_mode) == (ImportMode.INCREMENTAL, TrainingMode.AUTO)


def test_settings_name_every_missing_and_invalid_variable_at_once():
    env = {k: v for k, v in ENV.items() if k not in ("LAKE_BUCKET", "PERSONALIZE_CAMPAIGN_ARN", "TOPIC_ARN")}
    env.update(IMPORT_MODE="append", EXCLUDE_STREAMED="yes", MIN_PROVISIONED_TPS="0", GATE_MARGIN="1.5", HISTORY_DAYS="0",
               SCORING='{"_custom.recommender": 1}')
    with pytest.raises(ValueError) as error:
        RetrainingSettings.from_env(env)
    message = str(error.value)
    for expected in ("LAKE_BUCKET is required", "PERSONALIZE_CAMPAIGN_ARN is required", "TOPIC_ARN is required",
                     "IMPORT_MODE='append' is invalid: expected FULL or INCREMENTAL", "MIN_PROVISIONED_TPS='0'",
                     "GATE_MARGIN='1.5'", "HISTORY_DAYS='0'", "EXCLUDE_STREAMED='yes'", "environment variable SCORING"):
        assert expected in message


def test_run_state_round_trips_through_json_and_reads_the_catch_error():
    state = RunState.from_dict({"run_id": RUN_ID, "started_at": "2026-11-20T02:00:00.123Z"})
    assert state.as_of.isoformat() == "2026-11-20" and state.outcome is Outcome.RUNNING
    data = state.to_dict()
    assert data["query"]["status"] is None and data["campaign"]["status"] is None  # Choice paths always resolve
    caught = {**data, "error": {"Error": "GateError", "Cause": json.dumps({"errorMessage": "no metric",
                                                                           "errorType": "GateError"})}}
    again = RunState.from_dict(json.loads(json.dumps(caught)))
    assert again.error == ErrorInfo(error="GateError", cause=caught["error"]["Cause"])
    assert again.error.message == "no metric"
    assert RunState.from_dict(again.to_dict()) == again
    assert RunState.from_dict({**data, "data": {**data["data"], "import_mode": "INCREMENTAL"}}).data.import_mode \
        is ImportMode.INCREMENTAL


def test_run_state_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"import_job: unknown keys \['arnn'\]"):
        RunState.from_dict({"run_id": "r", "started_at": "2026-11-20T02:00:00Z", "import_job": {"arnn": "x"}})


def test_values_csv_is_the_seeds_layout():
    assert values_csv(RetrainingSettings.from_env(ENV).scoring).splitlines()[0] == "EVENT_TYPE,EVENT_VALUE"


@pytest.mark.parametrize("code, raised", [("ThrottlingException", Throttled), ("TooManyRequestsException", Throttled),
                                          ("LimitExceededException", Throttled), ("ResourceInUseException", ResourceInUse),
                                          ("InvalidInputException", ClientError)])
def test_aws_errors_are_translated_for_the_state_machines_retry(code, raised):
    @translate_errors
    def call():
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "CreateSolutionVersion")

    with pytest.raises(raised) as error:
        call()
    assert type(error.value) is raised


def test_the_lock_is_taken_once_released_only_by_its_run_and_the_cutoff_never_moves_back(world: World):
    runs = world.services(world.settings()).runs
    assert runs.acquire("a", now=NOW, ttl_seconds=60) is None
    assert runs.acquire("a", now=NOW, ttl_seconds=60) is None  # a retried invocation of the same run
    assert runs.acquire("b", now=NOW, ttl_seconds=60) == "a"
    runs.release("b")
    assert runs.acquire("b", now=NOW, ttl_seconds=60) == "a"
    runs.release("a")
    assert runs.acquire("b", now=NOW, ttl_seconds=60) is None
    runs.record_import("b", 200, now=NOW)
    runs.record_import("late", 100, now=NOW)
    assert (runs.last_import().run_id, runs.last_import().cutoff) == ("b", 200)


def test_a_rejected_event_fails_the_publish():
    class Sns:
        def publish(self, **request):
            self.request = request

    class Events:
        def put_events(self, Entries):
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow"}]}

    sns = Sns()
    notifier = Boto3Notifier(sns, Events(), topic_arn="arn:aws:sns:eu-west-1:123456789012:t", event_bus_name="b")
    with pytest.raises(Throttled, match="PutEvents: ThrottlingException"):
        notifier.publish(Notification("RetrainingFailed", "engagement-loop retraining failed: ≥ run", "s", {}))
    assert sns.request["Subject"] == "engagement-loop retraining failed: ? run"  # SNS subjects are ASCII


def test_lambda_handler_dispatches_on_step(world: World, monkeypatch: pytest.MonkeyPatch):
    settings = world.settings()
    monkeypatch.setattr(handler, "_runtime", lambda: (settings, world.services(settings)))
    result = handler.lambda_handler({"step": "acquire_lock", "state": {"run_id": RUN_ID,
                                                                       "started_at": "2026-11-20T02:00:00Z"}},
                                    FakeLambdaContext())
    assert result["outcome"] == "running" and world.item("retraining#lock")["run_id"] == {"S": RUN_ID}
    with pytest.raises(ValueError, match="event step 'train' is not one of acquire_lock, "):
        handler.lambda_handler({"step": "train", "state": {}}, FakeLambdaContext())


def test_lambda_runtime_reads_the_environment(monkeypatch: pytest.MonkeyPatch):
    handler._runtime.cache_clear()
    monkeypatch.setattr(handler, "boto3_services", lambda settings: "services")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    try:
        settings, services = handler._runtime()
        assert settings.bucket == ENV["LAKE_BUCKET"] and services == "services"
    finally:
        handler._runtime.cache_clear()
