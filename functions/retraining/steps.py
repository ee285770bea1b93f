"""The retraining run's steps: each takes the run's state and returns the next one.

A step reads what it needs from a `RunState` (run_state.py), calls AWS only through the small interfaces of
`clients.py`, and returns the state with what it learnt. Job statuses are copied as the services report them;
what they mean (go on, wait, fail) is the definition's business (`workflow.py`). Steps raise for anything the
run cannot go on from; the state machine catches it into a failure notification.

Figures follow Amazon Personalize's minimums for training: 1,000 interactions, 25 users with ≥ 2
interactions, and 1,000 new interactions for an incremental import.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence, TextIO

from functions.retraining.clients import (
    Athena, LastImport, Notifier, ObjectStore, Personalize, ResourceInUse, RunStore, SolutionVersionSummary,
    utc_now,
)
from functions.retraining.interactions_csv import InteractionsWriter, parse_row, unwritable
from functions.retraining.minimums import MIN_INTERACTIONS_PER_ACTIVE_USER, shortfalls
from functions.retraining.notification import DETAIL_TYPES, notification
from functions.retraining.run_state import (
    CampaignState, DataFigures, GateState, JobState, QueryState, RunState, iso,
)
from functions.retraining.scoring import ScoringModel
from functions.retraining.settings import ImportMode, RetrainingSettings, TrainingMode
from functions.retraining.sql import (
    INTERACTIONS_COLUMNS, InteractionsQuery, build_interactions_sql,
)
from functions.retraining.workflow import (
    CAMPAIGN_STATUSES, IMPORT_STATUSES, TRAINING_STATUSES, Outcome, Step,
)

MIN_INCREMENTAL_ROWS = 1_000
INTERACTIONS_PREFIX = "interactions/"
VALUES_KEY = f"{INTERACTIONS_PREFIX}values.csv"
"""The scoring model as EVENT_TYPE,EVENT_VALUE rows, for users of the seed's layout."""

class DataError(ValueError):
    """The interactions result is not the CSV the loop expects."""


class CampaignConflict(RuntimeError):
    """Someone else updated the campaign while this run was rolling it."""


class GateError(ValueError):
    """The gate's metric cannot be compared."""


class AutoTrainingStalled(RuntimeError):
    """AUTO training, but the solution makes no new versions."""


@dataclass(frozen=True)
class Services:
    """What the steps call AWS through, and the clock."""

    personalize: Personalize
    athena: Athena
    objects: ObjectStore
    runs: RunStore
    notifier: Notifier
    clock: Callable[[], datetime] = utc_now


def _job_name(state: RunState) -> str:
    """A Personalize resource name unique per run (≤ 63 of [A-Za-z0-9_-], starting alphanumeric)."""
    return f"retrain-{re.sub(r'[^A-Za-z0-9_-]', '-', state.run_id)}"[:63]


def _run_prefix(settings: RetrainingSettings, state: RunState) -> str:
    return f"s3://{settings.bucket}/{INTERACTIONS_PREFIX}run={state.run_id}/"


# ---------------------------------------------------------------------------------------------------- steps


