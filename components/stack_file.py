"""The one reader of stack files (`Pulumi.<stack>.yaml`) for code that runs without the Pulumi engine.

`read_stack_file` reads a stack file as Pulumi does and hands back its config in the form the engine hands
the program: every value a string, numbers and booleans as written (`48`, `true`), lists and objects as
their JSON text. YAML is read with the core schema Pulumi's Go YAML library uses — only `true`/`false` are
booleans and dates stay text (`yes`, `2026-11-01` are strings, not a boolean and a date) — and a key given
twice is a problem, as it is for Pulumi.

A `secure:` value (`pulumi config set --secret`) is ciphertext that only the stack's secrets provider can
decrypt. Offline its key is present and secret, and its value cannot be known: `StackFile.program_config`
puts a valid stand-in in its place (so every other key, and the program under mocks, can still be checked)
and `StackFile.notes` says that value is not checked. The stand-in never reaches a message: the key is
secret, and `SecretKeys` renders it as "the secret value of …".

Used by `python -m cli stack check`, `automation` (the stack file on disk, before the CLI runs) and the
local tools that take a stack file for its scoring model (`config.load_scoring_file`).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from components.config import (
    KEYS, PROJECT, PROJECT_DIR, ConfigError, SecretKeys, StackConfig, parse_stack_config,
)

REGION_KEY = "aws:region"
_STACK_FILE_NAME = re.compile(r"^Pulumi\.(?P<stack>.+)\.ya?ml$")
_ACCOUNT_IN_ARN = re.compile(r"^arn:aws[a-z-]*:(?:personalize|sns):([a-z0-9-]+):(\d{12}):")
_STAND_IN_ACCOUNT = "123456789012"


class StackFileError(ConfigError):
    """The stack file cannot be read at all (missing, not UTF-8, not YAML, no `config:` mapping)."""


@dataclass(frozen=True, slots=True)
class StackFile:
    """What a stack file holds, as the engine would hand it to the program."""

    path: Path
    stack_name: str
    """From the file name (`Pulumi.<stack>.yaml`)."""
    values: Mapping[str, str]
    """Full key (`engagement-loop:scoring`, `aws:region`) → the engine's string form, for every key whose
    value is known offline (every key but the `secure:` ones)."""
    secure: frozenset[str]
    """Full keys whose value is (or contains) `secure:` ciphertext: present and secret, value unknown."""
    problems: tuple[str, ...] = ()
    """Problems of the file's keys Pulumi itself would reject (a key given twice, a key without a namespace,
    a key with no value)."""
    notes: tuple[str, ...] = ()
    """What could not be checked offline (secure values, ESC environments)."""
    environment: bool = False
    """The stack imports Pulumi ESC environments (`environment:`): a key the file does not set may come from
    one, so offline a required key it does not set is not missing (`program_config` stands in for it)."""

    @property
    def secret_keys(self) -> SecretKeys:
        return SecretKeys(self.secure)

    @property
    def region(self) -> str | None:
        return self.values.get(REGION_KEY)

    def program_config(self) -> dict[str, str]:
        """Every key → the string the program receives; a secure key's unknown value replaced by a valid
        stand-in for that key (its value is not checked; the key stays secret)."""
        config = dict(self.values)
        for key in sorted(self.secure):
            config[key] = _stand_in(key, self.values)
        if self.environment:
            # Keys an ESC environment may set are not read offline: a required key the file does not set is
            # not missing here (`pulumi preview` reads the environment and checks it).
            for key in _REQUIRED_KEYS:
                if key not in config:
                    config[key] = _stand_in(key, self.values)
        return config

    def project_config(self) -> dict[str, str]:
        """`program_config()`'s `engagement-loop:` keys without the prefix: what `parse_stack_config` reads."""
        return project_keys(self.program_config())

    def parse(self, *, project_dir: Path = PROJECT_DIR) -> StackConfig:
        """Parse with the program's parser (with this stack's name); raises `ConfigError` listing the file's own
        problems and every problem the parser finds."""
        config = self.program_config()
        try:
            parsed = parse_stack_config(project_keys(config), region=config.get(REGION_KEY),
                                        project_dir=project_dir, stack_name=self.stack_name,
                                        secret_keys=self.secret_keys)
        except ConfigError as error:
            raise ConfigError([*self.problems, *error.problems]) from None
        if self.problems:
            raise ConfigError(list(self.problems))
        return parsed


