"""How a finished run is told: one `Notification` (SNS message and EventBridge event) per outcome, with figures."""

from __future__ import annotations

from typing import Any

from functions.retraining.clients import Notification
from functions.retraining.run_state import RunState
from functions.retraining.settings import RetrainingSettings
from functions.retraining.workflow import Outcome

DETAIL_TYPES = {Outcome.SUCCEEDED: "RetrainingSucceeded", Outcome.SKIPPED: "RetrainingSkipped",
                Outcome.GATE_REJECTED: "RetrainingGateRejected", Outcome.NOTHING_TO_DEPLOY: "RetrainingNothingToDeploy",
                Outcome.FAILED: "RetrainingFailed"}



def notification(state: RunState, settings: RetrainingSettings) -> Notification:
    data = state.data
    detail: dict[str, Any] = {
        "runId": state.run_id, "executionArn": state.execution_arn, "outcome": state.outcome.value,
        "reason": state.reason, "asOf": state.as_of.isoformat(),
        "importMode": (data.import_mode or settings.import_mode).value, "trainingMode": settings.training_mode.value,
        "interactions": {"rows": data.rows, "users": data.users, "usersWithAtLeast2": data.active_users,
                         "items": data.items, "newRows": data.new_rows, "cutoff": data.cutoff,
                         "previousCutoff": data.previous_cutoff, "skippedRows": data.skipped_rows},
        "query": {"id": state.query.execution_id, "status": state.query.status,
                  "scannedBytes": state.query.scanned_bytes},
        "datasetImportJob": {"arn": state.import_job.arn, "status": state.import_job.status,
                             "failureReason": state.import_job.failure_reason},
        "solutionVersion": {"arn": state.training.arn, "status": state.training.status,
                            "failureReason": state.training.failure_reason},
        "campaign": {"arn": settings.campaign_arn, "status": state.campaign.status,
                     "failureReason": state.campaign.failure_reason,
                     "previousSolutionVersionArn": state.campaign.previous_solution_version,
                     "minProvisionedTPS": state.campaign.min_provisioned_tps},
        "metric": None if state.gate.metric is None else {
            "name": state.gate.metric, "new": state.gate.new_value, "current": state.gate.current_value,
            "margin": state.gate.margin, "passed": state.gate.passed},
    }
    if state.error is not None:
        detail["error"] = {"error": state.error.error, "message": state.error.message}
    headline = {
        Outcome.SUCCEEDED: f"campaign now serves {state.training.arn}",
        Outcome.SKIPPED: state.reason or "skipped",
        Outcome.GATE_REJECTED: state.reason or "gate rejected the new version",
        Outcome.NOTHING_TO_DEPLOY: state.reason or "nothing new to deploy",
        Outcome.FAILED: f"{state.error.error}: {state.error.message}" if state.error else "failed",
    }[state.outcome]
    summary = (f"Retraining run {state.run_id} (run date {state.as_of}) {state.outcome.value}: {headline}\n"
               f"Interactions: {data.rows:,} rows, {data.users:,} users ({data.active_users:,} with ≥ 2), "
               f"{data.items:,} items" + (f", {data.new_rows:,} new" if data.new_rows is not None else "") + ".")
    return Notification(detail_type=DETAIL_TYPES[state.outcome],
                        subject=f"engagement-loop retraining {state.outcome.value}: {state.run_id}",
                        summary=summary, detail=detail)
