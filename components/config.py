"""The stack configuration, parsed once into frozen, typed objects.

Every key lives in the `engagement-loop` namespace and is declared in Pulumi.yaml. Parsing collects every
problem before failing, so a user fixes a stack file in one pass; each problem names the key, the value
and what to write instead — except the value of a secret key (`pulumi config set --secret`, a `secure:`
value in the stack file), which no message shows: `SecretKeys` is the one place that knows which keys are
secret and renders values for messages ("the secret value of engagement-loop:X …"). `__main__.py` turns a `ConfigError` into a `pulumi.RunError`, which Pulumi
prints without a stack trace.
"""

from __future__ import annotations

import difflib
import enum
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, TypeVar

from components.connect_config import (
    DEFAULT_OBJECT_TYPE,
    ACCOUNT_KEY,
    ConnectConfig,
    UnknownUsers,
    read_connect_config,
)
from components.config_checks import InvalidValue, member, optional
from functions.events.canonical import IdentityMode
from functions.events.consumer_settings import parse_app_may_report
from functions.lake_names import InvalidName, LakeNames, derived_lake_names
from functions.retraining.scoring import ScoringError, ScoringModel
from functions.retraining.settings import ImportMode, TrainingMode
from functions.rules.model import RuleSet
from functions.rules.sheet import MAX_SHEET_BYTES, RulesSheetError, parse_rules_sheet

PROJECT = "engagement-loop"
PROJECT_DIR = Path(__file__).resolve().parent.parent

DEFAULT_RETRAIN_SCHEDULE = "cron(0 2 * * ? *)"
MAX_APP_STREAM_SHARDS = 500
"""The most `appStreamShards` may ask for: the shards are the bound on what the app stream's writers can cost
(500 shards: 500 MB/s in, 500 concurrent batches per consumer), so a larger one is a deliberate code change."""
MAX_STREAM_SHARDS = 500
"""The most `streamShards` may ask for (500 MB/s of writes); Kinesis's own default shard quota per account is
lower in some regions (docs/aws-contracts.md)."""
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)

_T = TypeVar("_T")


class StreamMode(enum.Enum):
    """`streamMode`: how the trusted stream's capacity is bought (docs/cost.md, "The stream's fixed price")."""

    ON_DEMAND = "on-demand"
    """Capacity follows the writers; billed per stream-hour plus per GB in and out."""
    PROVISIONED = "provisioned"
    """`streamShards` shards, billed per shard-hour plus PUT payload units; writers beyond them are throttled."""


class StateMachineLogLevel(enum.Enum):
    """`retrainingLogLevel`: which execution history events the retraining state machine sends to its log
    group (Step Functions LoggingConfiguration `level`; OFF sends none)."""

    ERROR = "ERROR"
    ALL = "ALL"
    FATAL = "FATAL"
    OFF = "OFF"


