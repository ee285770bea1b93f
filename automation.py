"""Drive an engagement-loop stack from other code with the Pulumi Automation API.

Other code changes the things users change — scoring weights, the rules sheet, the retraining settings —
through `StackSettings`; this module turns them into the stack config the program reads, checks them with
the program's own parser (`components.config.parse_stack_config`) before any stack is touched, writes
them, and runs `pulumi preview` / `pulumi up` on the local program in this directory (`__main__.py`).

    from automation import StackSettings, preview, up

    settings = StackSettings(
        scoring={"_email.open": 50, "_email.click": 100, "_email.unsubscribe": -200},
        rules_sheet="/exports/rules-2026-11.csv",  # outside the project: copied into rules/ (see below)
        training_mode="UPDATE",
    )
    planned = preview("dev", settings)   # a bad weight or sheet raises ConfigError before the CLI runs
    print(planned.config_changes, planned.change_summary)
    done = up("dev", settings)
    print(done.outputs["rulesVersion"])

Import it with the project directory on `sys.path` (it sits next to `__main__.py`).

Checks come before the CLI: `preview` and `up` first validate the settings over the stack file on disk
(`Pulumi.<stack>.yaml`, read by `components.stack_file`, the reader `python -m cli stack check` uses) and
raise `ConfigError` listing every problem; only then do they need the Pulumi CLI, and without one they raise
`PulumiCliMissing`, which says how to install it (https://www.pulumi.com/docs/install/). Without a CLI,
`to_config_values`, `validate(settings, current_config)` and `validate_stack_file(stack_name, settings)`
still tell you whether settings are good, with the messages `pulumi preview` would print.

Choices worth knowing:

- `rules_sheet` is a CSV path; a relative one is relative to the project directory. The stack stores a
  path relative to the project (`rulesSheet`), so a file outside the project is copied into `rules/` as
  `<stem>-<12 hex of its SHA-256>.csv` (by `apply`, after validation passed). The name changes exactly
  when the content does, so a copy is never overwritten by a different sheet and re-applying the same file
  is a no-op. Keep the copy with the project (commit it): a later `pulumi up` from another checkout needs it.
- `scoring` is declared in Pulumi.yaml as an array of strings; it is written as `EVENT_TYPE=VALUE` entries
  in the order given. `Stack.set_all_config` would store it as a plain string, which the CLI rejects
  against that schema ("must be of type 'array<string>'"), and `--path` element writes leave stale
  elements of a longer old list behind; so `apply` writes with `Stack.set_all_config_json`
  (`pulumi config set-all --json`, Pulumi CLI 3.202 or later), which stores a real list in one call.
- `preview` applies the settings to the stack's config file before previewing — that is how the program
  sees them. Revert the stack file (or apply the old settings) to discard them.

Not run here: everything that needs the Pulumi CLI — `select_stack`, `apply` on a real stack, `preview`
and `up` (which also need AWS credentials) — was never run on the machines that built this module: they
have no Pulumi CLI. The tests cover the translation, the validation and the calls made on the Automation
API objects, against fakes.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

from pulumi import automation as auto

from components.config import (
    KEYS, PROJECT, PROJECT_DIR, ConfigError, SecretKeys, StackConfig, parse_stack_config, unknown_key_problem,
)
from components.stack_file import StackFile, read_stack_file, stack_config_of
from functions.retraining.settings import ImportMode, TrainingMode

REGION_KEY = "aws:region"
RULES_DIR = "rules"
"""Where rules sheets from outside the project are copied (relative to the project directory)."""
SECRET_MASK = "[secret]"

# Keys with a field of their own in StackSettings (config name -> field name); `extra` may not set them.
_FIELD_OF_KEY: Mapping[str, str] = MappingProxyType({
    "scoring": "scoring",
    "rulesSheet": "rules_sheet",
    "historyDays": "history_days",
    "importMode": "import_mode",
    "trainingMode": "training_mode",
    "retrainSchedule": "retrain_schedule",
    REGION_KEY: "region",
})

ExtraValue = str | int | bool


@dataclass(frozen=True, kw_only=True, slots=True)
class StackSettings:
    """What other code changes on a stack. Every field defaults to None (or empty): leave that setting as
    the stack has it. Values are checked by `validate`, with the program's own messages."""

    scoring: Mapping[str, float] | None = None
    """Event type → EVENT_VALUE (`engagement-loop:scoring`), kept in the order given. Default None."""
    rules_sheet: str | Path | None = None
    """Path of the rules sheet CSV (`rulesSheet`); relative paths are relative to the project directory;
    a file outside the project is copied into `rules/` under a content-hashed name. Default None."""
    history_days: int | None = None
    """`historyDays`: -1 for all history, else days ≥ 1. Default None."""
    import_mode: ImportMode | str | None = None
    """`importMode`: FULL or INCREMENTAL. Default None."""
    training_mode: TrainingMode | str | None = None
    """`trainingMode`: FULL, UPDATE or AUTO. Default None."""
    retrain_schedule: str | None = None
    """`retrainSchedule`, an EventBridge schedule expression. Default None."""
    region: str | None = None
    """`aws:region`. Default None."""
    extra: Mapping[str, ExtraValue] = field(default_factory=dict)
    """Any other key declared in Pulumi.yaml (`gateMetric`, `engagement-loop:realTimeEvents`, …) → value;
    booleans are written `true`/`false`. Unknown keys, and keys that have a field above, are rejected
    when the settings are built. Default empty."""

    def __post_init__(self) -> None:
        if self.scoring is not None:
            object.__setattr__(self, "scoring", MappingProxyType(dict(self.scoring)))
        extra: dict[str, ExtraValue] = {}
        problems: list[str] = []
        for key, value in self.extra.items():
            name = key.removeprefix(f"{PROJECT}:")
            if name in _FIELD_OF_KEY:
                problems.append(f"StackSettings.extra[{key!r}]: {key} has its own field; "
                                f"use StackSettings.{_FIELD_OF_KEY[name]}")
            elif name not in KEYS:
                problems.append(unknown_key_problem(name))
            elif not isinstance(value, (str, int, bool)):
                # The value is not shown: it may be the new value of a key the stack keeps secret.
                problems.append(f"StackSettings.extra[{key!r}] is a {type(value).__name__}: expected text, a "
                                "whole number or true/false")
            else:
                extra[name] = value
        if problems:
            raise ConfigError(problems)
        object.__setattr__(self, "extra", MappingProxyType(extra))


