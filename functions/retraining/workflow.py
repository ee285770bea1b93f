"""The retraining run as an Amazon States Language definition, generated from a `WorkflowSpec`.

```
AcquireLock ─► (already running? ─► AlreadyRunning)
  ─► StartInteractionsQuery ─► QueryStatus ⟲ WaitForQuery/CheckQuery
  ─► CheckData ─► (too little data? ─► NotifySkipped ─► Skipped)
  ─► StartImport ─► ImportStatus ⟲ WaitForImport/CheckImport
  ─► StartTraining ─► TrainingStatus ⟲ WaitForTraining/CheckTraining          (FULL and UPDATE training)
     PickDeployableVersion ─► (nothing newer? ─► NotifyNothingToDeploy ─► NothingToDeploy)   (AUTO training)
  ─► Gate ─► (worse than deployed? ─► NotifyGateRejected ─► GateRejected)
  ─► UpdateCampaign ─► CampaignStatus ⟲ WaitForCampaign/CheckCampaign
  ─► NotifySucceeded ─► Succeeded
any error, failed status or exhausted loop ─► NotifyFailure ─► Failed
```

Every Task invokes the one handler Lambda (`functions.retraining.handler.lambda_handler`) with
`{"step": <Step>, "state": <RunState>}` and its output is the next RunState. Every Task has a timeout, retries
throttling and ResourceInUse with backoff, and catches everything into NotifyFailure. Every polling loop is a
Choice on the job's raw status: success moves on, each failed status fails the run, pending statuses wait —
and only while the step-maintained `attempts` counter is below the loop's bound; an unknown status fails too.
The tests run it on moto's Step Functions interpreter and through asl-validator.

This module is imported by the Pulumi component, so it depends on the standard library only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Step(str, enum.Enum):
    """The handler's steps; the Lambda payload's `step`."""

    ACQUIRE_LOCK = "acquire_lock"
    START_QUERY = "start_interactions_query"
    CHECK_QUERY = "check_query"
    CHECK_DATA = "check_data"
    START_IMPORT = "start_import"
    CHECK_IMPORT = "check_import"
    START_TRAINING = "start_training"
    CHECK_TRAINING = "check_training"
    PICK_DEPLOYABLE = "pick_deployable_version"
    GATE = "gate"
    UPDATE_CAMPAIGN = "update_campaign"
    CHECK_CAMPAIGN = "check_campaign"
    NOTIFY = "notify"


class Outcome(str, enum.Enum):
    """How a run ended (`running` until it has)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    ALREADY_RUNNING = "already_running"
    GATE_REJECTED = "gate_rejected"
    NOTHING_TO_DEPLOY = "nothing_to_deploy"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobStatuses:
    """What each status of one kind of job means to the run. Anything unlisted ends the run as a failure."""

    success: str
    pending: frozenset[str]
    failed: frozenset[str]


# Statuses from the Athena and Personalize API references (QueryExecutionState, DatasetImportJob, SolutionVersion,
# CampaignUpdateSummary). A campaign being deleted will not come back, so its DELETE statuses end the run.
QUERY_STATUSES = JobStatuses("SUCCEEDED", frozenset({"QUEUED", "RUNNING"}), frozenset({"FAILED", "CANCELLED"}))
IMPORT_STATUSES = JobStatuses("ACTIVE", frozenset({"CREATE PENDING", "CREATE IN_PROGRESS"}),
                              frozenset({"CREATE FAILED"}))
TRAINING_STATUSES = JobStatuses(
    "ACTIVE",
    frozenset({"CREATE PENDING", "CREATE IN_PROGRESS", "CREATE STOPPING"}),
    frozenset({"CREATE FAILED", "CREATE STOPPED"}),
)
CAMPAIGN_STATUSES = JobStatuses("ACTIVE", frozenset({"CREATE PENDING", "CREATE IN_PROGRESS"}),
                                frozenset({"CREATE FAILED", "DELETE PENDING", "DELETE IN_PROGRESS"}))

