"""`python -m cli stack check Pulumi.<stack>.yaml`, as the user runs it: a subprocess, its output and exit code.

Each check runs in its own process because the command runs the Pulumi program under mocks, which are set once
per process (and must not replace the mocks tests/infra set for the whole session).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV = (ROOT / "Pulumi.dev.yaml").read_text()
CIPHERTEXT = "v1:QUFBQUJCQkJDQ0NDc2VjcmV0Y2lwaGVy"


def stack_check(path: Path, *, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run the command; `prelude` is Python run first in the same process (to construct a component problem)."""
    code = f"{prelude}\nimport sys\nfrom cli.__main__ import main\nsys.exit(main(['stack', 'check', {str(path)!r}]))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def dev_with(tmp_path: Path, *, replace: tuple[str, str] | None = None, add: str = "",
             name: str = "Pulumi.check.yaml") -> Path:
    text = DEV if replace is None else DEV.replace(*replace)
    assert replace is None or text != DEV
    path = tmp_path / name
    path.write_text(text + add)
    return path


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_the_sample_stack_is_valid_and_summarised():
    result = stack_check(ROOT / "Pulumi.dev.yaml")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stack 'dev' in eu-west-1 is valid; `pulumi up` would create " in out
    assert "Resources per component:" in out and "Resources per type:" in out
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert int(lines["aws:kinesis/stream:Stream"]) == 2 and int(lines["aws:sfn/stateMachine:StateMachine"]) == 1
    for component in ("alarms", "events", "rules", "retraining", "tracking"):
        assert int(lines[component]) > 0
    total = int(out.split("would create ")[1].split()[0])
    assert total == sum(int(lines[c]) for c in ("alarms", "events", "rules", "retraining", "tracking"))
    # Optional parts, as Pulumi.dev.yaml sets them.
    assert "Pinpoint event stream (legacy source)            on" in out
    assert "Amazon Connect Customer Profiles actions         off" in out
    assert "real-time events to a Personalize event tracker  on" in out
    assert "AUTO training (the solution trains itself)       off" in out
    # Outputs: values known offline shown, the rest said to be known after deploying.
    assert "  glueDatabase: engagement_loop_dev" in out and "  athenaWorkgroup: engagement-loop-dev" in out
    assert "  streamArn: (known after pulumi up)" in out
    assert result.stderr == ""


def test_a_misspelt_key_gets_the_nearest_setting(tmp_path):
    path = dev_with(tmp_path, replace=("engagement-loop:retrainSchedule:", "engagement-loop:retrainShedule:"))
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert ("  - engagement-loop:retrainShedule is not a setting of this program; did you mean "
            "engagement-loop:retrainSchedule? Fix its spelling, or remove it") in result.stderr.splitlines()


def test_every_bad_value_is_listed_at_once(tmp_path):
    path = dev_with(tmp_path, replace=("engagement-loop:historyDays: -1", "engagement-loop:historyDays: 0"),
                    add="  engagement-loop:appStreamShards: 600\n  engagement-loop:logRetentionDays: forever\n")
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: 3 problem(s); nothing was deployed:"
    assert "  - engagement-loop:historyDays = '0': use -1 for all history or a number of days ≥ 1" in lines
    assert "  - engagement-loop:appStreamShards = '600': expected 1–500" in lines
    assert "  - engagement-loop:logRetentionDays = 'forever': expected a whole number" in lines


def test_a_secure_value_is_present_secret_and_not_checked(tmp_path):
    path = dev_with(tmp_path, replace=("  engagement-loop:personalizeTrackingId: 0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9\n",
                                       f"  engagement-loop:personalizeTrackingId:\n    secure: {CIPHERTEXT}\n"))
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert ("note: engagement-loop:personalizeTrackingId is a secure value: it is present and secret, but its value "
            "is encrypted, so it is not checked offline") in result.stdout
    assert "real-time events to a Personalize event tracker  on" in result.stdout  # present: the part is on
    assert CIPHERTEXT not in result.stdout + result.stderr


def test_a_secure_value_is_never_shown_in_problems(tmp_path):
    path = dev_with(tmp_path, add=f"  engagement-loop:scoringg:\n    secure: {CIPHERTEXT}\n"
                                  "  engagement-loop:historyDays: -1\n")
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert "did you mean engagement-loop:scoring?" in result.stderr
    assert "engagement-loop:historyDays is given twice" in result.stderr
    assert CIPHERTEXT not in result.stdout + result.stderr


