"""The retraining run's steps: each takes the run's state and returns the next one.

A step reads what it needs from a `RunState` (the state machine's data, a frozen dataclass to and from a
JSON dict), calls AWS only through the small interfaces of `clients.py`, and returns the state with what
it learnt. Job statuses are copied as the services report them; what they mean (go on, wait, fail) is the
definition's business (`workflow.py`). Steps raise for anything the run cannot go on from; the state
machine catches it into a failure notification.

Figures follow Amazon Personalize's minimums for training: 1,000 interactions, 25 users with ≥ 2
interactions, and 1,000 new interactions for an incremental import.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any, Callable, Mapping, TextIO

from functions.retraining.clients import (
    Athena, LastImport, Notification, Notifier, ObjectStore, Personalize, RunStore, utc_now,
)
from functions.retraining.interactions_csv import InteractionsWriter, parse_row
from functions.retraining.minimums import MIN_INTERACTIONS_PER_ACTIVE_USER, shortfalls
from functions.retraining.scoring import ScoringError, ScoringModel
from functions.retraining.sql import (
    DEFAULT_DATABASE, DEFAULT_TABLE, INTERACTIONS_COLUMNS, InteractionsQuery, build_interactions_sql,
)
from functions.retraining.workflow import (
    AWAITING_AUTO_TRAINING, CAMPAIGN_STATUSES, IMPORT_STATUSES, TRAINING_STATUSES, Outcome, Step,
)

MIN_INCREMENTAL_ROWS = 1_000
INTERACTIONS_PREFIX = "interactions/"
VALUES_KEY = f"{INTERACTIONS_PREFIX}values.csv"
"""The scoring model as EVENT_TYPE,EVENT_VALUE rows, for users of the seed's layout."""
DEFAULT_LOCK_TTL_SECONDS = 36 * 3600  # ≥ WorkflowSpec().max_run_seconds with the default loop bounds


class ImportMode(str, enum.Enum):
    """FULL replaces the dataset's bulk data with the window; INCREMENTAL appends rows newer than the last import."""

    FULL = "FULL"
    INCREMENTAL = "INCREMENTAL"


class TrainingMode(str, enum.Enum):
    """FULL retrains, UPDATE refreshes items (User-Personalization), AUTO leaves training to the solution's
    own auto-training and deploys the first version it makes after the import."""

    FULL = "FULL"
    UPDATE = "UPDATE"
    AUTO = "AUTO"


class DataError(ValueError):
    """The interactions result is not the CSV the loop expects."""


class CampaignConflict(RuntimeError):
    """Someone else updated the campaign while this run was rolling it."""


class GateError(ValueError):
    """The gate's metric cannot be compared."""