def project_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `engagement-loop:` keys of a full-key config, without the prefix."""
    prefix = f"{PROJECT}:"
    return {key[len(prefix):]: value for key, value in config.items() if key.startswith(prefix)}


def stack_name_of(path: Path) -> str:
    """`dev` for `Pulumi.dev.yaml`; any other file name: its stem."""
    match = _STACK_FILE_NAME.match(path.name)
    return match["stack"] if match else path.stem


def engine_value(value: Any) -> str:
    """A config value as the engine hands it to the program: strings as they are, booleans `true`/`false`,
    numbers as written, lists and objects as JSON text (already-converted strings pass through)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return json.dumps(value, default=_json_default)


class _NotAConfigValue(ValueError):
    """A YAML value (`!!binary`, …) that is no config value Pulumi reads."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise _NotAConfigValue(type(value).__name__)


def read_stack_file(path: str | Path) -> StackFile:
    """Read a stack file. Raises `StackFileError` when it cannot be read as one; problems with single keys are
    collected in `StackFile.problems` (and reported with the parser's by `StackFile.parse`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise StackFileError([f"{path}: no such file; give the path of a stack file (Pulumi.<stack>.yaml)"]) from None
    except IsADirectoryError:
        raise StackFileError([f"{path}: is a directory; give the path of a stack file (Pulumi.<stack>.yaml)"]) from None
    except OSError as error:
        raise StackFileError([f"{path}: cannot read it: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise StackFileError([f"{path}: not UTF-8 text (byte {error.start}); save the stack file as UTF-8"]) from None
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as error:
        # The YAML library's message quotes the file, which may hold secrets: say where, not what.
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None)
        what = f" ({problem})" if problem else ""
        raise StackFileError([f"{path}: not valid YAML{where}{what}; fix the stack file"]) from None
    finally:
        loader.dispose()
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise StackFileError([f"{path}: expected a mapping with a `config:` section at the top, got a "
                              f"{_yaml_kind(document)}; see Pulumi.dev.yaml"])
    config = document.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise StackFileError([f"{path}: `config:` must be a mapping of `{PROJECT}:<key>: value`, got a "
                              f"{_yaml_kind(config)}; see Pulumi.dev.yaml"])
    read = stack_config_of(config, path=path, stack_name=stack_name_of(path))
    notes = list(read.notes)
    environment = bool(document.get("environment"))
    if environment:
        notes.append("the stack imports Pulumi ESC environments (`environment:`); their values are not read "
                     "offline, so keys set only there are not checked offline and a required key the file does "
                     "not set is not reported missing (`pulumi preview` reads and checks them)")
    return StackFile(read.path, read.stack_name, read.values, read.secure, (*loader.duplicates, *read.problems),
                     tuple(notes), environment)


def stack_config_of(config: Mapping[Any, Any], *, path: Path = Path("(config)"), stack_name: str = "") -> StackFile:
    """A stack file's `config:` mapping (native YAML values, `{secure: …}` for secrets), read as `read_stack_file`
    reads one."""
    values: dict[str, str] = {}
    secure: set[str] = set()
    problems: list[str] = []
    written: dict[str, str] = {}
    for key, value in config.items():
        key = str(key)
        full = _full_key(key)
        if full is None:
            problems.append(f"{key!r} is not a config key Pulumi reads: keys are <namespace>:<name>; write "
                            f"{PROJECT}:{key} for a setting of this program")
            continue
        if full in written:
            # Pulumi reads `ns:config:name` as `ns:name`; given both ways, which one wins is not defined.
            problems.append(f"{full} is given twice (as {written[full]} and as {key}); Pulumi reads both as "
                            f"{full}: keep one")
            continue
        written[full] = key
        if _holds_secure(value):
            secure.add(full)
            continue
        if value is None:
            problems.append(f"{full} has no value; give it one or remove the line")
            continue
        try:
            values[full] = engine_value(value)
        except (_NotAConfigValue, TypeError, ValueError):
            problems.append(f"{full}: expected a string (or a number, boolean, list or object), got a YAML value "
                            "Pulumi does not read as config (e.g. !!binary); write the value as text")

    notes = [f"{key} is a secure value: it is present and secret, but its value is encrypted, so it is not "
             "checked offline (`pulumi preview` checks it)" for key in sorted(secure)]
    return StackFile(path, stack_name, MappingProxyType(values), frozenset(secure), tuple(problems), tuple(notes))


_REQUIRED_KEYS = (REGION_KEY, *(f"{PROJECT}:{name}" for name, (_, default) in KEYS.items() if default is None))


def _full_key(key: str) -> str | None:
    """`namespace:name`; Pulumi's legacy `namespace:config:name` form is the same key."""
    parts = key.split(":")
    if len(parts) == 2 and all(parts):
        return key
    if len(parts) == 3 and parts[1] == "config" and parts[0] and parts[2]:
        return f"{parts[0]}:{parts[2]}"
    return None


def _holds_secure(value: Any) -> bool:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return True
        return any(_holds_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_secure(v) for v in value)
    return False


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "value")


# Valid values standing in for secure ones whose value cannot be known offline: "present" values, so the
# optional parts they switch on count as on. Keys not listed stand in with their Pulumi.yaml default.
def _stand_in(key: str, known: Mapping[str, str]) -> str:
    arns = [m for v in known.values() if (m := _ACCOUNT_IN_ARN.match(v))]
    region = known.get(REGION_KEY) or next((m.group(1) for m in arns), "eu-west-1")
    account = next((m.group(2) for m in arns), _STAND_IN_ACCOUNT)
    personalize = f"arn:aws:personalize:{region}:{account}"
    by_name = {
        "pinpointProjectId": "0" * 32,
        "sesConfigurationSet": "secure-value",
        "personalizeCampaignArn": f"{personalize}:campaign/secure-value",
        "personalizeSolutionArn": f"{personalize}:solution/secure-value",
        "personalizeInteractionsDatasetArn": f"{personalize}:dataset/secure-value/INTERACTIONS",
        "scoring": json.dumps(["_email.open=1"]),
        "gateMetric": "secure_value",
        "personalizeTrackingId": "secure-value",
        "connectDomainName": "secure-value",
        "alarmTopicArn": f"arn:aws:sns:{region}:{account}:secure-value",
    }
    if key == REGION_KEY:
        return region
    name = key.removeprefix(f"{PROJECT}:")
    if key.startswith(f"{PROJECT}:") and name in by_name:
        return by_name[name]
    default = KEYS[name][1] if key.startswith(f"{PROJECT}:") and name in KEYS else ""
    return engine_value("" if default is None else default)


class _Loader(yaml.SafeLoader):
    """YAML as Pulumi's Go library reads a stack file: core-schema booleans (`true`/`false` only), no implicit
    dates or times; duplicate keys collected instead of the last one silently winning."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Merge keys (`<<: *anchor`) as YAML 1.1 and go-yaml read them: the merged keys come first and the
        # mapping's own keys override them (not a duplicate); `super()` flattens the merge.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                self.duplicates.append(f"{key} is given twice (line {key_node.start_mark.line + 1}); Pulumi "
                                       "rejects a key given twice: keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