PULUMI_INSTALL_URL = "https://www.pulumi.com/docs/install/"


class PulumiCliMissing(RuntimeError):
    """The Pulumi CLI, which `select_stack`, `preview` and `up` drive, is not installed (not on `PATH`).
    Raised after the settings and the stack file were validated, before any stack is touched."""

    def __init__(self, detail: str = "no `pulumi` on PATH"):
        super().__init__(
            f"the Pulumi CLI is not installed ({detail}): the Automation API runs it for select_stack, preview "
            f"and up. Install it ({PULUMI_INSTALL_URL}, e.g. `curl -fsSL https://get.pulumi.com | sh`) and put "
            "it on PATH, or pass LocalWorkspaceOptions(pulumi_command=...). Without it, "
            "`python -m cli stack check Pulumi.<stack>.yaml`, `validate` and `to_config_values` still check "
            "settings offline.")


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One stack config key `apply` changed: its old value (None: it was not set) and the new one."""

    old: str | None
    new: str


@dataclass(frozen=True, slots=True)
class PreviewOutcome:
    """What `preview` did: the config keys it changed and `pulumi preview`'s operation counts
    (`{"same": 40, "update": 2}`)."""

    config_changes: Mapping[str, ConfigChange]
    change_summary: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class UpOutcome:
    """What `up` did: the config keys it changed, the operation counts, the update's result
    (`succeeded`) and the stack outputs as plain values, secret ones replaced by `[secret]`."""

    config_changes: Mapping[str, ConfigChange]
    change_summary: Mapping[str, int]
    result: str
    outputs: Mapping[str, Any]


class ConfigurableStack(Protocol):
    """The part of `pulumi.automation.Stack` that `apply` uses."""

    def get_all_config(self) -> Mapping[str, auto.ConfigValue]: ...

    def set_all_config_json(self, config_json: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Sheet:
    config_path: str
    """What `rulesSheet` stores: a POSIX path relative to the project directory."""
    source: Path
    needs_copy: bool
    """The file is outside the project and its content-hashed copy is not there yet."""


def to_config_values(settings: StackSettings, *, project_dir: str | Path = PROJECT_DIR) -> dict[str, auto.ConfigValue]:
    """The stack config `settings` set: `aws:region` and `engagement-loop:<key>` → value, in the form
    `pulumi config --json` hands back and the engine passes to the program (strings; the scoring list as
    the JSON text of `["EVENT_TYPE=VALUE", …]`). Keys come in a fixed order: `aws:region`, then the order of
    `components.config.KEYS`. Writes nothing; reads a rules sheet outside the project to hash it."""
    return _translate(settings, Path(project_dir))[0]


def validate(settings: StackSettings, current_config: Mapping[str, auto.ConfigValue | Any], *,
             project_dir: str | Path = PROJECT_DIR) -> StackConfig:
    """Parse the stack config as it would be after applying `settings` over `current_config`, with the
    program's own parser: raises `ConfigError` with the problems `pulumi preview` would report, including
    every problem of the rules sheet. Writes nothing; needs no CLI.

    `current_config` is `stack.get_all_config()` (`ConfigValue`s), plain strings, or a stack file's `config:`
    mapping as YAML reads it (lists, numbers, booleans, `{secure: …}`), which is read as
    `components.stack_file` reads stack files: a secure value counts as present and secret, and is not
    checked. To check a stack file on disk, `validate_stack_file` reads it for you."""
    values, sheet = _translate(settings, Path(project_dir))
    return _validated(values, current_config, sheet, Path(project_dir))


def stack_file_path(stack_name: str, *, project_dir: str | Path = PROJECT_DIR) -> Path:
    """Where the CLI keeps the stack's config: `Pulumi.<stack>.yaml` in the project directory (or in
    Pulumi.yaml's `stackConfigDir`); an `org/project/stack` name uses its last part."""
    project = Path(project_dir)
    config_dir = project
    try:
        import yaml

        project_file = yaml.safe_load((project / "Pulumi.yaml").read_text(encoding="utf-8")) or {}
        if isinstance(project_file, dict) and isinstance(project_file.get("stackConfigDir"), str):
            config_dir = project / project_file["stackConfigDir"]
    except (OSError, ValueError):  # no or unreadable Pulumi.yaml: the CLI will say so
        pass
    return config_dir / f"Pulumi.{stack_name.rsplit('/', 1)[-1]}.yaml"