# ------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class RetrainingSettings:
    """The handler's configuration, parsed once from its environment (see `from_env` for the variables)."""

    bucket: str
    """Lake bucket; interactions go under `interactions/`. LAKE_BUCKET, required."""
    database: str
    """Glue database. GLUE_DATABASE, default `engagement_loop`."""
    table: str
    """Glue table of canonical events. EVENTS_TABLE, default `events`."""
    workgroup: str
    """Athena workgroup. ATHENA_WORKGROUP, required."""
    lock_table: str
    """DynamoDB table of the run lock (key `pk`, TTL `expires_at`). LOCK_TABLE, required."""
    topic_arn: str
    """SNS topic of run notifications. TOPIC_ARN, required."""
    event_bus_name: str
    """EventBridge bus of run events. EVENT_BUS_NAME, default `default`."""
    dataset_arn: str
    """The INTERACTIONS dataset. PERSONALIZE_DATASET_ARN, required."""
    solution_arn: str
    """PERSONALIZE_SOLUTION_ARN, required."""
    campaign_arn: str
    """PERSONALIZE_CAMPAIGN_ARN, required."""
    import_role_arn: str
    """Role Personalize assumes to read the import file. PERSONALIZE_IMPORT_ROLE_ARN, required."""
    scoring: ScoringModel
    """SCORING: JSON object `{"_email.open": 50}` or list `["_email.open=50"]`, required."""
    import_mode: ImportMode = ImportMode.FULL
    """IMPORT_MODE, default FULL."""
    training_mode: TrainingMode = TrainingMode.FULL
    """TRAINING_MODE, default FULL."""
    history_days: int = -1
    """HISTORY_DAYS, default -1 (all history)."""
    attribution_days: int = 7
    """ATTRIBUTION_DAYS, default 7."""
    min_provisioned_tps: int | None = None
    """MIN_PROVISIONED_TPS; default empty: keep the campaign's current value."""
    gate_metric: str | None = None
    """GATE_METRIC, a GetSolutionMetrics name where higher is better; default empty: no gate."""
    gate_margin: float = 0.05
    """GATE_MARGIN: how much worse (relative) the new version may be. Default 0.05."""
    lock_ttl_seconds: int = DEFAULT_LOCK_TTL_SECONDS
    """LOCK_TTL_SECONDS, default 36 h; keep it ≥ the state machine's TimeoutSeconds."""
    solution_events_config: bool = False
    """SOLUTION_EVENTS_CONFIG (true/false, default false): before training, set the scoring model as the
    solution's per-event-type weights (ScoringModel.event_weights)."""
    exclude_streamed: bool = False
    """EXCLUDE_STREAMED (true/false, default false; true with `realTimeEvents`): leave out of the interactions
    the rows the event tracker already sent with PutEvents (InteractionsQuery.exclude_streamed)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetrainingSettings:
        """Read the settings; raises ValueError naming every missing or invalid variable at once."""
        environ = os.environ if environ is None else environ
        problems: list[str] = []

        def text(name: str, default: str | None = None) -> str:
            value = (environ.get(name) or "").strip() or default
            if value is None:
                problems.append(f"{name} is required and not set")
                return ""
            return value

        def convert(name: str, default: Any, parse: Callable[[str], Any], expected: str) -> Any:
            raw = (environ.get(name) or "").strip()
            if not raw:
                return default
            try:
                return parse(raw)
            except (ValueError, TypeError):
                problems.append(f"{name}={raw!r} is invalid: expected {expected}")
                return default

        def at_least(minimum: int) -> Callable[[str], int]:
            def parse(raw: str) -> int:
                value = int(raw)
                if value < minimum:
                    raise ValueError
                return value
            return parse

        def margin(raw: str) -> float:
            value = float(raw)
            if not 0 <= value < 1:
                raise ValueError
            return value

        def boolean(raw: str) -> bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"

        def history(raw: str) -> int:
            value = int(raw)
            if value != -1 and value < 1:
                raise ValueError
            return value

        scoring = None
        raw_scoring = text("SCORING")
        if raw_scoring:
            try:
                scoring = ScoringModel.from_config_value(raw_scoring, source="environment variable SCORING")
            except ScoringError as error:
                problems.extend(error.problems)
        settings = dict(
            bucket=text("LAKE_BUCKET"), database=text("GLUE_DATABASE", DEFAULT_DATABASE),
            table=text("EVENTS_TABLE", DEFAULT_TABLE), workgroup=text("ATHENA_WORKGROUP"),
            lock_table=text("LOCK_TABLE"), topic_arn=text("TOPIC_ARN"),
            event_bus_name=text("EVENT_BUS_NAME", "default"), dataset_arn=text("PERSONALIZE_DATASET_ARN"),
            solution_arn=text("PERSONALIZE_SOLUTION_ARN"), campaign_arn=text("PERSONALIZE_CAMPAIGN_ARN"),
            import_role_arn=text("PERSONALIZE_IMPORT_ROLE_ARN"), scoring=scoring,
            import_mode=convert("IMPORT_MODE", ImportMode.FULL, ImportMode, "FULL or INCREMENTAL"),
            training_mode=convert("TRAINING_MODE", TrainingMode.FULL, TrainingMode, "FULL, UPDATE or AUTO"),
            history_days=convert("HISTORY_DAYS", -1, history, "-1 (all history) or a number of days ≥ 1"),
            attribution_days=convert("ATTRIBUTION_DAYS", 7, at_least(1), "a number of days ≥ 1"),
            min_provisioned_tps=convert("MIN_PROVISIONED_TPS", None, at_least(1),
                                        "a whole number ≥ 1, or empty to keep the campaign's"),
            gate_metric=(environ.get("GATE_METRIC") or "").strip() or None,
            gate_margin=convert("GATE_MARGIN", 0.05, margin, "a fraction 0 ≤ margin < 1, e.g. 0.05"),
            lock_ttl_seconds=convert("LOCK_TTL_SECONDS", DEFAULT_LOCK_TTL_SECONDS, at_least(60),
                                     "a number of seconds ≥ 60"),
            solution_events_config=convert("SOLUTION_EVENTS_CONFIG", False, boolean, "true or false"),
            exclude_streamed=convert("EXCLUDE_STREAMED", False, boolean, "true or false"),
        )
        if problems:
            raise ValueError("retraining handler environment is invalid:\n"
                             + "\n".join(f"  - {p}" for p in problems))
        return cls(**settings)


@dataclass(frozen=True)
class Services:
    """What the steps call AWS through, and the clock."""

    personalize: Personalize
    athena: Athena
    objects: ObjectStore
    runs: RunStore
    notifier: Notifier
    clock: Callable[[], datetime] = utc_now


# ---------------------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryState:
    """The Athena query building the interactions."""

    execution_id: str | None = None
    status: str | None = None
    reason: str | None = None
    result_uri: str | None = None
    scanned_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFigures:
    """What the data guard counted, and what is imported."""

    rows: int = 0
    users: int = 0
    active_users: int = 0
    """Users with at least 2 interactions."""
    items: int = 0
    new_rows: int | None = None
    """INCREMENTAL: rows newer than the last import's cutoff."""
    previous_cutoff: int | None = None
    cutoff: int | None = None
    """Newest TIMESTAMP of the result: the next incremental import starts after it."""
    import_mode: ImportMode | None = None
    """The mode used: INCREMENTAL falls back to FULL while nothing was imported yet."""
    import_uri: str | None = None

    def __post_init__(self) -> None:
        if self.import_mode is not None:
            object.__setattr__(self, "import_mode", ImportMode(self.import_mode))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    """A Personalize job this run started or follows."""

    arn: str | None = None
    status: str | None = None
    failure_reason: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GateState:
    """The metric gate's comparison (all None when no gate is configured)."""

    metric: str | None = None
    new_value: float | None = None
    current_value: float | None = None
    margin: float | None = None
    passed: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignState:
    """The campaign rollout."""

    status: str | None = None
    failure_reason: str | None = None
    previous_solution_version: str | None = None
    min_provisioned_tps: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """What a Catch (or a failed-status Pass) put at `$.error`: Step Functions' `Error` and `Cause`."""

    error: str
    cause: str | None = None

    @property
    def message(self) -> str:
        # A Lambda error's Cause is its JSON error document; the message is what people want to read.
        try:
            document = json.loads(self.cause or "")
        except ValueError:
            document = None
        if isinstance(document, dict) and "errorMessage" in document:
            return str(document["errorMessage"])
        return self.cause or ""


