"""Work split between forked processes, for the local tools' long steps (the memory engine's users, the demo's
lake): each task runs in a child forked from this process — so it shares the records already read, without
pickling them — and only its result comes back. Progress is summed from one counter per child."""

from __future__ import annotations

import gc
import multiprocessing
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")
Task = Callable[[Callable[[int], None]], T]
"""A task: given `report(done)` (how many items it has done so far), does its share and returns the result."""


class WorkerFailed(Exception):
    """A task raised (its message says what) or its process died."""


def run_forked(tasks: Sequence[Task], *, on_progress: Callable[[int], None] | None = None,
               poll_seconds: float = 0.2) -> list[Any]:
    """Run each task in a forked child at once; the results in task order. Raises `WorkerFailed`."""
    context = multiprocessing.get_context("fork")
    done = context.Array("q", len(tasks), lock=False)
    # What the children inherit is never collected by them: frozen, the collector does not walk it, so the
    # children do not copy the pages it lives on (https://docs.python.org/3/library/gc.html#gc.freeze).
    gc.freeze()
    receivers, processes = [], []
    for index, task in enumerate(tasks):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(task, index, done, sender), daemon=True,
                                  name=f"engagement-loop-worker-{index}")
        process.start()
        sender.close()
        receivers.append(receiver)
        processes.append(process)
    results: list[Any] = [None] * len(tasks)
    waiting = dict(enumerate(receivers))
    try:
        while waiting:
            for index, receiver in list(waiting.items()):
                if receiver.poll(poll_seconds / len(tasks)):
                    results[index] = receiver.recv()
                    del waiting[index]
                elif not processes[index].is_alive() and not receiver.poll(0):
                    raise WorkerFailed(f"worker {index} died (exit code {processes[index].exitcode})")
            if on_progress is not None:
                on_progress(sum(done))
    finally:
        gc.unfreeze()
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    failures = [result for result in results if isinstance(result, _Failure)]
    if failures:
        raise WorkerFailed(failures[0].message)
    return results


class _Failure:
    def __init__(self, message: str) -> None:
        self.message = message


def _child(task: Task, index: int, done: Any, sender: Any) -> None:
    def report(count: int) -> None:
        done[index] = count

    # A child builds many small, long-lived objects (counters, outbox entries) and frees few: collecting the
    # youngest generation every 700 allocations costs more than it finds.
    gc.set_threshold(50_000, 20, 20)
    try:
        result: Any = task(report)
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        result = _Failure(f"{type(error).__name__}: {error}")
    sender.send(result)
    sender.close()
