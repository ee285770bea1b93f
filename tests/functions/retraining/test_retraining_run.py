"""Whole runs through the generated definition, with recorded Personalize/Athena responses and moto for the rest."""

from __future__ import annotations

from datetime import date, timedelta, timezone

import pytest
from botocore.stub import ANY

from functions.retraining.handler import handle
from functions.retraining.sql import InteractionsQuery, build_interactions_sql
from tests.functions.retraining.world import (
    BUCKET, IMPORT_JOB_ARN, NEW_VERSION, NOW, OLD_VERSION, QUERY_ID, RESULT_URI, RUN_ID,
    SOLUTION_ARN, World, interactions,
)

LOCK = "retraining#lock"
LAST_IMPORT = "retraining#last-import"


def the_event(world: World, detail_type: str) -> dict:
    (event,) = world.events()
    assert event["source"] == "engagement-loop.retraining"
    assert event["detail-type"] == detail_type
    (message,) = world.messages()
    assert message["MessageAttributes"]["detail_type"]["Value"] == detail_type
    assert message["Subject"].startswith("engagement-loop retraining ")
    return event["detail"]


def test_a_full_run_imports_trains_and_rolls_the_campaign(world: World):
    rows = interactions()
    world.query(rows=rows)
    world.import_job()
    world.training()
    world.campaign_update()

    execution = world.run()

    assert execution.status == "SUCCEEDED" and execution.end_state == "Succeeded"
    assert execution.path[:4] == ["AcquireLock", "IsAlreadyRunning", "StartInteractionsQuery", "QueryStatus"]
    # One Wait per pending status, the one each Start step records included: query QUEUED, RUNNING; import
    # PENDING ×2, IN_PROGRESS; training PENDING, IN_PROGRESS; campaign PENDING, IN_PROGRESS. FAST_SPEC: 1 s each.
    assert execution.waits == [1] * 9 and execution.retried == []
    detail = the_event(world, "RetrainingSucceeded")
    # The run date D is the execution's start (UTC), as the context object gives it.
    run_date = execution.started.astimezone(timezone.utc).date()
    assert detail["outcome"] == "succeeded" and detail["runId"] == RUN_ID and detail["asOf"] == run_date.isoformat()
    assert detail["interactions"] == {"rows": 1200, "users": 30, "usersWithAtLeast2": 30, "items": 17,
                                      "newRows": None, "cutoff": rows[-1][4], "previousCutoff": None,
                                      "skippedRows": 0}
    assert detail["datasetImportJob"]["arn"] == IMPORT_JOB_ARN
    assert detail["solutionVersion"] == {"arn": NEW_VERSION, "status": "ACTIVE", "failureReason": None}
    assert detail["campaign"]["previousSolutionVersionArn"] == OLD_VERSION
    assert detail["campaign"]["minProvisionedTPS"] == 5
    assert detail["query"] == {"id": QUERY_ID, "status": "SUCCEEDED", "scannedBytes": 123_456}
    # The staged import file holds the query result's rows, re-written (tested below); values.csv keeps the
    # seed's layout.
    assert world.read(f"interactions/run={RUN_ID}/interactions.csv").splitlines()[1:] == [
        f"{u},{i},{t},{v!r},{ts}" for u, i, t, v, ts in rows]
    assert world.read("interactions/values.csv") == \
        "EVENT_TYPE,EVENT_VALUE\n_email.open,1.0\n_email.click,5.0\npurchase,20.0\n"
    assert world.item(LOCK) is None
    assert world.item(LAST_IMPORT)["cutoff"] == {"N": str(rows[-1][4])}
    assert execution.output["outcome"] == "succeeded"


def test_too_little_data_ends_as_skipped_not_failed(world: World):
    world.query(rows=interactions(users=10, per_user=3))

    execution = world.run()

    assert (execution.status, execution.end_state) == ("SUCCEEDED", "Skipped")
    detail = the_event(world, "RetrainingSkipped")
    assert detail["reason"] == ("too little data for Amazon Personalize: 30 interactions < 1,000; "
                                "10 users with ≥ 2 interactions < 25")
    assert detail["interactions"]["rows"] == 30
    assert world.item(LOCK) is None
    assert world.item(LAST_IMPORT) is None


