"""Benchmark: the local replay's memory engine on a million raw records, against the moto engine it replaced.

    python -m bench.replay [--records 1000000] [--rules bench/data/rules-20.csv] [--workers N]
                           [--sample 3000] [--workdir DIR] [--seed 7] [--json OUT]

1. A synthetic stream (`cli/synthetic.py`: app sessions, views, carts, purchases, Pinpoint campaign and journey
   events, recommender exposures, late arrivals and producer duplicates) of `--records` raw records is written
   to the work folder as JSON Lines (kept there and reused by the next run with the same size and seed).
2. `python -m cli rules replay --rules SHEET FILE --json OUT` runs on it as a user runs it — its own process,
   the tools' one file reader, the default memory engine (one process per core), its progress bar on this
   terminal — timed from start to exit. Its memory is sampled every 0.5 s: the proportional set size (PSS:
   shared pages split between the processes sharing them) summed over the process and its workers, so the
   peak is what the machine gave the whole run.
3. "Before": the first `--sample` records are replayed on both engines — `--engine aws` (the real handlers on
   moto: what `rules replay` ran before) and the memory engine — in this process; their qualifications and
   counters must be identical (exit 2 if not), and their speeds give the before/after ratio.

Targets (exit 1 if one is missed): the million records in at most 60 s, peak memory at most 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = ROOT / "bench" / "data" / "rules-20.csv"
TARGET_SECONDS = 60.0
TARGET_PEAK_BYTES = 2 * 1024 ** 3
RECORDS_PER_USER = 129
"""What one synthetic user sends over the default 30 days (322,013 records for 2,500 users)."""
SAMPLE_INTERVAL_S = 0.5
"""Reading smaps_rollup walks the page tables of the process it reads, under its memory lock: sampled more
often, it slowed the replay it measured (a 20 Hz sampling cost 29 s of system time in a 100 s run)."""


def stream_file(records: int, seed: int, workdir: Path) -> Path:
    """The first `records` records (by arrival) of a synthetic stream big enough to hold them."""
    from cli.synthetic import StreamSpec, generate

    path = workdir / f"stream-{records}-seed{seed}.jsonl"
    if path.exists():
        return path
    users = max(1, -(-records // RECORDS_PER_USER))
    while True:
        stream = generate(StreamSpec(users=users, seed=seed))
        if len(stream.lines) >= records:
            break
        users = users * 11 // 10 + 1
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for line in stream.lines[:records]:
            handle.write(line + "\n")
    partial.replace(path)
    return path


class TreeMemory:
    """The peak PSS of a process and its descendants, sampled from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.samples = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            total = sum(_pss_bytes(pid) for pid in _tree(self.pid))
            self.peak, self.samples = max(self.peak, total), self.samples + 1


def _tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as handle:
                    pending.extend(int(child) for child in handle.read().split())
        except OSError:
            continue  # exited meanwhile
    return pids


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed_replay(events: Path, rules: Path, out: Path, workers: int | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "cli", "rules", "replay", "--rules", str(rules), str(events),
               "--json", str(out)]
    if workers is not None:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)  # progress: on our stderr
    with TreeMemory(process.pid) as memory:
        stdout, _ = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"rules replay failed (exit {process.returncode}):\n{stdout}")
    return {"seconds": seconds, "peak_bytes": memory.peak, "memory_samples": memory.samples,
            "document": json.loads(out.read_text(encoding="utf-8"))}