class ConfigError(ValueError):
    """One or more invalid stack config values; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  - {p}" for p in problems))


class _Invalid(InvalidValue):
    """Internal: one key's problem, collected by `_Reader`. `withheld` is what to say instead when the key is
    secret and the message would show (part of) its value (the shared checks, `components.config_checks`, raise the base)."""


SECRET_SHOWN = "[secret]"


_SHOWN_MAX = 120
"""At most this many characters of a value's rendering appear in a message (a whole ARN fits; a megabyte
list does not)."""


@dataclass(frozen=True, slots=True)
class SecretKeys:
    """Which stack config keys hold secrets, and the one renderer of config values in messages: a secret
    key's value is never shown ("the secret value of engagement-loop:X"), and any text about it has the value
    (and each element of a list value) replaced by `[secret]`."""

    keys: frozenset[str] = frozenset()
    """Full key names (`engagement-loop:scoring`, `aws:region`)."""

    @classmethod
    def of(cls, names: Iterable[str]) -> SecretKeys:
        """From key names, with or without the `engagement-loop:` prefix (`aws:` keys keep theirs)."""
        return cls(frozenset(_full_key(name) for name in names))

    def is_secret(self, key: str) -> bool:
        return _full_key(key) in self.keys

    def subject(self, key: str, value: Any) -> str:
        """How a problem names the key and its value: `engagement-loop:X = 'value'`, or for a secret key
        `the secret value of engagement-loop:X`."""
        key = _full_key(key)
        if key in self.keys:
            return f"the secret value of {key}"
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        rendered = repr(shown)
        if len(rendered) > _SHOWN_MAX:
            # A value can be megabytes (a scoring list): show its start, so every message stays short.
            rendered = f"{rendered[:_SHOWN_MAX]}… ({len(shown):,} characters)"
        return f"{key} = {rendered}"

    def redact(self, key: str, value: Any, text: str) -> str:
        """`text` with a secret key's value, and each part of a list value, replaced by `[secret]`."""
        if not self.is_secret(key) or value is None:
            return text
        parts = [value if isinstance(value, str) else json.dumps(value)]
        if isinstance(value, (list, tuple)):
            parts += [str(part) for part in value]
        elif isinstance(value, str) and value.lstrip().startswith("["):
            try:
                parts += [str(part) for part in json.loads(value)]
            except (json.JSONDecodeError, TypeError):
                pass
        for part in sorted({p.strip() for p in parts if p and p.strip()}, key=len, reverse=True):
            text = text.replace(part, SECRET_SHOWN)
        return text


def unknown_key_problem(name: str) -> str:
    """The problem with a key this program does not read, suggesting the nearest known key for a typo
    (`retrainShedule` → `retrainSchedule`); the program, `automation` and `cli stack check` all say this."""
    name = name.removeprefix(f"{PROJECT}:")
    nearest = difflib.get_close_matches(name, list(KEYS), n=1, cutoff=0.6) or difflib.get_close_matches(
        name.lower(), {key.lower(): key for key in KEYS}, n=1, cutoff=0.6)
    if nearest:
        suggestion = {key.lower(): key for key in KEYS}.get(nearest[0], nearest[0])
        return (f"{PROJECT}:{name} is not a setting of this program; did you mean {PROJECT}:{suggestion}? "
                "Fix its spelling, or remove it")
    return (f"{PROJECT}:{name} is not a setting of this program (known: {', '.join(sorted(KEYS))}); "
            "remove it or fix its spelling")


def _full_key(name: str) -> str:
    return name if ":" in name else f"{PROJECT}:{name}"


def stack_file_secret_keys(config: Mapping[str, Any]) -> SecretKeys:
    """The keys a stack file's `config:` mapping holds as `secure:` (encrypted) values."""
    return SecretKeys.of(key for key, value in config.items()
                         if isinstance(value, Mapping) and "secure" in value)


@dataclass(frozen=True, slots=True)
class PersonalizeArn:
    """A parsed Amazon Personalize ARN (`arn:aws:personalize:<region>:<account>:<kind>/<name>`)."""

    arn: str
    region: str
    account: str
    kind: str
    name: str


_PERSONALIZE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):personalize:(?P<region>[a-z]{2}(-[a-z]+)+-\d):(?P<account>\d{12}):"
    r"(?P<kind>[a-z-]+)/(?P<name>[A-Za-z0-9][A-Za-z0-9_./-]*)$"
)
_SCHEDULE = re.compile(r"^(cron\((\S+ ){5}\S+\)|rate\([1-9]\d* (minute|minutes|hour|hours|day|days)\))$")
_PINPOINT_PROJECT_ID = re.compile(r"^[0-9a-f]{32}$")
_SES_CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_GATE_METRIC = re.compile(r"^[a-z][a-z0-9_]{2,127}$")
_TRACKING_ID = re.compile(r"^[A-Za-z0-9-]{1,256}$")
_CONNECT_DOMAIN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# A standard SNS topic's ARN (topic names: letters, digits, - and _, 1-256 characters; CloudWatch alarm actions take
# a standard topic).
_SNS_TOPIC_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sns:(?P<region>[a-z]{2}(-[a-z]+)+-\d):(?P<account>\d{12}):[A-Za-z0-9_-]{1,256}$")


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    """Which optional event sources feed the stream."""

    pinpoint_project_id: str | None
    ses_configuration_set: str | None
    app_producer_policy: bool
    app_stream_shards: int = 2
    """`appStreamShards`: the app stream's provisioned shards (1–500), which bound what its writers can cost the
    consumers (docs/security.md, "What a hostile producer can cost")."""
    stream_mode: StreamMode = StreamMode.ON_DEMAND
    """`streamMode`: the trusted stream's capacity mode (default on-demand)."""
    stream_shards: int = 1
    """`streamShards`: the trusted stream's shards with `streamMode: provisioned` (1–500, default 1); unused on
    demand."""
    app_may_report: frozenset[str] = frozenset()
    """`appMayReport`: exact `_campaign.*`/`_journey.*` push event types the app stream may carry although
    reserved (`parse_app_may_report`, the consumers' own rules); empty by default."""


