"""The retraining run's state: the state machine's data between steps, a frozen dataclass to and from JSON."""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Mapping

from functions.retraining.settings import ImportMode
from functions.retraining.workflow import Outcome


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
    skipped_rows: int = 0
    """Rows left out because an id or event type holds a line break or control character."""

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
        return parse_time(self.started_at).astimezone(timezone.utc).date()

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


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()

