"""automation.py: settings → stack config, validation with the program's own parser, and the Automation API
calls, against fake stacks (there is no Pulumi CLI on these machines)."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

import automation
from automation import ConfigChange, StackSettings, apply, to_config_values, validate
from components.config import KEYS, ConfigError, parse_stack_config
from functions.retraining.scoring import ScoringModel
from functions.retraining.settings import ImportMode, TrainingMode

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SHEET = ROOT / "rules" / "sample.csv"
BAD_SHEET = ROOT / "tests" / "fixtures" / "rules" / "bad.csv"


def stack_file_config() -> dict[str, auto.ConfigValue]:
    """Pulumi.dev.yaml as `stack.get_all_config()` returns it: strings, structured values as JSON text."""
    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return {key: auto.ConfigValue(value if isinstance(value, str) else json.dumps(value))
            for key, value in config.items()}


def plain(values) -> dict[str, str]:
    return {key: value.value for key, value in values.items()}


def raw_of(config: dict[str, str]) -> dict[str, str]:
    return {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("engagement-loop:")}


@pytest.fixture
def project(tmp_path) -> Path:
    """A project directory holding the sample rules sheet, as the real one does."""
    root = tmp_path / "project"
    (root / "rules").mkdir(parents=True)
    shutil.copyfile(SAMPLE_SHEET, root / "rules" / "sample.csv")
    shutil.copyfile(ROOT / "Pulumi.dev.yaml", root / "Pulumi.dev.yaml")
    return root


class FakeStack:
    """Records what `apply`/`preview`/`up` ask of a stack; `set_all_config_json` stores values as the CLI
    would hand them back (structured values as JSON text)."""

    def __init__(self, config: dict[str, auto.ConfigValue]):
        self.config = dict(config)
        self.calls: list[tuple] = []

    def get_all_config(self):
        self.calls.append(("get_all_config",))
        return dict(self.config)

    def set_all_config_json(self, config_json: str) -> None:
        document = json.loads(config_json)
        self.calls.append(("set_all_config_json", document))
        for key, entry in document.items():
            value = json.dumps(entry["objectValue"]) if "objectValue" in entry else entry["value"]
            self.config[key] = auto.ConfigValue(value, secret=entry["secret"])

    def preview(self, on_output=None):
        self.calls.append(("preview", on_output))
        return auto.PreviewResult("", "", {auto.OpType.SAME: 40, auto.OpType.UPDATE: 2})

    def up(self, on_output=None):
        self.calls.append(("up", on_output))
        summary = auto.UpdateSummary(kind="update", start_time=datetime.now(timezone.utc), message="",
                                     environment={}, config={}, result="succeeded",
                                     resource_changes={"same": 41, "update": 1})
        outputs = {"rulesVersion": auto.OutputValue("r-123", False),
                   "dataKeyArn": auto.OutputValue("arn:aws:kms:eu-west-1:123456789012:key/k", True)}
        return auto.UpResult("", "", summary, outputs)

    def writes(self) -> list[dict]:
        return [call[1] for call in self.calls if call[0] == "set_all_config_json"]


# --- translation ----------------------------------------------------------------------------------------


def test_scoring_is_the_json_list_of_entries_in_the_order_given(project):
    scoring = {"_email.open": 50, "_email.click": 100.0, "_push.open": 0.25, "_email.unsubscribe": -200}
    values = plain(to_config_values(StackSettings(scoring=scoring), project_dir=project))
    assert values == {"engagement-loop:scoring":
                      '["_email.open=50", "_email.click=100", "_push.open=0.25", "_email.unsubscribe=-200"]'}
    # What the engine hands the program reads back as the same model, in the same order.
    model = ScoringModel.from_config_value(values["engagement-loop:scoring"], source="scoring")
    assert list(model.values.items()) == [("_email.open", 50.0), ("_email.click", 100.0), ("_push.open", 0.25),
                                          ("_email.unsubscribe", -200.0)]


def test_only_the_settings_given_are_set_region_first_then_declaration_order(project):
    settings = StackSettings(
        extra={"gateMetric": "normalized_discounted_cumulative_gain_at_10", "engagement-loop:realTimeEvents": True,
               "attributionDays": 14},
        training_mode=TrainingMode.UPDATE, import_mode="INCREMENTAL", history_days=-1,
        retrain_schedule="rate(1 day)", rules_sheet="rules/sample.csv", region="eu-central-1",
        scoring={"_email.open": 1},
    )
    values = plain(to_config_values(settings, project_dir=project))
    assert list(values.items()) == [
        ("aws:region", "eu-central-1"),
        ("engagement-loop:scoring", '["_email.open=1"]'),
        ("engagement-loop:historyDays", "-1"),
        ("engagement-loop:retrainSchedule", "rate(1 day)"),
        ("engagement-loop:importMode", "INCREMENTAL"),
        ("engagement-loop:trainingMode", "UPDATE"),
        ("engagement-loop:attributionDays", "14"),
        ("engagement-loop:gateMetric", "normalized_discounted_cumulative_gain_at_10"),
        ("engagement-loop:realTimeEvents", "true"),
        ("engagement-loop:rulesSheet", "rules/sample.csv"),
    ]
    assert to_config_values(StackSettings(), project_dir=project) == {}
    assert plain(to_config_values(StackSettings(import_mode=ImportMode.FULL), project_dir=project)) == {
        "engagement-loop:importMode": "FULL"}


@pytest.mark.parametrize("given", ["rules/sample.csv", "./rules/../rules/sample.csv", "ABSOLUTE"])
def test_a_sheet_inside_the_project_is_stored_relative_to_it(project, given):
    sheet = str(project / "rules" / "sample.csv") if given == "ABSOLUTE" else given
    values = plain(to_config_values(StackSettings(rules_sheet=sheet), project_dir=project))
    assert values == {"engagement-loop:rulesSheet": "rules/sample.csv"}


def test_a_sheet_outside_the_project_gets_a_content_hashed_path_under_rules(project, tmp_path):
    outside = tmp_path / "exports" / "Rules Nov 2026.csv"
    outside.parent.mkdir()
    shutil.copyfile(SAMPLE_SHEET, outside)
    same_content = tmp_path / "other.csv"
    shutil.copyfile(SAMPLE_SHEET, same_content)

    first = to_config_values(StackSettings(rules_sheet=outside), project_dir=project)["engagement-loop:rulesSheet"]
    digest = hashlib.sha256(SAMPLE_SHEET.read_bytes()).hexdigest()[:12]
    assert first.value == f"rules/Rules-Nov-2026-{digest}.csv"
    relative = Path("..") / "exports" / "Rules Nov 2026.csv"  # relative, but resolving outside the project
    assert to_config_values(StackSettings(rules_sheet=relative), project_dir=project)[
        "engagement-loop:rulesSheet"].value == first.value
    assert to_config_values(StackSettings(rules_sheet=same_content), project_dir=project)[
        "engagement-loop:rulesSheet"].value == f"rules/other-{digest}.csv"
    outside.write_text(SAMPLE_SHEET.read_text() + "5,aggregator,purchase,na,na,at_least,2,na,999,no,,,\n")
    changed = to_config_values(StackSettings(rules_sheet=outside), project_dir=project)["engagement-loop:rulesSheet"]
    assert changed.value.startswith("rules/Rules-Nov-2026-") and changed.value != first.value
    # Translating writes nothing.
    assert sorted(p.name for p in (project / "rules").iterdir()) == ["sample.csv"]


def test_a_missing_outside_sheet_is_named(project, tmp_path):
    with pytest.raises(ConfigError) as error:
        to_config_values(StackSettings(rules_sheet=tmp_path / "nope.csv"), project_dir=project)
    [problem] = error.value.problems
    assert problem.startswith(f"engagement-loop:rulesSheet = '{tmp_path / 'nope.csv'}': cannot read ")


def test_unknown_extra_keys_are_rejected_with_the_nearest_key_or_the_known_keys_listed():
    with pytest.raises(ConfigError) as error:
        StackSettings(extra={"gateMetrc": "x", "engagement-loop:nope": "y"})
    known = ", ".join(sorted(KEYS))
    assert error.value.problems == [
        "engagement-loop:gateMetrc is not a setting of this program; did you mean engagement-loop:gateMetric? "
        "Fix its spelling, or remove it",
        f"engagement-loop:nope is not a setting of this program (known: {known}); remove it or fix its spelling",
    ]


def test_extra_may_not_set_a_key_that_has_its_own_field():
    with pytest.raises(ConfigError) as error:
        StackSettings(extra={"scoring": "[]", "aws:region": "eu-west-1", "gateMetric": 1.5})
    assert error.value.problems == [
        "StackSettings.extra['scoring']: scoring has its own field; use StackSettings.scoring",
        "StackSettings.extra['aws:region']: aws:region has its own field; use StackSettings.region",
        "StackSettings.extra['gateMetric'] is a float: expected text, a whole number or true/false",
    ]


def test_settings_are_immutable():
    scoring = {"_email.open": 50}
    settings = StackSettings(scoring=scoring)
    scoring["_email.click"] = 100
    assert dict(settings.scoring) == {"_email.open": 50}
    with pytest.raises(TypeError):
        settings.scoring["_email.click"] = 100
    with pytest.raises(AttributeError):
        settings.region = "eu-west-1"


# --- validation -----------------------------------------------------------------------------------------


def expected_problems(config: dict[str, str], project_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw_of(config), region=config.get("aws:region"), project_dir=project_dir)
    return error.value.problems


def test_valid_settings_parse_over_the_current_config(project):
    settings = StackSettings(scoring={"_email.open": 5, "_email.click": 10}, history_days=30,
                             rules_sheet="rules/sample.csv", extra={"realTimeEvents": False})
    config = validate(settings, stack_file_config(), project_dir=project)
    assert dict(config.retraining.scoring.values) == {"_email.open": 5.0, "_email.click": 10.0}
    assert config.retraining.history_days == 30
    assert config.retraining.training_mode is TrainingMode.UPDATE  # kept from the stack
    assert config.retraining.real_time_tracking_id is None
    assert len(config.rules.rules) == 4 and config.region == "eu-west-1"


def test_current_config_may_be_plain_strings(project):
    current = plain(stack_file_config())
    assert validate(StackSettings(), current, project_dir=project).retraining.campaign.name == "engagement-campaign"


@pytest.mark.parametrize("scoring", [
    {"_email.open": "lots", "_email.click": float("nan")},
    {"_custom.recommender": 1, "_email.open": True},
    {f"_event.{n}": n for n in range(11)},
    {},
])
def test_bad_weights_fail_with_the_programs_messages(project, scoring):
    current = plain(stack_file_config())
    settings = StackSettings(scoring=scoring)
    with pytest.raises(ConfigError) as error:
        validate(settings, stack_file_config(), project_dir=project)
    expected = expected_problems({**current, **plain(to_config_values(settings, project_dir=project))}, project)
    assert error.value.problems == expected
    assert all(p.startswith("engagement-loop:scoring = ") for p in expected)


def test_too_many_event_types_says_personalize_accepts_ten(project):
    with pytest.raises(ConfigError) as error:
        validate(StackSettings(scoring={f"_event.{n}": n for n in range(11)}), stack_file_config(),
                 project_dir=project)
    [problem] = error.value.problems
    assert "11 event types are scored; Amazon Personalize accepts at most 10" in problem


def test_a_bad_sheet_inside_the_project_fails_with_the_programs_messages(project):
    shutil.copyfile(BAD_SHEET, project / "rules" / "bad.csv")
    with pytest.raises(ConfigError) as error:
        validate(StackSettings(rules_sheet="rules/bad.csv"), stack_file_config(), project_dir=project)
    expected = expected_problems({**plain(stack_file_config()), "engagement-loop:rulesSheet": "rules/bad.csv"},
                                 project)
    assert error.value.problems == expected and len(expected) >= 5
    assert all(p.startswith("engagement-loop:rulesSheet: rules/bad.csv: row ") for p in expected)


def test_a_bad_sheet_outside_is_reported_under_its_project_path_and_not_copied(project, tmp_path):
    outside = tmp_path / "bad.csv"
    shutil.copyfile(BAD_SHEET, outside)
    settings = StackSettings(rules_sheet=outside)
    config_path = to_config_values(settings, project_dir=project)["engagement-loop:rulesSheet"].value
    with pytest.raises(ConfigError) as error:
        validate(settings, stack_file_config(), project_dir=project)
    # The program would read the copy; the same sheet there gives these messages.
    shutil.copyfile(BAD_SHEET, project / config_path)
    expected = expected_problems({**plain(stack_file_config()), "engagement-loop:rulesSheet": config_path}, project)
    assert error.value.problems == expected
    assert all(p.startswith(f"engagement-loop:rulesSheet: {config_path}: row ") for p in expected)


def test_problems_already_in_the_stack_and_in_the_settings_are_reported_together(project):
    current = {**stack_file_config(), "engagement-loop:historyDays": auto.ConfigValue("0")}
    with pytest.raises(ConfigError) as error:
        validate(StackSettings(region="mars-1", training_mode="update"), current, project_dir=project)
    assert error.value.problems == expected_problems(
        {**plain(current), "aws:region": "mars-1", "engagement-loop:trainingMode": "update"}, project)
    assert len(error.value.problems) == 3


# --- apply ----------------------------------------------------------------------------------------------


def test_apply_writes_only_changed_keys_with_scoring_as_a_list(project):
    stack = FakeStack(stack_file_config())
    settings = StackSettings(scoring={"_email.open": 60, "_email.click": 100}, training_mode="UPDATE",
                             history_days=14)
    changes = apply(stack, settings, project_dir=project)
    assert changes == {
        "engagement-loop:scoring": ConfigChange(
            json.dumps(["_campaign.opened_notification=100", "_email.open=50", "_email.click=100",
                        "_email.unsubscribe=-200"]),
            '["_email.open=60", "_email.click=100"]'),
        "engagement-loop:historyDays": ConfigChange("-1", "14"),
    }
    assert stack.writes() == [{
        "engagement-loop:scoring": {"value": '["_email.open=60", "_email.click=100"]',
                                    "objectValue": ["_email.open=60", "_email.click=100"], "secret": False},
        "engagement-loop:historyDays": {"value": "14", "secret": False},
    }]
    # Applying the same settings again changes nothing and writes nothing.
    assert apply(stack, settings, project_dir=project) == {}
    assert len(stack.writes()) == 1


def test_apply_compares_scoring_by_meaning_not_spacing(project):
    current = {**stack_file_config(), "engagement-loop:scoring": auto.ConfigValue('["_email.open=50","a=1"]')}
    stack = FakeStack(current)
    assert apply(stack, StackSettings(scoring={"_email.open": 50.0, "a": 1}), project_dir=project) == {}
    assert stack.writes() == []


def test_apply_rejects_bad_settings_before_writing(project):
    stack = FakeStack(stack_file_config())
    with pytest.raises(ConfigError) as error:
        apply(stack, StackSettings(scoring={"_email.open": "x"}, history_days=3), project_dir=project)
    assert error.value.problems[0].startswith("engagement-loop:scoring = ")
    assert stack.calls == [("get_all_config",)]


def test_apply_copies_an_outside_sheet_after_validation(project, tmp_path):
    outside = tmp_path / "nov.csv"
    shutil.copyfile(SAMPLE_SHEET, outside)
    stack = FakeStack(stack_file_config())
    changes = apply(stack, StackSettings(rules_sheet=outside), project_dir=project)
    [(key, change)] = changes.items()
    assert key == "engagement-loop:rulesSheet" and change.old is None
    assert change.new.startswith("rules/nov-") and (project / change.new).read_bytes() == SAMPLE_SHEET.read_bytes()
    assert stack.writes() == [{"engagement-loop:rulesSheet": {"value": change.new, "secret": False}}]

    bad = tmp_path / "bad.csv"
    shutil.copyfile(BAD_SHEET, bad)
    with pytest.raises(ConfigError):
        apply(stack, StackSettings(rules_sheet=bad), project_dir=project)
    assert not any(p.name.startswith("bad-") for p in (project / "rules").iterdir())
    assert len(stack.writes()) == 1


def test_apply_keeps_a_secret_key_secret_and_out_of_the_diff(project):
    current = {**stack_file_config(),
               "engagement-loop:personalizeTrackingId": auto.ConfigValue("0f1e2d3c-old", secret=True)}
    stack = FakeStack(current)
    changes = apply(stack, StackSettings(extra={"personalizeTrackingId": "0f1e2d3c-new"}), project_dir=project)
    assert changes == {"engagement-loop:personalizeTrackingId": ConfigChange("[secret]", "[secret]")}
    assert stack.writes() == [{"engagement-loop:personalizeTrackingId": {"value": "0f1e2d3c-new", "secret": True}}]


# --- the Automation API calls ---------------------------------------------------------------------------


@pytest.fixture
def automation_calls(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(automation, "_cli_found", lambda opts: True)  # these fakes stand in for the CLI
    monkeypatch.setattr(auto, "select_stack", lambda *a, **k: calls.append(("select_stack", a, k)) or "selected")
    monkeypatch.setattr(auto, "create_or_select_stack",
                        lambda *a, **k: calls.append(("create_or_select_stack", a, k)) or "created")
    return calls


def test_select_stack_uses_the_local_program_in_the_project_dir(automation_calls, project):
    assert automation.select_stack("dev", project_dir=project / "rules" / "..") == "selected"
    options = auto.LocalWorkspaceOptions(env_vars={"AWS_PROFILE": "ops"})
    assert automation.select_stack("prod", project_dir=project, create=True, opts=options) == "created"
    assert automation_calls == [
        ("select_stack", ("dev",), {"work_dir": str(project.resolve()), "opts": None}),
        ("create_or_select_stack", ("prod",), {"work_dir": str(project.resolve()), "opts": options}),
    ]


def test_select_stack_defaults_to_this_project(automation_calls):
    automation.select_stack("dev")
    assert automation_calls == [("select_stack", ("dev",), {"work_dir": str(ROOT), "opts": None})]
    assert (ROOT / "Pulumi.yaml").is_file() and (ROOT / "__main__.py").is_file()


def test_preview_applies_then_previews(monkeypatch, project):
    stack = FakeStack(stack_file_config())
    selected = []
    monkeypatch.setattr(automation, "select_stack", lambda name, **kw: selected.append((name, kw)) or stack)
    lines: list[str] = []
    outcome = automation.preview("dev", StackSettings(history_days=7), project_dir=project, on_output=lines.append)
    assert selected == [("dev", {"project_dir": project, "create": False, "opts": None})]
    assert [call[0] for call in stack.calls] == ["get_all_config", "set_all_config_json", "preview"]
    assert stack.calls[-1][1] == lines.append
    assert dict(outcome.config_changes) == {"engagement-loop:historyDays": ConfigChange("-1", "7")}
    assert dict(outcome.change_summary) == {"same": 40, "update": 2}


def test_up_returns_plain_outputs_with_secrets_masked(monkeypatch, project):
    stack = FakeStack(stack_file_config())
    monkeypatch.setattr(automation, "select_stack", lambda name, **kw: stack)
    outcome = automation.up("dev", StackSettings(), project_dir=project, create=True)
    assert [call[0] for call in stack.calls] == ["get_all_config", "up"]
    assert stack.calls[-1][1] is print
    assert outcome.config_changes == {}
    assert dict(outcome.outputs) == {"rulesVersion": "r-123", "dataKeyArn": "[secret]"}
    assert dict(outcome.change_summary) == {"same": 41, "update": 1} and outcome.result == "succeeded"


def test_nothing_runs_when_settings_are_invalid(monkeypatch, project):
    stack = FakeStack(stack_file_config())
    monkeypatch.setattr(automation, "select_stack", lambda name, **kw: stack)
    with pytest.raises(ConfigError):
        automation.up("dev", StackSettings(retrain_schedule="every day"), project_dir=project)
    assert stack.calls == []  # checked against the stack file on disk: the stack is never selected


def test_the_module_says_what_was_not_run():
    doc = automation.__doc__
    assert "Pulumi CLI" in doc and "AWS credentials" in doc and "never run" in doc


# --- before the CLI (issue 11 item 2) -------------------------------------------------------------------


@pytest.fixture
def no_pulumi_on_path(monkeypatch, tmp_path):
    """A PATH without any `pulumi`, as on a machine where the CLI was never installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("pulumi") is None


