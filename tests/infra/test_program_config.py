"""A bad stack config stops the program with the list of problems and registers nothing."""

import pulumi
import pytest


def test_bad_config_fails_with_every_problem_and_no_resources(monitor, dev_graph, run_stack):
    before = len(monitor.registered)
    with pytest.raises(pulumi.RunError) as error:
        run_stack({"aws:region": "eu-west-1", "engagement-loop:historyDays": "0",
                     "engagement-loop:scoring": '["_email.open=lots"]'})
    message = str(error.value)
    assert "engagement-loop:historyDays = '0': use -1 for all history" in message
    assert "engagement-loop:scoring" in message and "'lots' for '_email.open' is not a finite number" in message
    assert "engagement-loop:personalizeCampaignArn is required" in message
    assert "Traceback" not in message
    assert len(monitor.registered) == before
