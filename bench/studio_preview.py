"""Benchmark: the rules studio's audience preview on 100,000 synthetic events.

    python -m bench.studio_preview [--users 775] [--rules rules/demo.csv] [--seed 7] [--json OUT]

1. A synthetic stream (`cli/synthetic.py`; about 129 records per user over 30 days, so 775 users make about
   100,000 records) is generated in memory.
2. First parse: the records planned once (`cli/studio/preview.py` `sample_from_lines`: the normaliser, partition
   keys, arrivals), as the studio does when it opens the events.
3. Whole sheet: every rule of the sheet previewed cold (one memory-engine run for all of them), after the sheet
   is checked (`SheetModel.check`).
4. One-rule edit, per rule: a target of that rule changed in the model, the sheet checked again and the preview
   asked again — only the edited rule is computed (the others come from the cache). Timed end to end.

Target (exit 1 if missed): every one-rule edit answers within 2 s. Times are wall-clock on this machine, one
process (the studio runs the engine with one worker).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_EDIT_SECONDS = 2.0


def main(argv: list[str] | None = None) -> int:
    from cli.studio.preview import AudiencePreview, sample_from_lines
    from cli.studio.sheet_model import SheetModel
    from cli.studio.suggestions import suggest
    from cli.synthetic import StreamSpec, generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=775)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules" / "demo.csv")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    lines = generate(StreamSpec(users=args.users, seed=args.seed)).lines
    generated = time.perf_counter() - started

    started = time.perf_counter()
    sample = sample_from_lines(lines, source="synthetic")
    first_parse = time.perf_counter() - started

    started = time.perf_counter()
    suggestions = suggest(sample.events())
    suggest_seconds = time.perf_counter() - started

    model = SheetModel.from_csv(args.rules.read_text(encoding="utf-8"))
    preview = AudiencePreview(sample)
    started = time.perf_counter()
    rules = model.check().rules
    whole = preview.preview(rules)
    whole_seconds = time.perf_counter() - started

    edits = {}
    for index, rule in enumerate(rules):
        row = model.check().rule_rows()[rule.rule_id]
        column = "Target-C" if rule.count_condition else "Target-V"
        edited = model.set_cell(row, column, str(int(float(model.cell(row, column))) + 1))
        started = time.perf_counter()
        result = preview.preview(edited.check().rules)
        seconds = time.perf_counter() - started
        assert preview.last_computed and len(preview.last_computed) == 1, preview.last_computed
        edits[preview.last_computed[0]] = {"seconds": round(seconds, 3),
                                          "users": result[preview.last_computed[0]].users}

    report = {
        "records": sample.records, "users": args.users, "rules": len(rules), "sheet": str(args.rules),
        "generate_seconds": round(generated, 3), "first_parse_seconds": round(first_parse, 3),
        "suggestions_seconds": round(suggest_seconds, 3), "event_types": len(suggestions.event_types),
        "whole_sheet_seconds": round(whole_seconds, 3),
        "whole_sheet_users": {rule_id: p.users for rule_id, p in whole.items()},
        "one_rule_edit_seconds": edits,
        "target_edit_seconds": TARGET_EDIT_SECONDS,
    }
    print(f"{sample.records:,} records ({args.users:,} users), sheet {args.rules} ({len(rules)} rules)")
    print(f"  first parse (plan once)        {first_parse:6.2f} s")
    print(f"  suggestions                    {suggest_seconds:6.2f} s ({len(suggestions.event_types)} event types)")
    print(f"  whole sheet, cold              {whole_seconds:6.2f} s")
    for rule_id, edit in edits.items():
        print(f"  one-rule edit {rule_id:<24} {edit['seconds']:6.2f} s ({edit['users']:,} users)")
    slowest = max((edit["seconds"] for edit in edits.values()), default=0.0)
    met = slowest <= TARGET_EDIT_SECONDS
    print(f"  slowest edit {slowest:.2f} s: target {TARGET_EDIT_SECONDS:.0f} s {'met' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