def test_list_int_and_boolean_values_are_read_as_pulumi_reads_them(tmp_path):
    path = dev_with(tmp_path, add="  engagement-loop:appStreamShards: 4\n  engagement-loop:appMayReport:\n"
                                  "    - _campaign.opened_notification\n  engagement-loop:solutionEventsConfig: true\n",
                    replace=("engagement-loop:trainingMode: UPDATE", "engagement-loop:trainingMode: AUTO"))
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "AUTO training (the solution trains itself)       on" in result.stdout
    assert "solution events configuration                    on" in result.stdout
    assert "Amazon Connect Customer Profiles actions         off" in result.stdout


def test_connect_campaigns_as_a_native_yaml_list_of_objects(tmp_path):
    # eu-west-2: the sample's eu-west-1 has no Customer Profiles. connectCampaigns as a user writes it in the stack
    # file, a YAML list of mappings (Pulumi.yaml leaves it untyped: Pulumi types array items only as scalars).
    path = tmp_path / "Pulumi.connect.yaml"
    arn = "arn:aws:connect-campaigns:eu-west-2:123456789012:campaign/0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
    path.write_text(DEV.replace("eu-west-1", "eu-west-2") + (
        "  engagement-loop:connectDomainName: profiles-domain\n"
        "  engagement-loop:connectCampaigns:\n"
        f"    - actionName: session_start\n      campaignArn: {arn}\n      maxPerProfile: 2\n      per: 12 hours\n"))
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "Amazon Connect Customer Profiles actions         on" in result.stdout
    assert "1 campaign trigger(s)" in result.stdout and arn in result.stdout
    # The same file in eu-west-1 is refused, with the regions that have Customer Profiles.
    path.write_text(path.read_text().replace("eu-west-2", "eu-west-1"))
    result = stack_check(path)
    assert result.returncode == 2
    assert "Customer Profiles has no endpoint in eu-west-1" in result.stderr


def test_a_list_where_text_is_expected_is_a_problem_not_a_crash(tmp_path):
    path = dev_with(tmp_path, replace=("engagement-loop:gateMetric: normalized_discounted_cumulative_gain_at_10",
                                       "engagement-loop:gateMetric: [ndcg, 10]"))
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert "  - engagement-loop:gateMetric = '[\"ndcg\", 10]': expected a Personalize metric name" in result.stderr


def test_a_problem_only_a_component_finds_is_listed(tmp_path):
    # Every value the parser accepts is also accepted by the components today, so construct one: a component's
    # Args check that fails as a real one would.
    prelude = (
        "import components.python_function as pf\n"
        "def reject(self):\n"
        "    raise ValueError(f'PythonFunctionArgs.memory_mb: expected 128–10240, got 99999')\n"
        "pf.PythonFunctionArgs.__post_init__ = reject\n")
    result = stack_check(ROOT / "Pulumi.dev.yaml", prelude=prelude)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert ("  - the program stopped: ValueError: PythonFunctionArgs.memory_mb: expected 128–10240, got 99999"
            in result.stderr.splitlines())


def test_a_missing_file_is_named(tmp_path):
    result = stack_check(tmp_path / "Pulumi.nope.yaml")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"{tmp_path / 'Pulumi.nope.yaml'}: no such file; give the path of a stack "
                                     "file (Pulumi.<stack>.yaml)")


@pytest.mark.parametrize("text, expected", [
    (f"config:\n  aws:region: eu-west-1\n  engagement-loop:scoring: [{CIPHERTEXT}\n", "not valid YAML at line 4"),
    ("- just\n- a list\n", "expected a mapping with a `config:` section at the top, got a list"),
])
def test_a_file_that_is_not_a_stack_file_is_one_line_without_its_content(tmp_path, text, expected):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text(text)
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert CIPHERTEXT not in result.stderr


def test_an_esc_environment_is_a_note_and_its_keys_are_not_missing(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text("environment:\n  - engagement-prod\nconfig:\n  aws:region: eu-west-1\n")
    result = stack_check(path)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "ESC environments" in out and "not checked offline" in out
    assert "is required" not in out
