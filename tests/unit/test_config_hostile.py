"""Issue 10 findings 3, 4 and 9 at the stack config: no secret value in any message, no file outside the
project read, and lake names derived from the stack name that every SQL builder accepts."""

from __future__ import annotations

import json
import os
from datetime import date

import pytest
from pulumi import automation as auto

import automation
from cli.demo import DemoInputError, _load_scoring
from components.config import ConfigError, SecretKeys, load_scoring_file, parse_stack_config
from functions.lake_names import InvalidName, check_glue_name
from functions.retraining.scoring import ScoringError, ScoringModel
from functions.retraining.settings import RetrainingSettings
from functions.retraining.sql import InteractionsQuery, build_interactions_sql
from functions.rules.backfill import BackfillSettings, build_backfill_sql
from functions.rules.model import CountCondition, Operator, Rule, RuleType
from tests.unit.test_config import valid

SECRET = "s3cr3t-Tok3n-do-not-print"


def problems(raw, **options):
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, region="eu-west-1", **options)
    return error.value.problems


# --- finding 3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("gateMetric", SECRET),
    ("personalizeTrackingId", SECRET + "!"),
    ("scoring", json.dumps([f"{SECRET}=x", f"_email.open={SECRET}"])),
    ("personalizeCampaignArn", f"arn:aws:personalize:us-east-1:123456789012:campaign/{SECRET}"),
    ("counterTtlDays", SECRET),
    ("rulesSheet", f"{SECRET}.csv"),
])
def test_a_secret_keys_value_is_never_printed(key, value, tmp_path):
    for secret_keys in ([key], [f"engagement-loop:{key}"]):
        found = problems(valid(**{key: value}), secret_keys=secret_keys, project_dir=tmp_path)
        text = "\n".join(found)
        assert SECRET not in text and "the secret value of engagement-loop:" + key in text, text
    # The same problem of a key that is not secret still shows the value, so the user can find it.
    assert SECRET in "\n".join(problems(valid(**{key: value}), project_dir=tmp_path))


def test_secret_keys_render_values_in_one_place():
    secrets = SecretKeys.of(["gateMetric", "aws:region"])
    assert secrets.subject("gateMetric", SECRET) == "the secret value of engagement-loop:gateMetric"
    assert secrets.subject("historyDays", "3") == "engagement-loop:historyDays = '3'"
    assert secrets.redact("gateMetric", SECRET, f"got {SECRET}") == "got [secret]"


def test_automation_validation_keeps_secrets_out_of_its_messages(tmp_path):
    current = {"aws:region": auto.ConfigValue("eu-west-1"),
               **{f"engagement-loop:{k}": auto.ConfigValue(v) for k, v in valid().items()},
               "engagement-loop:gateMetric": auto.ConfigValue(SECRET, secret=True)}
    with pytest.raises(ConfigError) as error:
        automation.validate(automation.StackSettings(history_days=3), current, project_dir=tmp_path)
    assert SECRET not in str(error.value)
    assert "the secret value of engagement-loop:gateMetric" in str(error.value)


def test_stack_settings_do_not_echo_a_bad_extra_value():
    with pytest.raises(ConfigError) as error:
        automation.StackSettings(extra={"gateMetric": [SECRET]})
    assert SECRET not in str(error.value) and "is a list" in str(error.value)


SECURE_STACK = f"""config:
  aws:region: eu-west-1
  engagement-loop:scoring:
    secure: AAABA{SECRET}CIPHERTEXT==
"""


def test_a_secure_scoring_value_in_a_stack_file_is_not_echoed_by_the_local_tools(tmp_path):
    stack = tmp_path / "Pulumi.prod.yaml"
    stack.write_text(SECURE_STACK)
    with pytest.raises(ScoringError) as error:
        ScoringModel.load(stack)  # what the tools called before: the ciphertext is in the message
    assert SECRET in str(error.value)
    with pytest.raises(ScoringError) as error:
        load_scoring_file(stack)
    assert SECRET not in str(error.value)
    assert "the secret value of engagement-loop:scoring" in str(error.value)
    with pytest.raises(DemoInputError) as demo_error:
        _load_scoring(stack)  # `cli demo --scoring`
    assert SECRET not in "\n".join(demo_error.value.lines)


def test_a_stack_file_that_is_not_yaml_is_reported_without_its_lines(tmp_path):
    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text(f"config:\n  a: [{SECRET}\n")
    with pytest.raises(ScoringError) as error:
        load_scoring_file(stack)
    assert SECRET not in str(error.value)


# --- finding 4 -------------------------------------------------------------------------------------

ENV_DUMP = f"AWS_SECRET_ACCESS_KEY={SECRET}\nPATH=/usr/bin\n"


