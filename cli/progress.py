"""Progress for the local tools' long steps: a tqdm bar on a terminal, plain lines elsewhere (CI, a log)."""

from __future__ import annotations

from typing import TextIO


class Progress:
    """A tqdm bar on a terminal; elsewhere (CI, a log) a plain line at every quarter."""

    def __init__(self, label: str, total: int, unit: str, stream: TextIO) -> None:
        self.label, self.total, self.unit, self.stream = label, max(total, 1), unit, stream
        self.done, self.next_line = 0, 0.25
        isatty = getattr(stream, "isatty", None)
        self.bar = None
        if isatty is not None and isatty():
            from tqdm import tqdm

            # No monitor thread: the local engines fork workers while a bar is open, and a thread's locks would
            # be copied into the children in whatever state they were.
            tqdm.monitor_interval = 0
            self.bar = tqdm(total=self.total, desc=label, unit=f" {unit}", file=stream,
                            dynamic_ncols=True, leave=True)
        else:
            self.label = label.rstrip()
            print(f"{self.label}: 0/{total:,} {unit}", file=stream)

    def update_to(self, done: int) -> None:
        done = min(done, self.total)
        if self.bar is not None:
            self.bar.update(done - self.done)
        else:
            if done / self.total >= self.next_line and done < self.total:
                print(f"{self.label}: {done / self.total:.0%} ({done:,}/{self.total:,} {self.unit})", file=self.stream)
                while self.next_line <= done / self.total:
                    self.next_line += 0.25
        self.done = done

    def close(self, note: str = "") -> None:
        if self.bar is not None:
            if note:  # finished: fill the bar and say what came out
                self.update_to(self.total)
                self.bar.set_postfix_str(note, refresh=True)
            self.bar.close()
        elif note:
            print(f"{self.label}: done — {note}", file=self.stream)
