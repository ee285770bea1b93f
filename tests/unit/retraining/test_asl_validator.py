"""The generated definitions through asl-validator (npm, pinned in tests/validators): the Amazon States Language
schema, path syntax and transitions as a maintained third-party validator reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from functions.retraining.workflow import WorkflowSpec, build_definition

VALIDATOR = Path(__file__).resolve().parents[2] / "validators/node_modules/asl-validator/dist/bin/asl-validator.js"
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:engagement-loop-retraining-steps"


def validate(tmp_path: Path, **definitions: dict) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    assert node and VALIDATOR.exists(), "asl-validator is not installed: run `make validators` (needs Node.js)"
    arguments = []
    for name, definition in definitions.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(definition))
        arguments += ["--json-path", str(path)]
    return subprocess.run([node, str(VALIDATOR), *arguments], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("auto_training", [False, True], ids=["train", "auto"])
def test_asl_validator_accepts_the_definition(tmp_path: Path, auto_training: bool):
    definition = build_definition(WorkflowSpec(function_arn=FUNCTION_ARN, auto_training=auto_training))
    result = validate(tmp_path, definition=definition)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


@pytest.mark.parametrize("break_it, problem", [
    (lambda states: states["Gate"].update(Next="Nowhere"), "MISSING_TRANSITION_TARGET"),
    (lambda states: states["ImportStatus"]["Choices"][0].update(Variable="$.import_job..[status"),
     "SCHEMA_VALIDATION_FAILED"),
    (lambda states: states["StartImport"]["Retry"][0].update(BackoffRate="2"), "SCHEMA_VALIDATION_FAILED"),
])
def test_asl_validator_rejects_a_broken_definition(tmp_path: Path, break_it, problem):
    """The check can fail: the same validator on a definition with one mistake."""
    definition = build_definition(WorkflowSpec(function_arn=FUNCTION_ARN))
    break_it(definition["States"])
    result = validate(tmp_path, broken=definition)
    assert result.returncode == 1 and problem in result.stdout + result.stderr
