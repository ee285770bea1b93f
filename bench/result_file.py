"""The `--json OUT` files benchmarks write and `bench.cost` reads: the figures, the command that measured them
and when, so a cost line can say where its input came from."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

RESULTS = Path(__file__).parent / "results"
"""Where the committed result files live (`bench/results/<benchmark>.json`)."""


def command_line(module: str, argv: list[str] | None) -> str:
    arguments = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *map(shlex.quote, arguments)])


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_result(path: Path, *, benchmark: str, command: str, figures: Mapping[str, Any]) -> None:
    """Write one benchmark's figures with the command that produced them, the UTC date and the commit."""
    document = {
        "benchmark": benchmark,
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": _commit(),
        "figures": dict(figures),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