_NESTED = {"query": QueryState, "data": DataFigures, "import_job": JobState, "training": JobState,
           "gate": GateState, "campaign": CampaignState}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """The state machine's data between steps. Every key is always present, so Choice paths always resolve."""

    run_id: str
    """The execution's name: unique per run, used in S3 keys and job names."""
    started_at: str
    """The execution's start (ISO 8601); its UTC date is the run date D of the interactions query."""
    execution_arn: str | None = None
    outcome: Outcome = Outcome.RUNNING
    reason: str | None = None
    """Why the run was skipped, rejected or did nothing."""
    attempts: int = 0
    """Checks made by the current polling loop; the definition bounds it."""
    query: QueryState = field(default_factory=QueryState)
    data: DataFigures = field(default_factory=DataFigures)
    import_job: JobState = field(default_factory=JobState)
    training: JobState = field(default_factory=JobState)
    gate: GateState = field(default_factory=GateState)
    campaign: CampaignState = field(default_factory=CampaignState)
    error: ErrorInfo | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))

    @property
    def as_of(self) -> date:
        return _parse_time(self.started_at).astimezone(timezone.utc).date()

    def to_dict(self) -> dict[str, Any]:
        data = _plain(self)
        if self.error is not None:
            data["error"] = {"Error": self.error.error, "Cause": self.error.cause}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        """From the state machine's JSON; unknown keys are an error (they would be silently lost otherwise)."""
        values = _known(cls, data)
        for name, nested in _NESTED.items():
            if values.get(name) is not None:
                values[name] = nested(**_known(nested, values[name], where=name))
        if values.get("error") is not None:
            values["error"] = ErrorInfo(error=str(values["error"].get("Error", "")), cause=values["error"].get("Cause"))
        return cls(**values)


def _known(cls: type, data: Mapping[str, Any], where: str = "state") -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of {sorted(names)}")
    return {k: v for k, v in data.items() if v is not None}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


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
    rows = new = 0
    cutoff: int | None = None
    for row in reader:
        try:
            interaction = parse_row(row)
        except ValueError as error:
            raise DataError(f"{uri}, line {reader.line_num}: {error}") from None
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
        new_rows=None if last is None else new, previous_cutoff=None if last is None else last.cutoff, cutoff=cutoff)


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
        import_job = replace(import_job, finished_at=_iso(job.last_updated or services.clock()))
        if state.data.cutoff is not None:
            services.runs.record_import(state.run_id, state.data.cutoff, now=services.clock())
    return replace(state, attempts=state.attempts + 1, import_job=import_job)


