"""Progress display: a rich bar with ETA on a terminal, plain periodic lines otherwise (CI logs, files)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class _Plain:
    def __init__(self, total: int, desc: str, every_s: float = 30.0, done: int = 0):
        self.total, self.desc, self.n, self.every_s = total, desc, done, every_s
        self.done_before = done  # resumed work: not in the rate (it took no time in this process)
        self.start = self.last = time.perf_counter()

    def update(self, n: int = 1, info: str = "") -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.n >= self.total:
            self.last = now
            rate = (self.n - self.done_before) / max(now - self.start, 1e-9)
            eta = (self.total - self.n) / rate if rate else float("inf")
            print(f"[{self.desc}] {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%) "
                  f"eta {eta:.0f}s {info}", file=sys.stderr, flush=True)


class _Rich:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def update(self, n: int = 1, info: str = "") -> None:
        self.progress.update(self.task, advance=n, info=info)


@contextmanager
def bar(total: int, desc: str, enabled: bool = True, done: int = 0):
    """`with bar(100, "pretrain") as b: b.update(1, info="loss 3.2")`; `done`: steps already done (a resumed run),
    shown as done but left out of the rate the ETA is computed from."""
    if not enabled or not sys.stderr.isatty():  # plain lines: logs, CI, --no-progress
        yield _Plain(total, desc, every_s=60.0, done=done)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  transient=False) as progress:
        yield _Rich(progress, progress.add_task(desc, total=total, completed=done, info=""))  # speed: advances only
