"""A secret stack config value never reaches the state as plain text: with any secret key, every function's
environment (which may carry it, e.g. SCORING) is a Pulumi secret; without one, environments stay readable."""

from __future__ import annotations

from tests.infra.conftest import Graph

SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # Pulumi's marker of a secret value on the wire


def functions_of(monitor, run_stack, config, **options):
    before = len(monitor.registered)
    run_stack(config, **options)
    return Graph(monitor.registered[before:], {}).of_type("aws:lambda/function:Function")


def test_with_a_secret_key_every_function_environment_is_secret(monitor, dev_stack_config, run_stack):
    functions = functions_of(monitor, run_stack, dev_stack_config, secret_keys=["engagement-loop:scoring"])
    assert functions
    for function in functions:
        environment = function.inputs["environment"]
        assert isinstance(environment, dict) and environment.get(SECRET_SIGNATURE), function.name
        assert "SCORING" not in repr({k: v for k, v in environment.items() if k != "value"})


def test_without_secret_keys_environments_are_plain(dev_graph):
    for function in dev_graph.of_type("aws:lambda/function:Function"):
        assert SECRET_SIGNATURE not in function.inputs["environment"], function.name
        assert "variables" in function.inputs["environment"]