def test_a_rules_sheet_outside_the_project_is_not_read(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside.csv"
    project.mkdir()
    outside.write_text(ENV_DUMP)
    for given in ("../outside.csv", str(outside)):
        [problem] = problems(valid(rulesSheet=given), project_dir=project)
        assert "outside the project directory" in problem and SECRET not in problem


def test_a_symlink_out_of_the_project_is_followed_and_refused(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "env.txt"
    (project / "rules").mkdir(parents=True)
    outside.write_text(ENV_DUMP)
    os.symlink(outside, project / "rules" / "sheet.csv")
    [problem] = problems(valid(rulesSheet="rules/sheet.csv"), project_dir=project)
    assert "outside the project directory" in problem and SECRET not in problem


def test_a_dump_inside_the_project_is_reported_without_its_contents(tmp_path):
    (tmp_path / "dump.csv").write_text(ENV_DUMP)
    [problem] = problems(valid(rulesSheet="dump.csv"), project_dir=tmp_path)
    assert "does not look like a rules sheet" in problem and SECRET not in problem


# --- finding 9 -------------------------------------------------------------------------------------


def _rule() -> Rule:
    return Rule(rule_id="r1", rule_type=RuleType.WINDOW, event_name="purchase", window_days=7,
                count_condition=CountCondition(Operator.AT_LEAST, 1))


@pytest.mark.parametrize(("stack", "database", "workgroup"), [
    ("prod.eu", "engagement_loop_prod_eu", "engagement-loop-prod.eu"),
    ("my-stack", "engagement_loop_my_stack", "engagement-loop-my-stack"),
    ("Dev", "engagement_loop_dev", "engagement-loop-Dev"),
])
def test_lake_names_derived_from_the_stack_are_accepted_by_every_sql_builder(stack, database, workgroup):
    names = parse_stack_config(valid(), region="eu-west-1", stack_name=stack).lake.names
    assert (names.database, names.table, names.workgroup) == (database, "events", workgroup)
    _accepted_everywhere(names)


def test_a_very_long_stack_name_is_cut_deterministically_within_glue_and_athena_limits():
    stack = "team." + "x" * 400
    names = parse_stack_config(valid(), region="eu-west-1", stack_name=stack).lake.names
    assert len(names.database.encode()) == 255 and len(names.workgroup) == 128
    assert names == parse_stack_config(valid(), region="eu-west-1", stack_name=stack).lake.names
    other = parse_stack_config(valid(), region="eu-west-1", stack_name=stack + "y").lake.names
    assert other.database != names.database and other.workgroup != names.workgroup
    _accepted_everywhere(names)


def _accepted_everywhere(names) -> None:
    query = InteractionsQuery(scoring=ScoringModel({"_email.open": 1.0}), as_of=date(2026, 11, 2),
                              database=names.database, table=names.table)
    assert names.database in build_interactions_sql(query)
    assert names.database in build_backfill_sql(_rule(), 1_790_000_000_000, database=names.database,
                                                table=names.table)
    environ = {"GLUE_DATABASE": names.database, "EVENTS_TABLE": names.table, "ATHENA_WORKGROUP": names.workgroup}
    RetrainingSettings.from_env({**_retraining_env(), **environ})
    BackfillSettings.from_env({**_backfill_env(), **environ})


def _retraining_env() -> dict[str, str]:
    return {"LAKE_BUCKET": "b", "LOCK_TABLE": "l", "TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:t",
            "PERSONALIZE_DATASET_ARN": "d", "PERSONALIZE_SOLUTION_ARN": "s", "PERSONALIZE_CAMPAIGN_ARN": "c",
            "PERSONALIZE_IMPORT_ROLE_ARN": "r", "SCORING": '{"_email.open": 1}'}


def _backfill_env() -> dict[str, str]:
    return {"COUNTERS_TABLE": "c", "OUTBOX_TABLE": "o", "RULES_BUCKET": "b", "RULES_KEY": "k"}


def test_explicitly_given_names_that_a_query_would_refuse_are_rejected_by_the_one_check():
    with pytest.raises(InvalidName, match="database: expected a Glue name"):
        check_glue_name("engagement_loop_prod.eu", "database")
    with pytest.raises(ValueError, match="GLUE_DATABASE: expected a Glue name"):
        RetrainingSettings.from_env({**_retraining_env(), "GLUE_DATABASE": "engagement_loop_prod.eu",
                                     "ATHENA_WORKGROUP": "w"})
    with pytest.raises(ValueError, match="GLUE_DATABASE: expected a Glue name"):
        BackfillSettings.from_env({**_backfill_env(), "GLUE_DATABASE": "engagement_loop_prod.eu",
                                   "ATHENA_WORKGROUP": "w"})
    with pytest.raises(ValueError, match="database: expected a Glue name"):
        build_backfill_sql(_rule(), 1_790_000_000_000, database="engagement_loop_prod.eu", table="events")


# --- issue 11 review -------------------------------------------------------------------------------------


def test_a_stack_file_giving_scoring_twice_is_refused_by_the_local_tools(tmp_path):
    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text(f'config:\n  engagement-loop:scoring: ["{SECRET}=1"]\n  engagement-loop:scoring: ["_email.open=1"]\n')
    with pytest.raises(ScoringError) as error:
        load_scoring_file(stack)
    message = str(error.value)
    assert str(stack) in message and "engagement-loop:scoring is given twice" in message
    assert SECRET not in message


def test_a_huge_value_is_cut_in_every_message():
    huge = ["e" * 1000 + f"{i}=1" for i in range(2000)]
    with pytest.raises(ConfigError) as error:
        parse_stack_config({"scoring": huge}, region="eu-west-1")
    subject = SecretKeys().subject("scoring", huge)
    assert len(subject) < 200 and subject.endswith(f"… ({len(json.dumps(huge)):,} characters)")
    problem = next(p for p in error.value.problems if p.startswith("engagement-loop:scoring"))
    assert problem.startswith(subject)
    assert len(str(error.value)) < 20_000