def test_an_empty_result_is_skipped(world: World):
    world.query(rows=[])
    assert world.run().end_state == "Skipped"


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_a_failed_or_cancelled_query_ends_the_run(world: World, state: str):
    world.query("QUEUED", state, reason="Query exhausted resources at this scale factor")

    execution = world.run()

    assert (execution.status, execution.end_state) == ("FAILED", "Failed")
    assert "QueryFailed" in execution.path
    detail = the_event(world, "RetrainingFailed")
    assert detail["error"]["error"] == "QueryFailed"
    assert detail["query"]["status"] == state
    assert world.item(LOCK) is None


def test_a_failed_import_ends_the_run_with_its_reason(world: World):
    world.query(rows=interactions())
    world.import_job("CREATE PENDING", "CREATE FAILED", failure_reason="Input CSV is missing the column USER_ID")

    execution = world.run()

    assert execution.end_state == "Failed" and "ImportFailed" in execution.path
    detail = the_event(world, "RetrainingFailed")
    assert detail["datasetImportJob"] == {"arn": IMPORT_JOB_ARN, "status": "CREATE FAILED",
                                          "failureReason": "Input CSV is missing the column USER_ID"}
    assert world.item(LAST_IMPORT) is None


@pytest.mark.parametrize("statuses", [("CREATE IN_PROGRESS", "CREATE FAILED"),
                                      ("CREATE IN_PROGRESS", "CREATE STOPPING", "CREATE STOPPED")])
def test_failed_or_stopped_training_ends_the_run(world: World, statuses):
    world.query(rows=interactions())
    world.import_job()
    world.training(*statuses, failure_reason="stopped by StopSolutionVersionCreation"
                   if statuses[-1] == "CREATE STOPPED" else "training data too sparse")

    execution = world.run()

    assert execution.end_state == "Failed" and "TrainingFailed" in execution.path
    detail = the_event(world, "RetrainingFailed")
    assert detail["solutionVersion"]["status"] == statuses[-1]
    # The import landed, so an incremental run must not append those rows again.
    assert world.item(LAST_IMPORT) is not None


