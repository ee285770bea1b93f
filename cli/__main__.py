"""`python -m cli …`: local tools over the same code the Lambdas run.

Each command group lives in its own module and registers itself here. Group modules import heavy
libraries (DuckDB, moto, pandas) inside their commands, so `python -m cli rules check` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# group name -> module that defines `register(subparsers)`; each parser sets `func(args) -> int`.
COMMAND_GROUPS = {
    "rules": "cli.rules",
    "interactions": "cli.interactions",
    "actions": "cli.actions",
    "demo": "cli.demo",
    "ses": "cli.ses",
    "stack": "cli.stack",
    "studio": "cli.studio.server",
}


def build_parser(groups: dict[str, str] = COMMAND_GROUPS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cli", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="group", required=True, metavar="{" + ",".join(groups) + "}")
    for name, module_name in groups.items():
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