def compare_engines(events: Path, rules: Path, sample: int) -> dict[str, Any]:
    """Both engines on the file's first `sample` records: identical outcomes, and each one's speed."""
    from cli.replay import ReplayOptions, replay

    with events.open(encoding="utf-8") as handle:
        lines = [next(handle).rstrip("\n") for _ in range(sample)]
    sheet = rules.read_text(encoding="utf-8")
    timings, results = {}, {}
    for engine in ("aws", "memory"):
        started = time.perf_counter()
        results[engine] = replay(sheet, lines, ReplayOptions(engine=engine, batch_size=100))
        timings[engine] = time.perf_counter() - started
    same = (results["aws"].qualifications == results["memory"].qualifications
            and results["aws"].counters == results["memory"].counters)
    return {"records": sample, "identical": same, "qualifications": len(results["memory"].qualifications),
            "aws_records_per_s": sample / timings["aws"], "memory_records_per_s": sample / timings["memory"],
            "aws_dynamodb_requests": results["aws"].stats["dynamodb_requests"]["total"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    parser.add_argument("--workers", type=int, default=None, help="memory engine processes (default: one per core)")
    parser.add_argument("--sample", type=int, default=3_000, help="records replayed on both engines (0: skip)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the stream here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    if args.records < 1 or not 0 <= args.sample <= args.records:
        parser.error("--records must be at least 1 and --sample between 0 and --records")

    from functions.rules.sheet import parse_rules_sheet

    rule_count = len(parse_rules_sheet(args.rules.read_text(encoding="utf-8"), source_name=str(args.rules)))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"stream: {args.records:,} records (seed {args.seed}) …", file=sys.stderr, flush=True)
        events = stream_file(args.records, args.seed, workdir)
        size_mb = events.stat().st_size / 1e6
        print(f"replay: {events} ({size_mb:,.0f} MB), {rule_count} rules", file=sys.stderr, flush=True)
        run = timed_replay(events, args.rules, Path(scratch) / "replay.json", args.workers)
        comparison = compare_engines(events, args.rules, args.sample) if args.sample else None

    stats = run["document"]["stats"]
    operations = stats["store_operations"]
    rate = args.records / run["seconds"]
    peak_gb = run["peak_bytes"] / 1024 ** 3
    print(f"\nmemory engine, {stats['workers']} processes: {args.records:,} records, {rule_count} rules in "
          f"{run['seconds']:.1f} s = {rate:,.0f} records/s; peak memory {peak_gb:.2f} GB (PSS of the process tree, "
          f"{run['memory_samples']:,} samples)")
    print(f"  {stats['aggregator_invocations']:,} batches, {operations['pairs_applied']:,} matched events → "
          f"{operations['writes']:,} counter writes ({operations['writes'] / args.records:.2f} per record), "
          f"{operations['duplicates_skipped']:,} duplicates skipped; {len(run['document']['qualifications']):,} "
          f"qualifications, {len(run['document']['counters']):,} counters, {stats['rejected']['count']:,} rejected")
    if comparison:
        ratio = comparison["memory_records_per_s"] / comparison["aws_records_per_s"]
        print(f"  before (--engine aws, the real handlers on moto) on the first {comparison['records']:,} records: "
              f"{comparison['aws_records_per_s']:,.0f} records/s, {comparison['aws_dynamodb_requests']:,} DynamoDB "
              f"requests; memory engine on the same: {comparison['memory_records_per_s']:,.0f} records/s "
              f"({ratio:,.0f}×), outcomes {'identical' if comparison['identical'] else 'DIFFERENT'} "
              f"({comparison['qualifications']:,} qualifications)")
    time_ok, memory_ok = run["seconds"] <= TARGET_SECONDS, run["peak_bytes"] <= TARGET_PEAK_BYTES
    print(f"\ntarget ≤ {TARGET_SECONDS:.0f} s: {'met' if time_ok else 'MISSED'} ({run['seconds']:.1f} s, "
          f"{run['seconds'] / TARGET_SECONDS:.2f}× the target)")
    print(f"target ≤ 2 GB peak: {'met' if memory_ok else 'MISSED'} ({peak_gb:.2f} GB, "
          f"{run['peak_bytes'] / TARGET_PEAK_BYTES:.2f}× the target)")
    if args.json:
        from bench.result_file import command_line, write_result

        write_result(args.json, benchmark="replay", command=command_line("bench.replay", list(argv) if argv else None),
                     figures={"records": args.records, "rules": rule_count, "workers": stats["workers"],
                              "seconds": round(run["seconds"], 2), "records_per_s": round(rate),
                              "peak_bytes": run["peak_bytes"], "batches": stats["aggregator_invocations"],
                              "counter_writes": operations["writes"], "pairs_applied": operations["pairs_applied"],
                              "before_after": comparison})
    if comparison and not comparison["identical"]:
        print("the two engines disagree on the sample: a bug", file=sys.stderr)
        return 2
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