@pytest.mark.parametrize("run", [automation.preview, automation.up])
def test_bad_settings_raise_config_error_before_the_cli_is_needed(no_pulumi_on_path, project, run):
    with pytest.raises(ConfigError) as error:
        run("dev", StackSettings(scoring={"_email.open": "fifty"}), project_dir=project)
    assert any("engagement-loop:scoring" in problem and "fifty" in problem for problem in error.value.problems)


@pytest.mark.parametrize("run", [automation.preview, automation.up])
def test_good_settings_without_the_cli_raise_one_clear_error(no_pulumi_on_path, project, run):
    with pytest.raises(automation.PulumiCliMissing) as error:
        run("dev", StackSettings(scoring={"_email.open": 50}), project_dir=project)
    message = str(error.value)
    assert "Pulumi CLI is not installed" in message and "https://www.pulumi.com/docs/install/" in message
    assert "stack check" in message


def test_select_stack_without_the_cli_raises_the_clear_error(no_pulumi_on_path, project):
    with pytest.raises(automation.PulumiCliMissing):
        automation.select_stack("dev", project_dir=project)


def test_a_cli_that_cannot_be_started_is_the_same_clear_error(monkeypatch, project):
    monkeypatch.setattr(automation, "_cli_found", lambda opts: True)

    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "pulumi")

    monkeypatch.setattr(auto, "select_stack", missing)
    with pytest.raises(automation.PulumiCliMissing, match="cannot run 'pulumi'"):
        automation.select_stack("dev", project_dir=project)


