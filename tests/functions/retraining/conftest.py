"""Fixtures for the retraining tests (the world itself is in world.py)."""

from __future__ import annotations

from typing import Iterator

import pytest
from moto import mock_aws

from tests.functions.retraining.step_functions import STEP_FUNCTIONS_CONFIG
from tests.functions.retraining.world import REGION, World


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config=STEP_FUNCTIONS_CONFIG):
        yield World(monkeypatch)