@dataclass(frozen=True, slots=True)
class LakeConfig:
    """Retention and cost guards of the S3 lake and its Athena workgroup."""

    athena_scan_limit_gb: int
    query_results_retention_days: int
    errors_retention_days: int
    names: LakeNames | None = None
    """The lake's Glue database, table and Athena workgroup, derived from the project and stack name and
    checked with the SQL builders' one name check (functions/lake_names.py); None when parsed without a
    stack name."""


@dataclass(frozen=True, slots=True)
class RetrainingConfig:
    """What the retraining loop (a later component) trains from and deploys to."""

    campaign: PersonalizeArn
    solution: PersonalizeArn
    interactions_dataset: PersonalizeArn
    scoring: ScoringModel
    history_days: int
    schedule: str
    import_mode: ImportMode
    training_mode: TrainingMode
    attribution_days: int
    min_provisioned_tps: int | None
    """None: keep the campaign's current value."""
    gate_metric: str | None
    """None: deploy every new version."""
    gate_margin: float
    solution_events_config: bool
    """Also set the scoring model as the solution's events configuration (per-event-type weights)."""
    real_time_tracking_id: str | None
    """Event tracker that scored events stream to between retrains; None: no real-time path."""
    log_level: StateMachineLogLevel = StateMachineLogLevel.ERROR
    """`retrainingLogLevel`: execution history events the state machine logs to CloudWatch Logs."""


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The rules engine: the parsed rules sheet and where actions go besides EventBridge."""

    sheet_path: str
    rules: RuleSet
    connect_domain_name: str | None
    counter_ttl_days: int
    connect: ConnectConfig | None = None
    """The `connect*` keys: the Customer Profiles domain, its object type and campaign triggers; None without
    `connectDomainName` (then `connect_domain_name` is None too)."""
    dedupe_horizon_hours: int = 24
    """`dedupeHorizonHours`: how long (stream arrival time) a counted event id is remembered against a
    producer's duplicate (docs/rules.md, "Exactly once")."""
    reserve_concurrency: bool = False
    """`rulesReservedConcurrency`: reserve one concurrent execution for each of the reconciler, sweeper and
    backfill. Off by default: Lambda refuses a reservation that would leave the account's unreserved
    concurrency below 100, and the runs are correct when they overlap (conditional writes)."""


@dataclass(frozen=True, slots=True)
class StackConfig:
    """The whole stack config of one engagement-loop stack."""

    region: str
    identity_mode: IdentityMode
    log_retention_days: int
    sources: SourcesConfig
    lake: LakeConfig
    retraining: RetrainingConfig
    rules: RulesConfig
    alarm_topic_arn: str | None = None
    """`alarmTopicArn`: the SNS topic every alarm notifies instead of the stack's own; None: create one."""
    holds_secrets: bool = False
    """Whether any of this program's keys has a secret value: then every function's environment, which may carry
    it, is kept secret in the state."""