def test_problems_of_the_stack_file_on_disk_are_reported_before_the_cli(no_pulumi_on_path, project):
    stack_file = project / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("engagement-loop:retrainSchedule:",
                                                         "engagement-loop:retrainShedule:"))
    with pytest.raises(ConfigError) as error:
        automation.preview("dev", StackSettings(history_days=7), project_dir=project)
    assert error.value.problems == [
        "engagement-loop:retrainShedule is not a setting of this program; did you mean "
        "engagement-loop:retrainSchedule? Fix its spelling, or remove it"]


def test_a_missing_stack_file_is_an_empty_config_as_for_the_cli(no_pulumi_on_path, project):
    (project / "Pulumi.dev.yaml").unlink()
    with pytest.raises(ConfigError) as error:
        automation.up("dev", StackSettings(), project_dir=project, create=True)
    assert "aws:region is required" in error.value.problems[0]


def test_validate_reads_yaml_values_of_every_type(project):
    """A stack file's `config:` as YAML reads it (lists, numbers, booleans, secure values) used to crash with
    AttributeError; it is read as the engine hands it over."""
    current = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    current["engagement-loop:appStreamShards"] = 3
    current["engagement-loop:rulesReservedConcurrency"] = True
    current["engagement-loop:gateMetric"] = {"secure": "v1:AAAAciphertext"}
    config = validate(StackSettings(), current, project_dir=project)
    assert config.sources.app_stream_shards == 3 and config.rules.reserve_concurrency is True
    assert config.retraining.history_days == -1 and len(config.retraining.scoring.values) == 4
    assert config.holds_secrets  # the secure key is present and secret