def validate_stack_file(stack_name: str, settings: StackSettings = StackSettings(), *,
                        project_dir: str | Path = PROJECT_DIR) -> StackConfig:
    """`validate` over the stack file on disk (`stack_file_path`; a missing file is an empty config, as for
    the CLI), read with the one stack-file reader. Raises `ConfigError`; writes nothing; needs no CLI."""
    path = stack_file_path(stack_name, project_dir=project_dir)
    current = read_stack_file(path) if path.is_file() else StackFile(path, stack_name, {}, frozenset())
    values, sheet = _translate(settings, Path(project_dir))
    return _validated(values, current, sheet, Path(project_dir))


def apply(stack: ConfigurableStack, settings: StackSettings, *,
          project_dir: str | Path = PROJECT_DIR) -> dict[str, ConfigChange]:
    """Validate `settings` against the stack's current config, then write the keys whose value changes
    (and copy an outside rules sheet into `rules/`). Returns the changed keys; nothing is written when
    validation fails or nothing changes. Needs the Pulumi CLI (3.202+) for a real stack."""
    project = Path(project_dir)
    current = stack.get_all_config()
    values, sheet = _translate(settings, project)
    _validated(values, current, sheet, project)
    changed = {key: value for key, value in values.items() if not _same(key, current.get(key), value.value)}
    if not changed:
        return {}
    if sheet is not None and sheet.needs_copy:
        target = project / sheet.config_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sheet.source, target)
    document: dict[str, dict[str, Any]] = {}
    changes: dict[str, ConfigChange] = {}
    for key, value in changed.items():
        old = current.get(key)
        # A key the user keeps secret stays secret; its values stay out of the returned diff.
        secret = old is not None and old.secret
        document[key] = {"value": value.value, "secret": secret}
        if _kind(key) == "array":
            # With objectValue the CLI stores a real list, which Pulumi.yaml's `type: array` requires.
            document[key]["objectValue"] = json.loads(value.value)
        changes[key] = (ConfigChange(None if old is None else SECRET_MASK, SECRET_MASK) if secret
                        else ConfigChange(None if old is None else old.value, value.value))
    stack.set_all_config_json(json.dumps(document))
    return changes