def test_gate_rejects_a_version_worse_than_the_deployed_one(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.metrics(NEW_VERSION, normalized_discounted_cumulative_gain_at_10=0.20, coverage=0.5)
    world.describe_campaign(deployed=OLD_VERSION)
    world.metrics(OLD_VERSION, normalized_discounted_cumulative_gain_at_10=0.30, coverage=0.4)

    execution = world.run(GATE_METRIC="normalized_discounted_cumulative_gain_at_10", GATE_MARGIN="0.05")

    assert (execution.status, execution.end_state) == ("SUCCEEDED", "GateRejected")
    assert "update_campaign" not in execution.steps
    detail = the_event(world, "RetrainingGateRejected")
    assert detail["metric"] == {"name": "normalized_discounted_cumulative_gain_at_10", "new": 0.20,
                                "current": 0.30, "margin": 0.05, "passed": False}
    assert OLD_VERSION in detail["reason"]


def test_gate_passes_within_the_margin_and_the_campaign_is_updated(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.metrics(NEW_VERSION, precision_at_10=0.286)
    world.describe_campaign(deployed=OLD_VERSION)
    world.metrics(OLD_VERSION, precision_at_10=0.30)
    world.campaign_update()

    execution = world.run(GATE_METRIC="precision_at_10", GATE_MARGIN="0.05")

    assert execution.end_state == "Succeeded"
    assert the_event(world, "RetrainingSucceeded")["metric"]["passed"] is True


def test_gate_metric_the_version_does_not_report_fails_the_run(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.metrics(NEW_VERSION, coverage=0.5)

    execution = world.run(GATE_METRIC="precision_at_10")

    assert execution.end_state == "Failed"
    detail = the_event(world, "RetrainingFailed")
    assert detail["error"]["error"] == "GateError" and "coverage" in detail["error"]["message"]


def test_a_failed_campaign_update_ends_the_run(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.campaign_update("CREATE IN_PROGRESS", "CREATE FAILED", failure_reason="Insufficient capacity")

    execution = world.run()

    assert execution.end_state == "Failed" and "CampaignFailed" in execution.path
    detail = the_event(world, "RetrainingFailed")
    assert detail["campaign"]["status"] == "CREATE FAILED"
    assert detail["campaign"]["failureReason"] == "Insufficient capacity"


def test_someone_else_updating_the_campaign_meanwhile_fails_the_run(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.campaign_update("CREATE IN_PROGRESS")
    world.describe_campaign(update={"solutionVersionArn": f"{SOLUTION_ARN}/someone-else", "status": "ACTIVE"})

    execution = world.run()

    assert execution.end_state == "Failed"
    assert the_event(world, "RetrainingFailed")["error"]["error"] == "CampaignConflict"


def test_an_overlapping_run_exits_cleanly_and_leaves_the_lock(world: World):
    world.query("RUNNING")  # the first run gets as far as its query
    first = world.settings()
    services = world.services(first)
    state = handle({"step": "acquire_lock", "state": {"run_id": RUN_ID, "started_at": "2026-11-20T02:00:00Z"}},
                   first, services)
    state = handle({"step": "start_interactions_query", "state": state}, first, services)
    handle({"step": "check_query", "state": state}, first, services)

    second = world.run(name="run-2")

    assert (second.status, second.end_state) == ("SUCCEEDED", "AlreadyRunning")
    assert second.steps == ["acquire_lock"]
    assert second.output["reason"] == f"run {RUN_ID} is still in progress"
    assert world.item(LOCK)["run_id"] == {"S": RUN_ID}
    assert world.events() == [] and world.messages() == []


def test_an_expired_lock_is_taken_over(world: World):
    world.dynamodb.put_item(TableName="retraining-runs", Item={
        "pk": {"S": LOCK}, "run_id": {"S": "crashed"}, "expires_at": {"N": str(int(NOW.timestamp()) - 1)}})
    world.query(rows=[])

    assert world.run().end_state == "Skipped"


def test_minprovisionedtps_is_kept_from_the_campaign(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.campaign_update(current_tps=7, expected_tps=7)  # the UpdateCampaign request is checked for 7

    assert world.run().end_state == "Succeeded"


def test_minprovisionedtps_is_the_configured_value_when_set(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.campaign_update(current_tps=7, expected_tps=2)

    assert world.run(MIN_PROVISIONED_TPS="2").end_state == "Succeeded"
    assert the_event(world, "RetrainingSucceeded")["campaign"]["minProvisionedTPS"] == 2


def test_update_training_mode_is_passed_to_personalize(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training(mode="UPDATE")
    world.campaign_update()

    assert world.run(TRAINING_MODE="UPDATE").end_state == "Succeeded"


def test_scoring_model_is_set_as_the_solutions_event_weights_before_training(world: World):
    world.query(rows=interactions())
    world.import_job()
    # Stubber checks call order and parameters: update_solution must come before create_solution_version.
    world.personalize.add_response("update_solution", {"solutionArn": SOLUTION_ARN}, {
        "solutionArn": SOLUTION_ARN, "solutionUpdateConfig": {"eventsConfig": {"eventParametersList": [
            {"eventType": "_email.click", "weight": 0.25}, {"eventType": "_email.open", "weight": 0.05},
            {"eventType": "purchase", "weight": 1.0}]}}})
    world.training()
    world.campaign_update()

    assert world.run(SOLUTION_EVENTS_CONFIG="true").end_state == "Succeeded"


def test_event_weights_are_not_touched_unless_configured(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()  # a stray update_solution call would fail the Stubber's expected order
    world.campaign_update()

    assert world.run(SOLUTION_EVENTS_CONFIG="false").end_state == "Succeeded"


def record_import(world: World, cutoff: int) -> None:
    world.services(world.settings()).runs.record_import("earlier-run", cutoff, now=NOW - timedelta(days=1))


def test_incremental_imports_only_rows_newer_than_the_last_import(world: World):
    rows = interactions()  # 1,200 rows
    record_import(world, rows[149][4])
    world.query(rows=rows)
    world.import_job(mode="INCREMENTAL")
    world.training()
    world.campaign_update()

    execution = world.run(IMPORT_MODE="INCREMENTAL")

    assert execution.end_state == "Succeeded"
    staged = world.read(f"interactions/run={RUN_ID}/interactions.csv").splitlines()
    assert staged[0] == "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP"
    assert len(staged) == 1 + 1050 and staged[1].endswith(f",{rows[150][4]}")
    figures = the_event(world, "RetrainingSucceeded")["interactions"]
    assert (figures["rows"], figures["newRows"], figures["previousCutoff"]) == (1200, 1050, rows[149][4])
    assert world.item(LAST_IMPORT)["cutoff"] == {"N": str(rows[-1][4])}


def test_incremental_with_fewer_than_1000_new_rows_is_skipped(world: World):
    rows = interactions()
    record_import(world, rows[299][4])  # 900 newer rows
    world.query(rows=rows)

    execution = world.run(IMPORT_MODE="INCREMENTAL")

    assert execution.end_state == "Skipped"
    detail = the_event(world, "RetrainingSkipped")
    assert detail["reason"].startswith("900 interactions newer than the last import")
    assert detail["importMode"] == "INCREMENTAL"
    assert world.item(LAST_IMPORT)["cutoff"] == {"N": str(rows[299][4])}  # unchanged: those rows come next time


def test_incremental_without_any_import_yet_imports_in_full(world: World):
    world.query(rows=interactions())
    world.import_job(mode="FULL")  # Personalize accepts INCREMENTAL only once the dataset holds bulk data
    world.training()
    world.campaign_update()

    assert world.run(IMPORT_MODE="INCREMENTAL").end_state == "Succeeded"
    assert the_event(world, "RetrainingSucceeded")["importMode"] == "FULL"


def describe_solution(world: World, *, auto: bool = True, schedule: str | None = None,
                      created: timedelta = -timedelta(days=60)) -> None:
    solution: dict = {"solutionArn": SOLUTION_ARN, "name": "shop-recs", "performAutoTraining": auto,
                      "creationDateTime": NOW + created, "status": "ACTIVE"}
    if schedule:
        solution["solutionConfig"] = {"autoTrainingConfig": {"schedulingExpression": schedule}}
    world.personalize.add_response("describe_solution", {"solution": solution}, {"solutionArn": SOLUTION_ARN})


def list_versions(world: World, *versions: tuple[str, str, timedelta], pages: int = 1, **solution) -> None:
    """DescribeSolution (auto-training on), then ListSolutionVersions answering (arn, status, created relative to
    NOW) in the order given, over `pages` pages."""
    describe_solution(world, **solution)
    entries = [{"solutionVersionArn": arn, "status": status, "creationDateTime": NOW + created,
                "trainingType": "AUTOMATIC", **({"failureReason": "training data too sparse"}
                                                if status == "CREATE FAILED" else {})}
               for arn, status, created in versions]
    size = -(-len(entries) // pages) if entries else 0
    for page in range(pages):
        chunk = entries[page * size:(page + 1) * size] if size else []
        answer: dict = {"solutionVersions": chunk}
        request: dict = {"solutionArn": SOLUTION_ARN}
        if page < pages - 1:
            answer["nextToken"] = f"page-{page + 1}"
        if page:
            request["nextToken"] = f"page-{page}"
        world.personalize.add_response("list_solution_versions", answer, request)


TRAINING_NOW = f"{SOLUTION_ARN}/training-now"


def test_auto_training_imports_then_deploys_the_newest_active_version_without_waiting(world: World):
    world.query(rows=interactions())
    world.import_job()
    # Newest first is not promised by ListSolutionVersions; a version still training is never waited for.
    list_versions(world, (OLD_VERSION, "ACTIVE", -timedelta(days=14)), (TRAINING_NOW, "CREATE IN_PROGRESS",
                  timedelta(minutes=5)), (NEW_VERSION, "ACTIVE", -timedelta(days=1)))
    world.describe_campaign(deployed=OLD_VERSION)
    world.campaign_update()

    execution = world.run(TRAINING_MODE="AUTO", auto_training=True)

    assert execution.end_state == "Succeeded"
    # No CreateSolutionVersion (the Stubber would refuse it) and no training loop.
    assert not {"StartTraining", "CheckTraining", "WaitForTraining"} & set(execution.path)
    assert execution.steps.count("pick_deployable_version") == 1
    detail = the_event(world, "RetrainingSucceeded")
    assert detail["solutionVersion"]["arn"] == NEW_VERSION and detail["trainingMode"] == "AUTO"
    assert detail["campaign"]["previousSolutionVersionArn"] == OLD_VERSION


@pytest.mark.parametrize("versions, campaign, why", [
    # The campaign serves the newest ACTIVE version already (e.g. it syncs with the latest version).
    ([(OLD_VERSION, "ACTIVE", -timedelta(days=14)), (NEW_VERSION, "ACTIVE", -timedelta(days=1))],
     {"deployed": NEW_VERSION}, f"the campaign serves {NEW_VERSION}"),
    # It is being rolled onto it right now.
    ([(OLD_VERSION, "ACTIVE", -timedelta(days=14)), (NEW_VERSION, "ACTIVE", -timedelta(days=1))],
     {"deployed": OLD_VERSION, "update": {"solutionVersionArn": NEW_VERSION, "status": "CREATE IN_PROGRESS"}},
     f"the campaign is being rolled onto {NEW_VERSION}"),
    # The only newer version is still training, or failed.
    ([(OLD_VERSION, "ACTIVE", -timedelta(days=14)), (NEW_VERSION, "CREATE IN_PROGRESS", -timedelta(hours=1)),
      (TRAINING_NOW, "CREATE FAILED", -timedelta(hours=2))],
     {"deployed": OLD_VERSION}, f"the campaign serves {OLD_VERSION}"),
    # Auto-training has not made any version yet.
    ([(NEW_VERSION, "CREATE PENDING", -timedelta(minutes=1))], None, "has no ACTIVE version yet"),  # new solution
])
def test_auto_training_with_nothing_newer_ends_as_nothing_to_deploy(world: World, versions, campaign, why):
    world.query(rows=interactions())
    world.import_job()
    # A solution created two days ago may not have trained yet; an older one would count as stalled.
    list_versions(world, *versions, **({} if campaign is not None else {"created": -timedelta(days=2)}))
    if campaign is not None:
        world.describe_campaign(**campaign)

    execution = world.run(TRAINING_MODE="AUTO", auto_training=True)

    assert (execution.status, execution.end_state) == ("SUCCEEDED", "NothingToDeploy")
    assert "update_campaign" not in execution.steps
    detail = the_event(world, "RetrainingNothingToDeploy")
    assert detail["outcome"] == "nothing_to_deploy"
    assert detail["reason"].startswith("nothing new to deploy") and why in detail["reason"]
    assert world.item(LOCK) is None
    assert world.item(LAST_IMPORT) is not None  # the import landed all the same


@pytest.mark.parametrize("solution, versions, message", [
    ({"auto": False}, [(OLD_VERSION, "ACTIVE", -timedelta(days=3))], "has performAutoTraining off"),
    # Default schedule, 7 days: nothing ACTIVE for 20 days (> 2 × 7 + 1) while trainings fail.
    ({}, [(OLD_VERSION, "ACTIVE", -timedelta(days=20)), (NEW_VERSION, "CREATE FAILED", -timedelta(days=6))],
     "runs every 7 days; the newest failed one says: training data too sparse"),
    ({"schedule": "rate(2 days)", "created": -timedelta(days=6)}, [], "runs every 2 days"),
])
def test_auto_training_that_makes_nothing_fails_the_run_so_the_alarm_fires(world: World, solution, versions, message):
    """`nothing_to_deploy` is a success; a solution that will never train again must not be one every day."""
    world.query(rows=interactions())
    world.import_job()
    if solution.get("auto") is False:
        describe_solution(world, auto=False)  # nothing is listed once auto-training is known to be off
    else:
        list_versions(world, *versions, **solution)

    execution = world.run(TRAINING_MODE="AUTO", auto_training=True)

    assert execution.end_state == "Failed"
    error = the_event(world, "RetrainingFailed")["error"]
    assert error["error"] == "AutoTrainingStalled" and message in error["message"]


def test_auto_training_within_a_longer_schedule_is_not_stalled(world: World):
    world.query(rows=interactions())
    world.import_job()
    list_versions(world, (NEW_VERSION, "ACTIVE", -timedelta(days=40)), schedule="rate(30 days)")
    world.describe_campaign(deployed=NEW_VERSION)

    assert world.run(TRAINING_MODE="AUTO", auto_training=True).end_state == "NothingToDeploy"


def test_auto_training_reads_every_page_of_versions(world: World):
    world.query(rows=interactions())
    world.import_job()
    list_versions(world, (OLD_VERSION, "ACTIVE", -timedelta(days=14)), (TRAINING_NOW, "CREATE FAILED",
                  -timedelta(days=3)), (NEW_VERSION, "ACTIVE", -timedelta(days=1)), pages=3)
    world.describe_campaign(deployed=OLD_VERSION)
    world.campaign_update()

    execution = world.run(TRAINING_MODE="AUTO", auto_training=True)

    assert execution.end_state == "Succeeded"
    assert the_event(world, "RetrainingSucceeded")["solutionVersion"]["arn"] == NEW_VERSION


def test_auto_training_sets_event_weights_keeping_auto_training_and_a_busy_solution_does_not_fail_the_run(
        world: World):
    world.query(rows=interactions())
    world.import_job()
    list_versions(world, (OLD_VERSION, "ACTIVE", -timedelta(days=14)), (NEW_VERSION, "ACTIVE", -timedelta(days=1)))
    world.describe_campaign(deployed=OLD_VERSION)
    # Training or updating: ResourceInUse. The weights wait for the next run; the deployment goes on.
    world.personalize.add_client_error("update_solution", "ResourceInUseException", "solution is being updated",
                                       expected_params={"solutionArn": SOLUTION_ARN, "performAutoTraining": True,
                                                        "solutionUpdateConfig": ANY})
    world.campaign_update()

    execution = world.run(TRAINING_MODE="AUTO", SOLUTION_EVENTS_CONFIG="true", auto_training=True)

    assert execution.end_state == "Succeeded" and execution.retried == []


def test_auto_training_retries_a_rollout_that_failed_onto_the_newest_version(world: World):
    """A failed update does not count as deployed: the next run tries again (and fails loudly if it fails)."""
    world.query(rows=interactions())
    world.import_job()
    list_versions(world, (OLD_VERSION, "ACTIVE", -timedelta(days=14)), (NEW_VERSION, "ACTIVE", -timedelta(days=1)))
    world.describe_campaign(deployed=OLD_VERSION, update={"solutionVersionArn": NEW_VERSION, "status": "CREATE FAILED",
                                                          "failureReason": "capacity"})
    world.campaign_update()

    assert world.run(TRAINING_MODE="AUTO", auto_training=True).end_state == "Succeeded"


def test_auto_training_rolls_a_campaign_serving_another_solutions_version_onto_this_one(world: World):
    world.query(rows=interactions())
    world.import_job()
    list_versions(world, (NEW_VERSION, "ACTIVE", -timedelta(days=1)))
    world.describe_campaign(deployed="arn:aws:personalize:eu-west-1:123456789012:solution/other/0001")
    world.campaign_update()

    assert world.run(TRAINING_MODE="AUTO", auto_training=True).end_state == "Succeeded"


def test_auto_training_gates_the_picked_version(world: World):
    world.query(rows=interactions())
    world.import_job()
    list_versions(world, (OLD_VERSION, "ACTIVE", -timedelta(days=14)), (NEW_VERSION, "ACTIVE", -timedelta(days=1)))
    world.describe_campaign(deployed=OLD_VERSION)
    world.metrics(NEW_VERSION, precision_at_10=0.1)
    world.describe_campaign(deployed=OLD_VERSION)
    world.metrics(OLD_VERSION, precision_at_10=0.3)

    execution = world.run(TRAINING_MODE="AUTO", GATE_METRIC="precision_at_10", auto_training=True)

    assert execution.end_state == "GateRejected"
    assert the_event(world, "RetrainingGateRejected")["solutionVersion"]["arn"] == NEW_VERSION


def test_a_definition_of_the_other_training_mode_fails_the_run_instead_of_training(world: World):
    """After a trainingMode change, an execution of the older definition must not train against the new mode."""
    world.query(rows=interactions())
    world.import_job()

    execution = world.run(TRAINING_MODE="AUTO", auto_training=False)

    assert execution.end_state == "Failed"
    message = the_event(world, "RetrainingFailed")["error"]["message"]
    assert "TRAINING_MODE is AUTO" in message and "pulumi up" in message


def test_a_campaign_already_serving_the_version_is_not_updated(world: World):
    world.query(rows=interactions())
    world.import_job()
    world.training()
    world.describe_campaign(deployed=NEW_VERSION, tps=5)

    execution = world.run()

    assert execution.end_state == "Succeeded" and "WaitForCampaign" not in execution.path


def test_every_loop_gives_up_at_its_bound(world: World):
    world.query(rows=interactions())
    world.import_job("CREATE PENDING", *["CREATE IN_PROGRESS"] * 4)  # FAST_SPEC: 5 checks

    execution = world.run()

    assert execution.end_state == "Failed" and "ImportTimedOut" in execution.path
    assert execution.path.count("CheckImport") == 5
    assert the_event(world, "RetrainingFailed")["error"]["error"] == "ImportTimedOut"


def test_throttling_and_resource_in_use_are_retried(world: World):
    world.query(rows=interactions())
    world.personalize.add_client_error("create_dataset_import_job", "ThrottlingException", "Rate exceeded")
    world.personalize.add_client_error("create_dataset_import_job", "ResourceInUseException",
                                       "Another import job is in progress")
    world.import_job()
    world.training()
    world.campaign_update()

    # And the Lambda service itself refuses the first invocation (HTTP 429).
    execution = world.run(throttle_invocations=1)

    assert execution.end_state == "Succeeded"
    assert execution.retried == ["Lambda.TooManyRequestsException", "Throttled", "ResourceInUse"]
    assert execution.steps.count("acquire_lock") == 2
    # FULL jitter: each first retry waits a random time up to its IntervalSeconds (2 s; 60 s for ResourceInUse).
    first_lambda, first_throttle, first_in_use = execution.retry_intervals
    assert 0 <= first_lambda <= 2 and 0 <= first_throttle <= 2 and 0 <= first_in_use <= 60


def test_any_other_error_is_caught_into_the_failure_notification(world: World):
    world.query(rows=interactions())
    world.personalize.add_client_error("create_dataset_import_job", "AccessDeniedException",
                                       "not authorized to perform: personalize:CreateDatasetImportJob")

    execution = world.run()

    assert execution.end_state == "Failed" and execution.retried == []
    detail = the_event(world, "RetrainingFailed")
    assert detail["error"]["error"] == "ClientError"
    assert "not authorized" in detail["error"]["message"]
    assert world.item(LOCK) is None


def test_a_result_that_is_not_the_interactions_layout_fails_the_run(world: World):
    world.query()
    world.s3.put_object(Bucket=BUCKET, Key=RESULT_URI.split("/", 3)[3], Body=b'"USER_ID","ITEM_ID"\n"u","i"\n')

    execution = world.run()

    assert execution.end_state == "Failed"
    detail = the_event(world, "RetrainingFailed")
    assert detail["error"]["error"] == "DataError" and "expected USER_ID,ITEM_ID" in detail["error"]["message"]


def test_incremental_query_reaches_back_to_the_last_import(world: World):
    """A short history window is widened to the last import's day, so skipped days are not lost."""
    record_import(world, int((NOW - timedelta(days=5)).timestamp()))
    world.athena.add_response("start_query_execution", {"QueryExecutionId": QUERY_ID}, {
        "QueryString": ANY, "ClientRequestToken": ANY, "QueryExecutionContext": ANY, "WorkGroup": ANY,
        "ResultConfiguration": ANY})
    settings = world.settings(IMPORT_MODE="INCREMENTAL", HISTORY_DAYS="1")
    sent = []
    world.athena_client.meta.events.register("provide-client-params.athena.StartQueryExecution",
                                             lambda params, **_: sent.append(params["QueryString"]))
    handle({"step": "start_interactions_query", "state": {"run_id": RUN_ID, "started_at": "2026-11-20T02:00:00Z"}},
           settings, world.services(settings))
    widened = InteractionsQuery(scoring=settings.scoring, as_of=date(2026, 11, 20), history_days=5)
    assert sent == [build_interactions_sql(widened)]  # engagements from 2026-11-15, the last import's day


def test_query_leaves_out_streamed_rows_when_the_stack_streams_events(world: World):
    world.athena.add_response("start_query_execution", {"QueryExecutionId": QUERY_ID}, {
        "QueryString": ANY, "ClientRequestToken": ANY, "QueryExecutionContext": ANY, "WorkGroup": ANY,
        "ResultConfiguration": ANY})
    settings = world.settings(EXCLUDE_STREAMED="true")
    sent = []
    world.athena_client.meta.events.register("provide-client-params.athena.StartQueryExecution",
                                             lambda params, **_: sent.append(params["QueryString"]))
    handle({"step": "start_interactions_query", "state": {"run_id": RUN_ID, "started_at": "2026-11-20T02:00:00Z"}},
           settings, world.services(settings))
    expected = InteractionsQuery(scoring=settings.scoring, as_of=date(2026, 11, 20), exclude_streamed=True)
    assert sent == [build_interactions_sql(expected)]


# An id with a comma and quotes inside: Athena quotes it (as every field), Personalize needs it quoted once.
AWKWARD = ("doe, jane", 'sku "7", blue', "purchase", 20.0, 1_763_000_000 + 1200 * 60)
AWKWARD_LINE = '"doe, jane","sku ""7"", blue",purchase,20.0,1763072000'


@pytest.mark.parametrize("mode, last_import, first_line", [
    # FULL: every row, the first one of the result.
    ("FULL", None, "user-0,item-0,_email.click,5.0,1763000000"),
    # INCREMENTAL before any import: imported in FULL, every row.
    ("INCREMENTAL", None, "user-0,item-0,_email.click,5.0,1763000000"),
    # INCREMENTAL: the rows newer than the last import's cutoff (rows[149]), from rows[150].
    ("INCREMENTAL", 149, "user-0,item-14,_email.click,5.0,1763009000"),
])
def test_the_staged_file_is_rewritten_with_a_plain_header_unquoted_numbers_and_quoted_awkward_ids(
        world: World, mode: str, last_import: int | None, first_line: str):
    rows = [*interactions(), AWKWARD]
    if last_import is not None:
        record_import(world, rows[last_import][4])
    world.query(rows=rows)
    world.import_job(mode="FULL" if last_import is None else "INCREMENTAL")
    world.training()
    world.campaign_update()

    assert world.run(IMPORT_MODE=mode).end_state == "Succeeded"

    assert world.read(RESULT_URI.split("/", 3)[3]).startswith('"USER_ID","ITEM_ID"')  # Athena's, quoted
    staged = world.s3.get_object(Bucket=BUCKET, Key=f"interactions/run={RUN_ID}/interactions.csv")["Body"].read()
    imported = rows if last_import is None else rows[last_import + 1:]
    assert staged == ("USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP\n"
                      + "".join(f"{u},{i},{t},{v!r},{ts}\n" for u, i, t, v, ts in imported[:-1])
                      + AWKWARD_LINE + "\n").encode()
    lines = staged.decode().split("\n")
    assert lines[0] == "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP"
    assert lines[1] == first_line
    assert lines[-2:] == [AWKWARD_LINE, ""]


def test_a_lake_row_with_a_line_break_in_an_id_is_skipped_and_counted_never_staged(world: World):
    """Personalize wants each record on one line; one such row in the lake would fail every FULL import."""
    rows = [*interactions(), ("user\n1", "item-1", "purchase", 20.0, 1_763_000_000), ("user-2", "it\rem", "purchase",
                                                                                         20.0, 1_763_000_001)]
    world.query(rows=rows)
    world.import_job()
    world.training()
    world.campaign_update()

    assert world.run().end_state == "Succeeded"

    staged = world.read(f"interactions/run={RUN_ID}/interactions.csv")
    assert staged.count("\n") == 1 + 1200 and "\r" not in staged
    figures = the_event(world, "RetrainingSucceeded")["interactions"]
    assert (figures["rows"], figures["skippedRows"]) == (1200, 2)