# key -> (kind, default). The single list of keys this program reads; tests check Pulumi.yaml declares
# exactly these, with the same defaults.
KEYS: Mapping[str, tuple[str, Any]] = MappingProxyType({
    "identityMode": ("string", IdentityMode.USER_OR_ENDPOINT.value),
    "logRetentionDays": ("integer", 30),
    "pinpointProjectId": ("string", ""),
    "sesConfigurationSet": ("string", ""),
    "appProducerPolicy": ("boolean", True),
    "appStreamShards": ("integer", 2),
    "streamMode": ("string", StreamMode.ON_DEMAND.value),
    "streamShards": ("integer", 1),
    "appMayReport": ("array", []),
    "athenaScanLimitGb": ("integer", 10),
    "queryResultsRetentionDays": ("integer", 7),
    "errorsRetentionDays": ("integer", 90),
    "personalizeCampaignArn": ("string", None),
    "personalizeSolutionArn": ("string", None),
    "personalizeInteractionsDatasetArn": ("string", None),
    "scoring": ("array", None),
    "historyDays": ("integer", -1),
    "retrainSchedule": ("string", DEFAULT_RETRAIN_SCHEDULE),
    "retrainingLogLevel": ("string", StateMachineLogLevel.ERROR.value),
    "importMode": ("string", ImportMode.FULL.value),
    "trainingMode": ("string", TrainingMode.FULL.value),
    "attributionDays": ("integer", 7),
    "minProvisionedTps": ("integer", 0),
    "gateMetric": ("string", ""),
    "gateMarginPercent": ("integer", 5),
    "solutionEventsConfig": ("boolean", False),
    "realTimeEvents": ("boolean", False),
    "personalizeTrackingId": ("string", ""),
    "rulesSheet": ("string", "rules/sample.csv"),
    "connectDomainName": ("string", ""),
    "connectProfileKey": ("string", ACCOUNT_KEY),
    "connectObjectTypeName": ("string", DEFAULT_OBJECT_TYPE),
    "connectUnknownUsers": ("string", UnknownUsers.SKIP.value),
    "connectCampaigns": ("array", []),
    "counterTtlDays": ("integer", 400),
    "dedupeHorizonHours": ("integer", 24),
    "rulesReservedConcurrency": ("boolean", False),
    "alarmTopicArn": ("string", ""),
})
OBJECT_ARRAYS = frozenset({"connectCampaigns"})
"""Keys whose value is a list of objects: Pulumi.yaml declares them without a `type`, since Pulumi types array
items only as string, integer, boolean or array and would refuse objects in a stack file."""


class _Reader:
    """Reads raw config values (strings, as the Pulumi engine hands them over) and collects problems."""

    def __init__(self, raw: Mapping[str, Any], secrets: SecretKeys = SecretKeys()):
        self._raw = raw
        self.secrets = secrets
        self.problems: list[str] = []

    def fail(self, key: str, value: Any, message: str, *, withheld: str | None = None) -> None:
        """Record a problem with `key`'s value; for a secret key, `withheld` (if given) replaces a message
        that would show the value, and whatever is said has the value redacted."""
        if self.secrets.is_secret(key):
            message = self.secrets.redact(key, value, withheld or message)
        self.problems.append(f"{self.secrets.subject(key, value)}: {message}")

    def given(self, key: str) -> bool:
        """Whether the stack sets `key` (to any value, also its default)."""
        return self._raw.get(key) is not None

    def raw(self, key: str) -> Any:
        """`key`'s value as given, or None."""
        return self._raw.get(key)

    def read(self, key: str, convert: Callable[[Any], _T], *, max_chars: int | None = None) -> _T | None:
        """`key`'s value (its default when absent) coerced to its kind and converted; None after a problem.
        `max_chars` bounds the text of the value before it is parsed at all (hostile input)."""
        kind, default = KEYS[key]
        value = self._raw.get(key)
        if max_chars is not None and isinstance(value, str) and len(value) > max_chars:
            self.fail(key, value, f"{len(value):,} characters, more than the {max_chars:,} this setting may have; "
                                  "shorten it", withheld=f"longer than the {max_chars:,} characters this setting may "
                                                         "have; shorten it")
            return None
        if value is None:
            if default is None:
                self.problems.append(f"{PROJECT}:{key} is required: set it with "
                                     f"`pulumi config set {key} ...` (see README, config reference)")
                return None
            value = default
        try:
            return convert(_coerce(kind, value))
        except InvalidValue as problem:
            self.fail(key, value, str(problem), withheld=problem.withheld)
            return None