def test_validate_stack_file_needs_no_cli(no_pulumi_on_path, project):
    config = automation.validate_stack_file("dev", StackSettings(training_mode="AUTO"), project_dir=project)
    assert config.retraining.training_mode is TrainingMode.AUTO
    assert automation.stack_file_path("acme/engagement-loop/dev", project_dir=project) == project / "Pulumi.dev.yaml"


# --- issue 11 review: ESC environments ------------------------------------------------------------------

ESC_STACK = "environment:\n  - engagement-prod\nconfig:\n  aws:region: eu-west-1\n"


@pytest.mark.parametrize("run", [automation.preview, automation.up])
def test_keys_an_esc_environment_may_set_are_not_reported_missing_before_the_cli(no_pulumi_on_path, project, run):
    (project / "Pulumi.dev.yaml").write_text(ESC_STACK)
    with pytest.raises(automation.PulumiCliMissing):
        run("dev", StackSettings(), project_dir=project)


@pytest.mark.parametrize("run", [automation.preview, automation.up])
def test_a_bad_value_present_beside_an_esc_environment_is_still_a_config_error(no_pulumi_on_path, project, run):
    (project / "Pulumi.dev.yaml").write_text(ESC_STACK + "  engagement-loop:historyDays: 0\n")
    with pytest.raises(ConfigError) as error:
        run("dev", StackSettings(), project_dir=project)
    assert any("engagement-loop:historyDays" in problem for problem in error.value.problems)
    assert not any("is required" in problem for problem in error.value.problems)


# --- issue 11 review: values yaml.safe_load produces ----------------------------------------------------


def test_a_date_from_yaml_safe_load_is_its_iso_text_not_a_type_error(project):
    current = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    current["engagement-loop:retrainSchedule"] = datetime(2026, 11, 1).date()
    with pytest.raises(ConfigError) as error:
        validate(StackSettings(), current, project_dir=project)
    assert any("engagement-loop:retrainSchedule = '2026-11-01'" in problem for problem in error.value.problems)


def test_bytes_from_yaml_safe_load_are_a_config_error_naming_the_key(project):
    current = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    current["engagement-loop:gateMetric"] = b"\x00\x01"
    current["engagement-loop:appMayReport"] = [b"\x02"]
    with pytest.raises(ConfigError) as error:
        validate(StackSettings(), current, project_dir=project)
    text = "\n".join(error.value.problems)
    assert "engagement-loop:gateMetric: expected a string" in text
    assert "engagement-loop:appMayReport: expected a string" in text