def select_stack(stack_name: str, *, project_dir: str | Path = PROJECT_DIR, create: bool = False,
                 opts: auto.LocalWorkspaceOptions | None = None) -> auto.Stack:
    """The stack `stack_name` of the local program in `project_dir` (its `__main__.py`, Pulumi.yaml and
    stack files), created first when `create` is true. `opts` passes e.g. environment variables
    (`AWS_PROFILE`, `PULUMI_CONFIG_PASSPHRASE`) to every CLI command. Needs the Pulumi CLI."""
    work_dir = str(Path(project_dir).resolve())
    if not _cli_found(opts):
        raise PulumiCliMissing()
    try:
        if create:
            return auto.create_or_select_stack(stack_name, work_dir=work_dir, opts=opts)
        return auto.select_stack(stack_name, work_dir=work_dir, opts=opts)
    except FileNotFoundError as error:
        # The Automation API starts the CLI as a subprocess; a `pulumi` that vanished or an env_vars PATH without it
        # ends here.
        if Path(str(error.filename or "")).name.startswith("pulumi"):
            raise PulumiCliMissing(f"cannot run {error.filename!r}") from None
        raise


def preview(stack_name: str, settings: StackSettings, *, project_dir: str | Path = PROJECT_DIR,
            create: bool = False, opts: auto.LocalWorkspaceOptions | None = None,
            on_output: Callable[[str], Any] | None = print) -> PreviewOutcome:
    """Validate `settings` over the stack file on disk (`validate_stack_file`: `ConfigError`, before the CLI is
    needed), then apply them to the stack's config and run `pulumi preview`. Needs the Pulumi CLI
    (`PulumiCliMissing` when it is not installed) and AWS credentials."""
    validate_stack_file(stack_name, settings, project_dir=project_dir)
    stack = select_stack(stack_name, project_dir=project_dir, create=create, opts=opts)
    changes = apply(stack, settings, project_dir=project_dir)
    result = stack.preview(on_output=on_output)
    return PreviewOutcome(MappingProxyType(changes), _op_counts(result.change_summary))


def up(stack_name: str, settings: StackSettings, *, project_dir: str | Path = PROJECT_DIR,
       create: bool = False, opts: auto.LocalWorkspaceOptions | None = None,
       on_output: Callable[[str], Any] | None = print) -> UpOutcome:
    """Validate `settings` over the stack file on disk (`validate_stack_file`: `ConfigError`, before the CLI is
    needed), then apply them to the stack's config and run `pulumi up`; returns the outputs as plain values.
    Needs the Pulumi CLI (`PulumiCliMissing` when it is not installed) and AWS credentials."""
    validate_stack_file(stack_name, settings, project_dir=project_dir)
    stack = select_stack(stack_name, project_dir=project_dir, create=create, opts=opts)
    changes = apply(stack, settings, project_dir=project_dir)
    result = stack.up(on_output=on_output)
    outputs = {name: SECRET_MASK if output.secret else output.value for name, output in result.outputs.items()}
    return UpOutcome(MappingProxyType(changes), _op_counts(result.summary.resource_changes),
                     result.summary.result, MappingProxyType(outputs))


# --- helpers ----------------------------------------------------------------------------------------


def _translate(settings: StackSettings, project_dir: Path) -> tuple[dict[str, auto.ConfigValue], _Sheet | None]:
    by_name: dict[str, str] = {}
    if settings.scoring is not None:
        by_name["scoring"] = json.dumps([f"{event_type}={_number_text(value)}"
                                         for event_type, value in settings.scoring.items()])
    sheet = None if settings.rules_sheet is None else _locate_sheet(settings.rules_sheet, project_dir)
    if sheet is not None:
        by_name["rulesSheet"] = sheet.config_path
    for name, value in (("historyDays", settings.history_days), ("importMode", settings.import_mode),
                        ("trainingMode", settings.training_mode), ("retrainSchedule", settings.retrain_schedule)):
        if value is not None:
            by_name[name] = _text(value)
    by_name.update((name, _text(value)) for name, value in settings.extra.items())

    values: dict[str, auto.ConfigValue] = {}
    if settings.region is not None:
        values[REGION_KEY] = auto.ConfigValue(settings.region)
    values.update((f"{PROJECT}:{name}", auto.ConfigValue(by_name[name])) for name in KEYS if name in by_name)
    return values, sheet


