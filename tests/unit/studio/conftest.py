"""Shared for the studio tests: the repository's sheets, and one small synthetic sample parsed once."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "rules"
DEMO = ROOT / "rules" / "demo.csv"
SHEETS = [DEMO, ROOT / "rules" / "sample.csv", FIXTURES / "bad.csv", FIXTURES / "seed_guide.csv"]


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@pytest.fixture(scope="session")
def synthetic_lines() -> list[str]:
    from cli.synthetic import StreamSpec, generate

    return generate(StreamSpec(users=60)).lines


@pytest.fixture(scope="session")
def sample(synthetic_lines):
    from cli.studio.preview import sample_from_lines

    return sample_from_lines(synthetic_lines, source="synthetic")