def acquire_lock(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """One run at a time: a second run ends as `already_running` and touches nothing."""
    holder = services.runs.acquire(state.run_id, now=services.clock(), ttl_seconds=settings.lock_ttl_seconds)
    if holder is None:
        return state
    return replace(state, outcome=Outcome.ALREADY_RUNNING, reason=f"run {holder} is still in progress")


def start_interactions_query(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Write values.csv and start the Athena query for run date D (the execution's UTC start date)."""
    services.objects.put_text(f"s3://{settings.bucket}/{VALUES_KEY}", values_csv(settings.scoring))
    history_days = settings.history_days
    if settings.import_mode is ImportMode.INCREMENTAL and history_days != -1:
        last = services.runs.last_import()
        if last is not None:
            # Reach back to the last import's cutoff, so rows of skipped runs are not lost between windows.
            last_day = datetime.fromtimestamp(last.cutoff, tz=timezone.utc).date()
            history_days = max(history_days, (state.as_of - last_day).days)
    sql = build_interactions_sql(InteractionsQuery(
        scoring=settings.scoring, as_of=state.as_of, attribution_days=settings.attribution_days,
        history_days=history_days, database=settings.database, table=settings.table,
        exclude_streamed=settings.exclude_streamed))
    query_id = services.athena.start_query(
        sql=sql, database=settings.database, workgroup=settings.workgroup,
        output_location=_run_prefix(settings, state),
        # Idempotent per run: a re-invoked step gets the same query back, not a second scan.
        token=f"retraining-{state.run_id}".ljust(32, "-")[:128])
    return replace(state, attempts=0, query=QueryState(execution_id=query_id, status="QUEUED"))


def values_csv(scoring: ScoringModel) -> str:
    """The scoring model as the seed's `values.csv`: EVENT_TYPE,EVENT_VALUE rows."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("EVENT_TYPE", "EVENT_VALUE"))
    writer.writerows((event_type, repr(value)) for event_type, value in scoring.values.items())
    return text.getvalue()


def check_query(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    status = services.athena.get_query(_required(state.query.execution_id, "query.execution_id"))
    query = replace(state.query, status=status.state, reason=status.reason, scanned_bytes=status.scanned_bytes,
                    result_uri=status.output_location)
    return replace(state, attempts=state.attempts + 1, query=query)


def check_data(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """The data guard: count the result, skip (not fail) below Personalize's minimums, and stage the file to
    import under `interactions/run=<id>/interactions.csv` — all of it (FULL), or only the rows newer than
    the last import (INCREMENTAL, skipped below 1,000 such rows).

    The staged file is never Athena's result as is (Athena quotes every field, header included; Personalize
    wants a plain header): the result is streamed row by row and re-written by `InteractionsWriter`."""
    result_uri = _required(state.query.result_uri, "query.result_uri")
    import_uri = _run_prefix(settings, state) + "interactions.csv"
    last: LastImport | None = None
    mode = settings.import_mode
    if mode is ImportMode.INCREMENTAL:
        last = services.runs.last_import()
        # Personalize accepts INCREMENTAL only once the dataset holds bulk data.
        mode = ImportMode.INCREMENTAL if last is not None else ImportMode.FULL

    with tempfile.TemporaryDirectory() as folder:
        staged_path = os.path.join(folder, "interactions.csv")
        with services.objects.open_text(result_uri) as text, \
                open(staged_path, "w", encoding="utf-8", newline="") as staged_file:
            figures = _count_interactions(text, result_uri, last, InteractionsWriter(staged_file))
        state = replace(state, data=replace(figures, import_mode=mode))
        short = shortfalls(figures.rows, figures.active_users)
        if short:
            return replace(state, outcome=Outcome.SKIPPED,
                           reason="too little data for Amazon Personalize: " + "; ".join(short))
        if last is not None and figures.new_rows < MIN_INCREMENTAL_ROWS:
            return replace(state, outcome=Outcome.SKIPPED,
                           reason=f"{figures.new_rows:,} interactions newer than the last import (TIMESTAMP > "
                                  f"{last.cutoff}) < {MIN_INCREMENTAL_ROWS:,} for an incremental import")
        services.objects.upload_file(staged_path, import_uri)
    return replace(state, data=replace(state.data, import_uri=import_uri))


def _count_interactions(text: TextIO, uri: str, last: LastImport | None, staged: InteractionsWriter) -> DataFigures:
    """Stream the CSV once: totals, users with ≥ 2 rows, items, newest TIMESTAMP; every row goes to `staged`
    (with `last`, only the rows newer than its cutoff)."""
    reader = csv.reader(text)
    header = tuple(next(reader, ()))
    if header != INTERACTIONS_COLUMNS:
        raise DataError(f"{uri}: header is {','.join(header) or '(empty)'}, expected {','.join(INTERACTIONS_COLUMNS)}")
    rows_per_user: dict[str, int] = {}
    items: set[str] = set()
    rows = new = skipped = 0
    cutoff: int | None = None
    for row in reader:
        try:
            interaction = parse_row(row)
        except ValueError as error:
            raise DataError(f"{uri}, line {reader.line_num}: {error}") from None
        if unwritable(interaction):
            # Written to the lake before the normaliser refused such ids; one would fail every import.
            skipped += 1
            continue
        timestamp = interaction.timestamp
        rows += 1
        rows_per_user[interaction.user_id] = rows_per_user.get(interaction.user_id, 0) + 1
        items.add(interaction.item_id)
        cutoff = timestamp if cutoff is None else max(cutoff, timestamp)
        if last is None:
            staged.write(interaction)
        elif timestamp > last.cutoff:
            new += 1
            staged.write(interaction)
    return DataFigures(
        rows=rows, users=len(rows_per_user), items=len(items),
        active_users=sum(count >= MIN_INTERACTIONS_PER_ACTIVE_USER for count in rows_per_user.values()),
        new_rows=None if last is None else new, previous_cutoff=None if last is None else last.cutoff, cutoff=cutoff,
        skipped_rows=skipped)


def start_import(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    mode = state.data.import_mode or settings.import_mode
    arn = services.personalize.create_dataset_import_job(
        name=_job_name(state), dataset_arn=settings.dataset_arn,
        data_location=_required(state.data.import_uri, "data.import_uri"), role_arn=settings.import_role_arn,
        import_mode=mode.value)
    return replace(state, attempts=0, import_job=JobState(arn=arn, status="CREATE PENDING"))


def check_import(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Follow the import; once ACTIVE, record its cutoff right away — the rows are in the dataset whatever
    happens to training, and an incremental import must never append them twice."""
    job = services.personalize.describe_dataset_import_job(_required(state.import_job.arn, "import_job.arn"))
    import_job = replace(state.import_job, status=job.status, failure_reason=job.failure_reason)
    if job.status == IMPORT_STATUSES.success:
        import_job = replace(import_job, finished_at=iso(job.last_updated or services.clock()))
        if state.data.cutoff is not None:
            services.runs.record_import(state.run_id, state.data.cutoff, now=services.clock())
    return replace(state, attempts=state.attempts + 1, import_job=import_job)


def start_training(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    _require_training_mode(settings, auto=False)
    state = replace(state, attempts=0)
    if settings.solution_events_config:
        # Applies to this training and to the solution's own auto-training; while the solution updates,
        # CreateSolutionVersion answers ResourceInUse, which the state machine retries with backoff.
        services.personalize.set_event_weights(solution_arn=settings.solution_arn,
                                               weights=settings.scoring.event_weights())
    arn = services.personalize.create_solution_version(
        name=_job_name(state), solution_arn=settings.solution_arn, training_mode=settings.training_mode.value)
    return replace(state, training=JobState(arn=arn, status="CREATE PENDING"))


def check_training(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    _require_training_mode(settings, auto=False)
    version = services.personalize.describe_solution_version(_required(state.training.arn, "training.arn"))
    training = replace(state.training, status=version.status, failure_reason=version.failure_reason)
    return replace(state, attempts=state.attempts + 1, training=training)


def pick_deployable_version(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """AUTO training: the solution's newest ACTIVE version, if it is newer than the one the campaign serves (or
    is being rolled onto); else the run ends as `nothing_to_deploy`. Never waits: auto-training runs on the
    solution's own schedule (every 7 days by default), so a version trained on this import is deployed by a
    later run. A campaign serving a version of another solution is rolled onto the newest one.

    Fails (so the failed-run alarm fires) when nothing will ever come: auto-training switched off on the
    solution, or no ACTIVE version made for two of its intervals and a day."""
    _require_training_mode(settings, auto=True)
    state = replace(state, attempts=0)
    solution = services.personalize.describe_solution(settings.solution_arn)
    if not solution.perform_auto_training:
        raise AutoTrainingStalled(
            f"TRAINING_MODE is AUTO, but solution {settings.solution_arn} has performAutoTraining off, so no new "
            f"version will come: turn it on (UpdateSolution), or set trainingMode to FULL or UPDATE")
    versions = services.personalize.list_solution_versions(settings.solution_arn)
    active = [v for v in versions if v.status == TRAINING_STATUSES.success]
    newest = max(active, key=lambda v: v.created) if active else None
    _stop_if_stalled(newest.created if newest else solution.created, solution.schedule_days, versions, services)
    state = _deployable(state, settings, services, newest, {v.arn: v.created for v in versions})
    if settings.solution_events_config:
        try:
            services.personalize.set_event_weights(solution_arn=settings.solution_arn,
                                                   weights=settings.scoring.event_weights(), keep_auto_training=True)
        except ResourceInUse:
            # The solution is training or updating; its next auto-training reads the weights the next run sets.
            pass
    return state


def _stop_if_stalled(last: datetime, schedule_days: int, versions: Sequence[SolutionVersionSummary],
                     services: Services) -> None:
    allowed = timedelta(days=2 * schedule_days + 1)
    if services.clock() - last <= allowed:
        return
    failed = sorted((v for v in versions if v.status in TRAINING_STATUSES.failed), key=lambda v: v.created)
    why = f"; the newest failed one says: {failed[-1].failure_reason}" if failed and failed[-1].failure_reason \
        else ""
    raise AutoTrainingStalled(
        f"no ACTIVE solution version made since {iso(last)}, although auto-training runs every {schedule_days} "
        f"days{why}")


def _deployable(state: RunState, settings: RetrainingSettings, services: Services,
                newest: SolutionVersionSummary | None, created: Mapping[str, datetime]) -> RunState:
    if newest is None:
        return replace(state, outcome=Outcome.NOTHING_TO_DEPLOY,
                       reason=f"nothing new to deploy: solution {settings.solution_arn} has no ACTIVE version yet")
    campaign = services.personalize.describe_campaign(settings.campaign_arn)
    update = campaign.latest_update
    rolling = update is not None and update.status in CAMPAIGN_STATUSES.pending
    deployed = update.solution_version_arn if rolling else campaign.solution_version_arn
    if deployed is not None and deployed in created and created[deployed] >= newest.created:
        serves = "is being rolled onto" if rolling else "serves"
        return replace(state, outcome=Outcome.NOTHING_TO_DEPLOY,
                       reason=f"nothing new to deploy: the campaign {serves} {deployed}, and no ACTIVE version "
                              f"of the solution is newer")
    return replace(state, training=JobState(arn=newest.arn, status=newest.status))


def _require_training_mode(settings: RetrainingSettings, *, auto: bool) -> None:
    """The definition is generated for one training mode (WorkflowSpec.auto_training) and the handler reads
    TRAINING_MODE; an execution of an older definition after a mode change must stop, not train."""
    if (settings.training_mode is TrainingMode.AUTO) != auto:
        raise ValueError(f"TRAINING_MODE is {settings.training_mode.value}, but the state machine ran a step of "
                         f"{'AUTO' if auto else 'FULL/UPDATE'} training: its definition is older than the "
                         f"handler's settings; run `pulumi up` and start the run again")


def gate(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Optional: reject the new version if its metric is worse than the deployed one's by more than the margin
    (relative; metrics where higher is better). No deployed version, or one without the metric: pass."""
    if settings.gate_metric is None:
        return state
    new_arn = _required(state.training.arn, "training.arn")
    metric, margin = settings.gate_metric, settings.gate_margin
    new_metrics = services.personalize.get_solution_metrics(new_arn)
    if metric not in new_metrics:
        raise GateError(f"GATE_METRIC {metric!r} is not among the metrics of {new_arn}: "
                        f"{', '.join(sorted(new_metrics)) or '(none)'}")
    deployed = services.personalize.describe_campaign(settings.campaign_arn).solution_version_arn
    current = None
    if deployed and deployed != new_arn:
        current = services.personalize.get_solution_metrics(deployed).get(metric)
    new = new_metrics[metric]
    passed = current is None or not math.isfinite(current) or new >= current - abs(current) * margin
    state = replace(state, gate=GateState(metric=metric, new_value=new, current_value=current, margin=margin,
                                          passed=passed))
    if passed:
        return state
    return replace(state, outcome=Outcome.GATE_REJECTED,
                   reason=f"{metric} of the new version is {new:.6g}, worse than the deployed {current:.6g} "
                          f"by more than {margin:.1%}; the campaign keeps {deployed}")


def update_campaign(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Roll the campaign onto the new version, keeping its minProvisionedTPS unless one is configured."""
    new_arn = _required(state.training.arn, "training.arn")
    campaign = services.personalize.describe_campaign(settings.campaign_arn)
    tps = settings.min_provisioned_tps or campaign.min_provisioned_tps
    rollout = CampaignState(previous_solution_version=campaign.solution_version_arn, min_provisioned_tps=tps,
                            status="CREATE PENDING")
    if campaign.solution_version_arn == new_arn and tps == campaign.min_provisioned_tps:
        # Already serving it (e.g. a campaign synced to auto-training): nothing to update.
        return replace(state, attempts=0, outcome=Outcome.SUCCEEDED,
                       campaign=replace(rollout, status=CAMPAIGN_STATUSES.success))
    services.personalize.update_campaign(arn=settings.campaign_arn, solution_version_arn=new_arn,
                                         min_provisioned_tps=tps)
    return replace(state, attempts=0, campaign=rollout)


def check_campaign(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Confirm the rollout through `latestCampaignUpdate` (the campaign's own status stays ACTIVE meanwhile)."""
    new_arn = _required(state.training.arn, "training.arn")
    campaign = services.personalize.describe_campaign(settings.campaign_arn)
    update = campaign.latest_update
    if update is not None and update.solution_version_arn == new_arn:
        status, reason = update.status, update.failure_reason
    elif campaign.solution_version_arn == new_arn:
        status, reason = campaign.status, None
    else:
        latest = update.solution_version_arn if update else campaign.solution_version_arn
        raise CampaignConflict(f"campaign {settings.campaign_arn} was updated to {latest} while this run was "
                               f"deploying {new_arn}")
    state = replace(state, attempts=state.attempts + 1,
                    campaign=replace(state.campaign, status=status, failure_reason=reason))
    return replace(state, outcome=Outcome.SUCCEEDED) if status == CAMPAIGN_STATUSES.success else state


def notify(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Release the lock, then tell the topic and the event bus how the run ended, with its figures."""
    outcome = Outcome.FAILED if state.error is not None or state.outcome not in DETAIL_TYPES else state.outcome
    state = replace(state, outcome=outcome)
    # First: once here, no job of this run is in flight, and a failed publish must not block the next run.
    services.runs.release(state.run_id)
    services.notifier.publish(notification(state, settings))
    return state


def _required(value: Any, path: str) -> Any:
    if value is None:
        raise ValueError(f"state.{path} is not set; the definition ran this step out of order")
    return value


STEPS: Mapping[Step, Callable[[RunState, RetrainingSettings, Services], RunState]] = {
    Step.ACQUIRE_LOCK: acquire_lock,
    Step.START_QUERY: start_interactions_query,
    Step.CHECK_QUERY: check_query,
    Step.CHECK_DATA: check_data,
    Step.START_IMPORT: start_import,
    Step.CHECK_IMPORT: check_import,
    Step.START_TRAINING: start_training,
    Step.CHECK_TRAINING: check_training,
    Step.PICK_DEPLOYABLE: pick_deployable_version,
    Step.GATE: gate,
    Step.UPDATE_CAMPAIGN: update_campaign,
    Step.CHECK_CAMPAIGN: check_campaign,
    Step.NOTIFY: notify,
}