def start_training(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    state = replace(state, attempts=0)
    if settings.solution_events_config:
        # Applies to this training and to the solution's own auto-training; while the solution updates,
        # CreateSolutionVersion answers ResourceInUse, which the state machine retries with backoff.
        services.personalize.set_event_weights(solution_arn=settings.solution_arn,
                                               weights=settings.scoring.event_weights())
    if settings.training_mode is TrainingMode.AUTO:
        return replace(state, training=_auto_trained_version(state, settings, services))
    arn = services.personalize.create_solution_version(
        name=_job_name(state), solution_arn=settings.solution_arn, training_mode=settings.training_mode.value)
    return replace(state, training=JobState(arn=arn, status="CREATE PENDING"))


def check_training(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    if settings.training_mode is TrainingMode.AUTO:
        training = _auto_trained_version(state, settings, services)
    else:
        version = services.personalize.describe_solution_version(_required(state.training.arn, "training.arn"))
        training = replace(state.training, status=version.status, failure_reason=version.failure_reason)
    return replace(state, attempts=state.attempts + 1, training=training)


def _auto_trained_version(state: RunState, settings: RetrainingSettings, services: Services) -> JobState:
    """The newest ACTIVE version the solution's auto-training created after our import finished; else the
    newest such version still training, or failed; else AWAITING AUTO-TRAINING."""
    after = _parse_time(_required(state.import_job.finished_at, "import_job.finished_at"))
    versions = sorted((v for v in services.personalize.list_solution_versions(settings.solution_arn)
                       if v.created > after), key=lambda v: v.created, reverse=True)
    active = [v for v in versions if v.status == TRAINING_STATUSES.success]
    chosen = (active or versions or [None])[0]
    if chosen is None:
        return JobState(status=AWAITING_AUTO_TRAINING)
    return JobState(arn=chosen.arn, status=chosen.status, failure_reason=chosen.failure_reason)


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


DETAIL_TYPES = {Outcome.SUCCEEDED: "RetrainingSucceeded", Outcome.SKIPPED: "RetrainingSkipped",
                Outcome.GATE_REJECTED: "RetrainingGateRejected", Outcome.FAILED: "RetrainingFailed"}


def notify(state: RunState, settings: RetrainingSettings, services: Services) -> RunState:
    """Release the lock, then tell the topic and the event bus how the run ended, with its figures."""
    outcome = Outcome.FAILED if state.error is not None or state.outcome not in DETAIL_TYPES else state.outcome
    state = replace(state, outcome=outcome)
    # First: once here, no job of this run is in flight, and a failed publish must not block the next run.
    services.runs.release(state.run_id)
    services.notifier.publish(notification(state, settings))
    return state


def notification(state: RunState, settings: RetrainingSettings) -> Notification:
    data = state.data
    detail: dict[str, Any] = {
        "runId": state.run_id, "executionArn": state.execution_arn, "outcome": state.outcome.value,
        "reason": state.reason, "asOf": state.as_of.isoformat(),
        "importMode": (data.import_mode or settings.import_mode).value, "trainingMode": settings.training_mode.value,
        "interactions": {"rows": data.rows, "users": data.users, "usersWithAtLeast2": data.active_users,
                         "items": data.items, "newRows": data.new_rows, "cutoff": data.cutoff,
                         "previousCutoff": data.previous_cutoff},
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
        Outcome.FAILED: f"{state.error.error}: {state.error.message}" if state.error else "failed",
    }[state.outcome]
    summary = (f"Retraining run {state.run_id} (run date {state.as_of}) {state.outcome.value}: {headline}\n"
               f"Interactions: {data.rows:,} rows, {data.users:,} users ({data.active_users:,} with ≥ 2), "
               f"{data.items:,} items" + (f", {data.new_rows:,} new" if data.new_rows is not None else "") + ".")
    return Notification(detail_type=DETAIL_TYPES[state.outcome],
                        subject=f"engagement-loop retraining {state.outcome.value}: {state.run_id}",
                        summary=summary, detail=detail)


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
    Step.GATE: gate,
    Step.UPDATE_CAMPAIGN: update_campaign,
    Step.CHECK_CAMPAIGN: check_campaign,
    Step.NOTIFY: notify,
}