def _coerce(kind: str, value: Any) -> Any:
    """Turn the engine's string form into the declared kind (stack files may also hold native YAML)."""
    if kind == "string":
        if not isinstance(value, str):
            raise _Invalid("expected a string")
        return value.strip()
    if kind == "integer":
        if isinstance(value, bool):
            raise _Invalid("expected a whole number")
        try:
            return int(str(value).strip())
        except ValueError:
            raise _Invalid("expected a whole number") from None
    if kind == "boolean":
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            raise _Invalid("expected true or false")
        return text == "true"
    if kind == "array":
        try:
            parsed = json.loads(value) if isinstance(value, str) and value.lstrip().startswith("[") else value
        except json.JSONDecodeError as error:
            raise _Invalid(f"expected a list, but the JSON text does not parse ({error.msg}, character "
                           f"{error.pos})") from None
        if not isinstance(parsed, list):
            raise _Invalid("expected a list")
        return parsed
    raise AssertionError(f"unknown kind {kind}")


def _one_of(values: tuple[int, ...]) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value not in values:
            raise _Invalid(f"must be one of {', '.join(map(str, values))}")
        return value
    return check


def _at_least(minimum: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < minimum:
            raise _Invalid(f"must be at least {minimum}")
        return value
    return check


def _between(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _Invalid(f"expected {low}–{high}")
        return value
    return check


def _scoring(entries: list[Any]) -> ScoringModel:
    try:
        return ScoringModel.from_entries(entries, source="scoring")
    except ScoringError as error:
        raise _Invalid("; ".join(error.problems), withheld=(
            f"{len(error.problems)} problem(s), not shown as they would show the value: expected a list of "
            "EVENT_TYPE=VALUE entries, each event type once, finite numbers, at most 10 event types")) from None


def _app_may_report(entries: list[Any]) -> frozenset[str]:
    if not all(isinstance(entry, str) for entry in entries):
        raise _Invalid("expected a list of event types (strings)")
    try:
        # The consumers' own parser (they read the same list as APP_MAY_REPORT), so the rules are one.
        return parse_app_may_report(entries, source=f"{PROJECT}:appMayReport")
    except ValueError as error:
        # The parser's message starts with the key already named by the reader.
        raise _Invalid(str(error).removeprefix(f"{PROJECT}:appMayReport: ")) from None


def _history_days(value: int) -> int:
    if value != -1 and value < 1:
        raise _Invalid("use -1 for all history or a number of days ≥ 1")
    return value


def _schedule(value: str) -> str:
    if not _SCHEDULE.match(value):
        raise _Invalid("expected an EventBridge schedule such as cron(0 2 * * ? *) or rate(1 day)")
    return value


def _personalize_arn(kind: str, region: str | None, example_name: str) -> Callable[[str], PersonalizeArn]:
    def check(value: str) -> PersonalizeArn:
        match = _PERSONALIZE_ARN.match(value)
        example = f"arn:aws:personalize:{region or '<region>'}:123456789012:{kind}/{example_name}"
        if not match or match["kind"] != kind:
            raise _Invalid(f"expected a Personalize {kind} ARN like {example}")
        if region and match["region"] != region:
            raise _Invalid(f"is in {match['region']} but the stack deploys to {region} (aws:region); "
                           "Personalize resources must be in the stack's region",
                           withheld=f"is in another region than the stack's ({region}, aws:region); "
                                    "Personalize resources must be in the stack's region")
        return PersonalizeArn(value, match["region"], match["account"], match["kind"], match["name"])
    return check


def _interactions_dataset(region: str | None) -> Callable[[str], PersonalizeArn]:
    base = _personalize_arn("dataset", region, "my-dataset-group/INTERACTIONS")

    def check(value: str) -> PersonalizeArn:
        arn = base(value)
        if not arn.name.endswith("/INTERACTIONS"):
            raise _Invalid("expected the dataset group's INTERACTIONS dataset (ARN ending in /INTERACTIONS)")
        return arn
    return check


def parse_stack_config(raw: Mapping[str, Any], *, region: str | None,
                       project_dir: Path = PROJECT_DIR, stack_name: str | None = None,
                       secret_keys: Iterable[str] | SecretKeys = ()) -> StackConfig:
    """Parse this project's config keys (without the `engagement-loop:` prefix) into a `StackConfig`.

    The rules sheet is read from `project_dir` and must lie inside it. `stack_name` derives the lake's names
    (`LakeConfig.names`). `secret_keys` names the keys whose values are secret (with or without the
    `engagement-loop:` prefix): no message shows them. Raises `ConfigError` listing every problem,
    including keys this program does not know and every problem of the rules sheet.
    """
    secrets = secret_keys if isinstance(secret_keys, SecretKeys) else SecretKeys.of(secret_keys)
    reader = _Reader(raw, secrets)
    if not region:
        reader.problems.append("aws:region is required: `pulumi config set aws:region eu-west-1`")
    elif not _REGION.match(region):
        reader.fail("aws:region", region, "expected a region name such as eu-west-1")
        region = None
    reader.problems.extend(unknown_key_problem(key) for key in sorted(set(raw) - set(KEYS)))
    if "streamShards" in raw and str(raw.get("streamMode", StreamMode.ON_DEMAND.value)) != StreamMode.PROVISIONED.value:
        # Shards only mean something to a provisioned stream: set alone, they would be ignored in silence.
        reader.problems.append(f"{PROJECT}:streamShards is set but streamMode is not provisioned: add "
                               f"`{PROJECT}:streamMode: provisioned`, or remove streamShards (an on-demand stream "
                               "has no shard count to set)")

    sources = SourcesConfig(
        pinpoint_project_id=reader.read(
            "pinpointProjectId", optional(_PINPOINT_PROJECT_ID, "a Pinpoint project id (32 hex digits) or empty")),
        ses_configuration_set=reader.read(
            "sesConfigurationSet", optional(_SES_CONFIGURATION_SET, "an SES configuration set name or empty")),
        app_producer_policy=reader.read("appProducerPolicy", bool),
        app_stream_shards=reader.read("appStreamShards", _between(1, MAX_APP_STREAM_SHARDS)),
        stream_mode=reader.read("streamMode", member(StreamMode)),
        stream_shards=reader.read("streamShards", _between(1, MAX_STREAM_SHARDS)),
        app_may_report=reader.read("appMayReport", _app_may_report),
    )
    lake = LakeConfig(
        athena_scan_limit_gb=reader.read("athenaScanLimitGb", _at_least(1)),
        query_results_retention_days=reader.read("queryResultsRetentionDays", _at_least(1)),
        errors_retention_days=reader.read("errorsRetentionDays", _at_least(1)),
        names=_lake_names(reader, stack_name),
    )
    retraining = RetrainingConfig(
        campaign=reader.read("personalizeCampaignArn", _personalize_arn("campaign", region, "my-campaign")),
        solution=reader.read("personalizeSolutionArn", _personalize_arn("solution", region, "my-solution")),
        interactions_dataset=reader.read("personalizeInteractionsDatasetArn", _interactions_dataset(region)),
        scoring=reader.read("scoring", _scoring),
        history_days=reader.read("historyDays", _history_days),
        schedule=reader.read("retrainSchedule", _schedule),
        import_mode=reader.read("importMode", member(ImportMode)),
        training_mode=reader.read("trainingMode", member(TrainingMode)),
        attribution_days=reader.read("attributionDays", _between(1, 365)),
        min_provisioned_tps=reader.read("minProvisionedTps", _between(0, 100_000)) or None,
        gate_metric=reader.read("gateMetric", optional(_GATE_METRIC, "a Personalize metric name such as "
                                                        "normalized_discounted_cumulative_gain_at_10, or empty")),
        gate_margin=(reader.read("gateMarginPercent", _between(0, 100)) or 0) / 100,
        solution_events_config=reader.read("solutionEventsConfig", bool),
        real_time_tracking_id=_real_time_tracking(reader),
        log_level=reader.read("retrainingLogLevel", member(StateMachineLogLevel)),
    )
    sheet_path = reader.read("rulesSheet", _nonempty("the path of the rules sheet (CSV), e.g. rules/sample.csv"))
    rules = _rules_sheet(reader, project_dir, sheet_path) if sheet_path else RuleSet(())
    connect = read_connect_config(reader, region=region, action_names=(rule.action_name for rule in rules),
                                  domain_pattern=_CONNECT_DOMAIN)
    rules_config = RulesConfig(
        sheet_path=sheet_path or "",
        rules=rules,
        connect_domain_name=connect.domain_name if connect else None,
        connect=connect,
        counter_ttl_days=reader.read("counterTtlDays", _between(7, 3650)),
        dedupe_horizon_hours=reader.read("dedupeHorizonHours", _between(24, 720)),
        reserve_concurrency=reader.read("rulesReservedConcurrency", bool),
    )
    alarm_topic_arn = reader.read("alarmTopicArn", _alarm_topic(region, retraining.solution))
    config = StackConfig(
        region=region or "",
        identity_mode=reader.read("identityMode", member(IdentityMode)),
        log_retention_days=reader.read("logRetentionDays", _one_of(LOG_RETENTION_DAYS)),
        sources=sources,
        lake=lake,
        retraining=retraining,
        rules=rules_config,
        alarm_topic_arn=alarm_topic_arn,
        holds_secrets=any(secrets.is_secret(key) for key in raw),
    )
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def _alarm_topic(region: str | None, solution: PersonalizeArn | None) -> Callable[[str], str | None]:
    """An SNS topic of the stack's region and account (the account of the Personalize resources, as everywhere the
    program names the stack's account), or empty for the stack's own topic."""
    account = solution.account if solution else None

    def check(value: str) -> str | None:
        if not value:
            return None
        example = f"arn:aws:sns:{region or '<region>'}:{account or '123456789012'}:my-alarms"
        match = _SNS_TOPIC_ARN.match(value)
        if not match:
            raise _Invalid(f"expected the ARN of a standard SNS topic, like {example}, or empty to have the stack "
                           "create its alarm topic")
        if region and match["region"] != region:
            raise _Invalid(f"is in {match['region']} but the stack deploys to {region} (aws:region); CloudWatch "
                           "alarms notify a topic of their own region",
                           withheld=f"is in another region than the stack's ({region}, aws:region); CloudWatch "
                                    "alarms notify a topic of their own region")
        if account and match["account"] != account:
            raise _Invalid(f"belongs to account {match['account']} but the stack's account is {account} (the "
                           "account of personalizeSolutionArn); give a topic of the stack's account",
                           withheld="belongs to another account than the stack's (the account of "
                                    "personalizeSolutionArn); give a topic of the stack's account")
        return value
    return check


def _nonempty(expected: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value:
            raise _Invalid(f"expected {expected}")
        return value
    return check


def _lake_names(reader: _Reader, stack_name: str | None) -> LakeNames | None:
    """Derived names are sanitised (the user did not choose them), then checked with the SQL builders' check."""
    if stack_name is None:
        return None
    try:
        return derived_lake_names(PROJECT, stack_name)
    except InvalidName as problem:
        reader.problems.append(f"the stack name {stack_name[:60]!r} gives the lake an unusable name: {problem}; "
                               "use a stack name of letters, digits, -, _ or . (at most 100 characters)")
        return None


def _rules_sheet(reader: _Reader, project_dir: Path, sheet_path: str) -> RuleSet:
    key = "rulesSheet"
    project = project_dir.resolve()
    # Resolved with symlinks, so neither `../` nor a link leads a stack file to read (and a bad sheet's
    # messages to excerpt) a file outside the project.
    path = (project / sheet_path).resolve()
    if not path.is_relative_to(project):
        reader.fail(key, sheet_path, "the sheet lies outside the project directory (symlinks followed), so it is "
                                     "not read; copy it into the project (e.g. rules/) and set rulesSheet to its "
                                     "path relative to the project (automation.StackSettings.rules_sheet copies "
                                     "an outside sheet for you)")
        return RuleSet(())
    shown_path = path.relative_to(project).as_posix()
    try:
        size = path.stat().st_size
        if size > MAX_SHEET_BYTES:
            reader.fail(key, sheet_path, f"the sheet is {size:,} bytes, more than the {MAX_SHEET_BYTES:,} a rules "
                                         "sheet may have (docs/rules.md, \"Sheet limits\"); split or trim it")
            return RuleSet(())
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        reader.fail(key, sheet_path, f"cannot read {shown_path}: {error.strerror}; "
                                     "point it at the rules CSV (relative to the project directory)")
        return RuleSet(())
    except UnicodeDecodeError:
        reader.fail(key, sheet_path, f"{shown_path} is not UTF-8 text; export the sheet as CSV UTF-8")
        return RuleSet(())
    try:
        return parse_rules_sheet(text, source_name="the rules sheet" if reader.secrets.is_secret(key)
                                 else sheet_path)
    except RulesSheetError as error:
        # The sheet is rejected whole: every problem is listed and nothing deploys.
        reader.problems.extend(f"{PROJECT}:rulesSheet: {line}" for line in error.lines())
        return RuleSet(())


def _real_time_tracking(reader: _Reader) -> str | None:
    enabled = reader.read("realTimeEvents", bool)
    tracking_id = reader.read("personalizeTrackingId", optional(_TRACKING_ID, "an event tracker's tracking id"))
    if enabled and not tracking_id:
        reader.problems.append(f"{PROJECT}:realTimeEvents is true but {PROJECT}:personalizeTrackingId is empty: "
                               "set the tracking id of your Personalize event tracker, or turn realTimeEvents off")
    return tracking_id if enabled else None


def load_stack_config() -> StackConfig:
    """Read the running stack's config from the Pulumi runtime and parse it."""
    from pulumi.runtime import config as runtime_config  # only the Pulumi program needs the SDK

    # The engine passes all config in PULUMI_CONFIG; tests under mocks set it with set_all_config.
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{PROJECT}:"
    raw = {key[len(prefix):]: value for key, value in everything.items() if key.startswith(prefix)}
    # The engine lists secret keys in PULUMI_CONFIG_SECRET_KEYS; mocks (set_all_config) in the runtime.
    secret_keys = {*runtime_config.get_config_secret_keys_env(),
                   *(key for key in everything if runtime_config.is_config_secret(key))}
    import pulumi

    return parse_stack_config(raw, region=everything.get("aws:region"), stack_name=pulumi.get_stack(),
                              secret_keys=secret_keys)


def load_scoring_file(path: str | Path) -> ScoringModel:
    """`ScoringModel.load` for the local tools (`cli demo --scoring`, `cli interactions preview`), except that
    a stack file is read with the one stack-file reader (`components.stack_file`, as `cli stack check` and
    `automation` read it): its scoring value in any form Pulumi allows, a secret (`secure:`) scoring value,
    YAML that does not parse or the file's own problems (a key given twice, …) reported without echoing any
    of the file."""
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return ScoringModel.load(path)
    from components.stack_file import read_stack_file  # it imports this module

    try:
        stack_file = read_stack_file(path)
    except ConfigError as error:
        raise ScoringError(error.problems) from None
    if stack_file.problems:
        # As `cli stack check` and Pulumi would: a stack file with problems (a key given twice, …) is refused.
        raise ScoringError([f"{path}: {problem}" for problem in stack_file.problems])
    key = f"{PROJECT}:scoring"
    if key in stack_file.secure:
        raise ScoringError([f"{path}: the secret value of {key} is encrypted in the stack file, so this tool "
                            "cannot read it; pass the scoring model as a CSV with header EVENT_TYPE,EVENT_VALUE"])
    if key not in stack_file.values:
        raise ScoringError([f"{path}: no `{key}` under `config:`; add it, e.g. "
                            f"`{key}: [\"_email.open=50\", \"_email.click=100\"]`"])
    return ScoringModel.from_config_value(stack_file.values[key], source=f"{path}, config {key}")