RETRYABLE_ERRORS = ("Throttled", "ResourceInUse", "Lambda.TooManyRequestsException", "Lambda.ServiceException",
                    "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                    "Lambda.ClientExecutionTimeoutException")
"""Retried with backoff by every Task: our translated AWS errors, Lambda's throttling and the transient Lambda
service errors the Step Functions guide names ("Handle Lambda service exceptions",
https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html). A function error of
our own (its `errorType`) or `Lambda.Unknown` (a timeout, out of memory) is not retried: it is caught."""


@dataclass(frozen=True, slots=True)
class LoopBound:
    """How often one polling loop looks and how many times before it gives up."""

    wait_seconds: int
    max_attempts: int

    def __post_init__(self) -> None:
        for name in ("wait_seconds", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LoopBound.{name}: expected a whole number ≥ 1, got {value!r}")

    @property
    def max_seconds(self) -> int:
        return self.wait_seconds * self.max_attempts


@dataclass(frozen=True, kw_only=True)
class WorkflowSpec:
    """What the generated definition depends on."""

    function_arn: str
    """ARN of the handler Lambda (`functions.retraining.handler.lambda_handler`). Required."""
    query: LoopBound = field(default_factory=lambda: LoopBound(30, 120))
    """Athena query loop. Default every 30 s, at most 1 h."""
    import_job: LoopBound = field(default_factory=lambda: LoopBound(300, 72))
    """Dataset import loop. Default every 5 min, at most 6 h."""
    training: LoopBound = field(default_factory=lambda: LoopBound(600, 144))
    """Training loop (FULL and UPDATE training). Default every 10 min, at most 24 h."""
    campaign: LoopBound = field(default_factory=lambda: LoopBound(120, 60))
    """Campaign update loop. Default every 2 min, at most 2 h."""
    task_timeout_seconds: int = 120
    """TimeoutSeconds of every Task except CheckData. Default 120."""
    check_data_timeout_seconds: int = 900
    """TimeoutSeconds of CheckData, which streams the whole result CSV. Default 900 (the Lambda maximum)."""
    auto_training: bool = False
    """True for AUTO training: the solution trains itself (every 7 days by default, AutoTrainingConfig), so the
    run never starts or waits on a training; after the import it deploys the newest ACTIVE solution version if
    it is newer than the deployed one, else ends as `nothing_to_deploy`. Default False (FULL/UPDATE)."""

    def __post_init__(self) -> None:
        if not isinstance(self.function_arn, str) or not self.function_arn:
            raise ValueError(f"WorkflowSpec.function_arn: expected the handler Lambda's ARN, got {self.function_arn!r}")
        for name in ("query", "import_job", "training", "campaign"):
            if not isinstance(getattr(self, name), LoopBound):
                raise TypeError(f"WorkflowSpec.{name}: expected a LoopBound, got {getattr(self, name)!r}")
        for name in ("task_timeout_seconds", "check_data_timeout_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 900:
                raise ValueError(f"WorkflowSpec.{name}: expected 1–900 seconds, got {value!r}")

    @property
    def max_run_seconds(self) -> int:
        """How long a run may take: every loop exhausted, CheckData at its timeout, and an hour for the other
        Tasks and their retries. The state machine's TimeoutSeconds; set the run lock's TTL
        (LOCK_TTL_SECONDS) at or above it, so a lock left by an aborted run never outlives the run."""
        bounds = (self.query, self.import_job, self.campaign) + (() if self.auto_training else (self.training,))
        loops = sum(bound.max_seconds for bound in bounds)
        return loops + self.check_data_timeout_seconds + 3600


def build_definition(spec: WorkflowSpec) -> dict[str, Any]:
    """The state machine definition (serialise with `json.dumps`)."""
    states: dict[str, Any] = {}

    def task(name: str, step: Step, next_state: str, *, timeout: int | None = None,
             catch_to: str = "NotifyFailure", payload_state: Any = "$") -> None:
        state_param = {"state.$": payload_state} if isinstance(payload_state, str) else {"state": payload_state}
        states[name] = {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": spec.function_arn, "Payload": {"step": step.value, **state_param}},
            "OutputPath": "$.Payload",
            "TimeoutSeconds": timeout or spec.task_timeout_seconds,
            "Retry": [
                # ResourceInUse means another job holds the dataset, solution or campaign: wait minutes, not seconds.
                {"ErrorEquals": ["ResourceInUse"], "IntervalSeconds": 60, "BackoffRate": 2.0, "MaxAttempts": 6,
                 "MaxDelaySeconds": 900, "JitterStrategy": "FULL"},
                {"ErrorEquals": [e for e in RETRYABLE_ERRORS if e != "ResourceInUse"], "IntervalSeconds": 2,
                 "BackoffRate": 2.0, "MaxAttempts": 6, "MaxDelaySeconds": 120, "JitterStrategy": "FULL"},
            ],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_to}],
            "Next": next_state,
        }

    def failure(name: str, error: str, cause: str) -> None:
        states[name] = {"Type": "Pass", "Result": {"Error": error, "Cause": cause}, "ResultPath": "$.error",
                        "Next": "NotifyFailure"}

    def outcome_choice(name: str, outcome: Outcome, if_so: str, otherwise: str) -> None:
        states[name] = {"Type": "Choice",
                        "Choices": [{"Variable": "$.outcome", "StringEquals": outcome.value, "Next": if_so}],
                        "Default": otherwise}

    def poll(label: str, check: Step, status_path: str, statuses: JobStatuses, bound: LoopBound,
             what: str, next_state: str) -> str:
        """<label>Status ⟲ WaitFor<label> → Check<label>, with its failure states; returns the Choice, where the
        step that started the job goes next."""
        choice, wait, check_name = f"{label}Status", f"WaitFor{label}", f"Check{label}"
        failed, timed_out = f"{label}Failed", f"{label}TimedOut"
        states[choice] = {
            "Type": "Choice",
            "Choices": [
                {"Variable": status_path, "StringEquals": statuses.success, "Next": next_state},
                *({"Variable": status_path, "StringEquals": s, "Next": failed} for s in sorted(statuses.failed)),
                # Checked before the pending statuses, so a job still running after the bound ends the run.
                {"Variable": "$.attempts", "NumericGreaterThanEquals": bound.max_attempts, "Next": timed_out},
                *({"Variable": status_path, "StringEquals": s, "Next": wait} for s in sorted(statuses.pending)),
            ],
            "Default": failed,
        }
        states[wait] = {"Type": "Wait", "Seconds": bound.wait_seconds, "Next": check_name}
        task(check_name, check, choice)
        failure(failed, f"{label}Failed", f"the {what} ended in a failed or unexpected status (see {status_path})")
        minutes = bound.max_seconds // 60
        failure(timed_out, f"{label}TimedOut",
                f"the {what} had no final status after {bound.max_attempts} checks ({minutes} min)")
        return choice

    task("AcquireLock", Step.ACQUIRE_LOCK, "IsAlreadyRunning", payload_state={
        "run_id.$": "$$.Execution.Name", "execution_arn.$": "$$.Execution.Id",
        "started_at.$": "$$.Execution.StartTime"})
    # A failure here is reported like any other; releasing a lock this run never took is a no-op.
    outcome_choice("IsAlreadyRunning", Outcome.ALREADY_RUNNING, "AlreadyRunning", "StartInteractionsQuery")
    states["AlreadyRunning"] = {"Type": "Succeed", "Comment": "Another run holds the lock; this one did nothing."}

    task("StartInteractionsQuery", Step.START_QUERY,
         poll("Query", Step.CHECK_QUERY, "$.query.status", QUERY_STATUSES, spec.query,
              "Athena interactions query", "CheckData"))
    task("CheckData", Step.CHECK_DATA, "EnoughData", timeout=spec.check_data_timeout_seconds)
    outcome_choice("EnoughData", Outcome.SKIPPED, "NotifySkipped", "StartImport")

    after_import = "PickDeployableVersion" if spec.auto_training else "StartTraining"
    task("StartImport", Step.START_IMPORT,
         poll("Import", Step.CHECK_IMPORT, "$.import_job.status", IMPORT_STATUSES,
              spec.import_job, "dataset import job", after_import))
    if spec.auto_training:
        task("PickDeployableVersion", Step.PICK_DEPLOYABLE, "AnythingNewToDeploy")
        outcome_choice("AnythingNewToDeploy", Outcome.NOTHING_TO_DEPLOY, "NotifyNothingToDeploy", "Gate")
    else:
        task("StartTraining", Step.START_TRAINING,
             poll("Training", Step.CHECK_TRAINING, "$.training.status", TRAINING_STATUSES,
                  spec.training, "solution version", "Gate"))
    task("Gate", Step.GATE, "GateDecision")
    outcome_choice("GateDecision", Outcome.GATE_REJECTED, "NotifyGateRejected", "UpdateCampaign")
    task("UpdateCampaign", Step.UPDATE_CAMPAIGN,
         poll("Campaign", Step.CHECK_CAMPAIGN, "$.campaign.status", CAMPAIGN_STATUSES,
              spec.campaign, "campaign update", "NotifySucceeded"))

    endings = [("NotifySucceeded", "Succeeded"), ("NotifySkipped", "Skipped"), ("NotifyGateRejected", "GateRejected")]
    if spec.auto_training:
        endings.append(("NotifyNothingToDeploy", "NothingToDeploy"))
        states["NothingToDeploy"] = {"Type": "Succeed", "Comment": "The data was imported; auto-training has made "
                                     "no ACTIVE version newer than the deployed one, so the campaign was left as it was."}
    for notify, end in endings:
        task(notify, Step.NOTIFY, end)
    states["Succeeded"] = {"Type": "Succeed", "Comment": "The campaign serves the new solution version."}
    states["Skipped"] = {"Type": "Succeed", "Comment": "Too little data to import or train; nothing changed."}
    states["GateRejected"] = {"Type": "Succeed",
                              "Comment": "The new solution version scored worse than the deployed one; "
                                         "the campaign was left as it was."}
    # If even the failure notice cannot be sent, end: the lock expires by its TTL.
    task("NotifyFailure", Step.NOTIFY, "Failed", catch_to="Failed")
    states["Failed"] = {"Type": "Fail", "Error": "RetrainingFailed",
                        "Cause": "A step failed; the RetrainingFailed notification has the details."}

    return {
        "Comment": "engagement-loop retraining: interactions → import → train → gate → campaign update",
        "StartAt": "AcquireLock",
        "TimeoutSeconds": spec.max_run_seconds,
        "States": states,
    }

