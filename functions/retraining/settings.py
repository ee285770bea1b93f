"""The retraining handler's settings, parsed once from its environment, and the run's modes."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from functions.lake_names import InvalidName, check_glue_name, check_workgroup_name
from functions.retraining.scoring import ScoringError, ScoringModel
from functions.retraining.sql import DEFAULT_DATABASE, DEFAULT_TABLE

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
        # The one name check of every SQL builder (functions/lake_names.py), here when the handler starts.
        for variable, field_name, check in (("GLUE_DATABASE", "database", check_glue_name),
                                            ("EVENTS_TABLE", "table", check_glue_name),
                                            ("ATHENA_WORKGROUP", "workgroup", check_workgroup_name)):
            try:
                if settings[field_name]:
                    check(settings[field_name], variable)
            except InvalidName as problem:
                problems.append(str(problem))
        if problems:
            raise ValueError("retraining handler environment is invalid:\n"
                             + "\n".join(f"  - {p}" for p in problems))
        return cls(**settings)