def _validated(values: Mapping[str, auto.ConfigValue], current: Mapping[str, auto.ConfigValue | Any] | StackFile,
               sheet: _Sheet | None, project_dir: Path) -> StackConfig:
    if not isinstance(current, StackFile):
        # Values read from YAML (lists, numbers, `{secure: …}`) go through the one stack-file reader; the
        # CLI's `ConfigValue`s are already the engine's strings.
        read = stack_config_of({key: value for key, value in current.items()
                                if not isinstance(value, auto.ConfigValue)})
        known = {key: value for key, value in current.items() if isinstance(value, auto.ConfigValue)}
    else:
        read, known = current, {}
    merged = {**read.program_config(), **{key: value.value for key, value in known.items()}}
    merged.update((key, value.value) for key, value in values.items())
    prefix = f"{PROJECT}:"
    raw = {key[len(prefix):]: value for key, value in merged.items() if key.startswith(prefix)}
    region = merged.get(REGION_KEY)
    # `get_all_config` reads with --show-secrets, so values are plain text here: the keys the stack keeps
    # secret (and `apply` keeps secret when it writes them) go to the parser, which never shows their values.
    secrets = SecretKeys(_secret_keys(known, values).keys | read.secure)
    try:
        if sheet is None or not sheet.needs_copy:
            parsed = parse_stack_config(raw, region=region, project_dir=project_dir, secret_keys=secrets)
        else:
            # Parse the outside sheet where the program will read it, under its project path, so the messages
            # name that path as `pulumi preview` would — without writing into the project before it is valid.
            with tempfile.TemporaryDirectory() as staging:
                staged = Path(staging) / sheet.config_path
                staged.parent.mkdir(parents=True)
                shutil.copyfile(sheet.source, staged)
                parsed = parse_stack_config(raw, region=region, project_dir=Path(staging), secret_keys=secrets)
    except ConfigError as error:
        raise ConfigError([*read.problems, *error.problems]) from None
    if read.problems:
        raise ConfigError(list(read.problems))
    return parsed


def _cli_found(opts: auto.LocalWorkspaceOptions | None) -> bool:
    """Whether the Automation API will find a Pulumi CLI: one passed in `opts`, else `pulumi` on PATH."""
    if opts is not None and getattr(opts, "pulumi_command", None) is not None:
        return True
    return shutil.which("pulumi") is not None


def _secret_keys(*configs: Mapping[str, auto.ConfigValue | str]) -> SecretKeys:
    return SecretKeys.of(key for config in configs for key, value in config.items()
                         if isinstance(value, auto.ConfigValue) and value.secret)


def _locate_sheet(rules_sheet: str | Path, project_dir: Path) -> _Sheet:
    project = project_dir.resolve()
    given = Path(rules_sheet).expanduser()
    source = (given if given.is_absolute() else project / given).resolve()
    if source.is_relative_to(project):
        return _Sheet(source.relative_to(project).as_posix(), source, needs_copy=False)
    try:
        content = source.read_bytes()
    except OSError as error:
        raise ConfigError([f"{PROJECT}:rulesSheet = {str(rules_sheet)!r}: cannot read {source}: "
                           f"{error.strerror}; point it at the rules CSV"]) from None
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.stem).strip("-.") or "rules"
    config_path = f"{RULES_DIR}/{stem}-{hashlib.sha256(content).hexdigest()[:12]}.csv"
    target = project / config_path
    return _Sheet(config_path, source, needs_copy=not (target.is_file() and target.read_bytes() == content))


def _number_text(value: Any) -> str:
    """A scoring value as the program's parser reads it back: 50, not 50.0; anything else as written,
    so the scoring validator reports it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value)


def _text(value: ExtraValue | enum.Enum) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kind(key: str) -> str | None:
    name = key.removeprefix(f"{PROJECT}:")
    return KEYS[name][0] if key.startswith(f"{PROJECT}:") and name in KEYS else None


def _same(key: str, current: auto.ConfigValue | None, new: str) -> bool:
    if current is None:
        return False
    if _kind(key) == "array":
        # The CLI hands structured values back as its own JSON text; compare what the text means.
        try:
            return json.loads(current.value) == json.loads(new)
        except json.JSONDecodeError:
            return False
    return current.value == new


def _op_counts(op_map: Mapping[Any, int] | None) -> Mapping[str, int]:
    return MappingProxyType({(op.value if isinstance(op, enum.Enum) else str(op)): count
                             for op, count in (op_map or {}).items()})
