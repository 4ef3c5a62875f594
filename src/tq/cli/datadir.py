"""``tq inspect``: open a stopped broker's data directory and summarise everything it holds.

Live tasks come from the rebuilt state machine (what a starting broker would serve); finished
ones (completed, cancelled, dead letter) stay on disk and are counted by reading their families,
so the summary names every task the directory holds, by state and by queue.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tq.cli.admin import QUEUE_COLUMNS, queue_table
from tq.cli.context import CliContext, emit, fail
from tq.cli.extras import require_server
from tq.core.layout import Counters, Family
from tq.core.model import TaskState, decode_task

if TYPE_CHECKING:
    from tq.storage.base import Store

#: Families of finished tasks: recovery leaves them on disk.
_FINISHED = (Family.COMPLETED, Family.DEAD_LETTER)


def _finished(store: Store) -> tuple[Counter[TaskState], Counter[str]]:
    """Finished tasks by state, and dead-lettered ones by queue."""
    states: Counter[TaskState] = Counter()
    dead: Counter[str] = Counter()
    for family in _FINISHED:
        for _, raw in store.iterate(family):
            task = decode_task(raw)
            states[task.state] += 1
            if task.state is TaskState.DEAD_LETTER:
                dead[task.queue] += 1
    return states, dead


@click.command("inspect")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Default: persistence.data_dir.")  # fmt: skip
@click.pass_obj
def inspect_cmd(ctx: CliContext, data_dir: str | None) -> None:
    """Open the data directory (stop the broker first), rebuild the state, summarise it."""
    require_server("inspect", "opens a broker's data dir")
    # Imported here: RocksDB comes with the server extra, which client commands do without.
    from tq.storage import open_store  # noqa: PLC0415
    from tq.storage.recovery import recover  # noqa: PLC0415

    path = data_dir or str(ctx.settings.persistence.data_dir)
    if not Path(path).is_dir():  # opening it would create an empty store there
        origin = "--data-dir" if data_dir else "persistence.data_dir"
        fail(f"no data directory at {path} (from {origin})")
    t0 = time.perf_counter()
    with open_store(path) as store:
        rec = recover(store, time.time())
        elapsed = time.perf_counter() - t0
        finished, dead = _finished(store)
    m = rec.machine
    live = m.counts()
    tasks = {s.value: (finished[s] if s.is_terminal else live[s]) for s in TaskState}
    depths = m.queue_depths()
    by_state = m.queue_counts()
    queues: dict[str, dict[str, int]] = {}
    for name in sorted({*depths, *by_state, *dead}):
        low, normal, high = depths.get(name, (0, 0, 0))
        states = by_state.get(name, {})
        scheduled = states.get(TaskState.SCHEDULED, 0) + states.get(TaskState.FAILED, 0)
        row = (high, normal, low, scheduled, states.get(TaskState.IN_PROGRESS, 0), dead[name])
        queues[name] = dict(zip(QUEUE_COLUMNS, row, strict=True))
    counters = {f: getattr(m.meta.counters, f) for f in Counters.__struct_fields__}
    workers = [w.id for w in m.workers()]
    data: dict[str, Any] = {
        "data_dir": path,
        "recovered_tasks": rec.tasks,
        "recovery_seconds": round(elapsed, 3),
        "tasks": tasks,
        "queues": queues,
        "workers": workers,
        "totals": counters,
    }
    title = Text(f"tq data dir {path} (rebuilt in {elapsed:.3f} s)", style="italic")
    summary = Table()
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for state, n in tasks.items():
        summary.add_row(state.replace("_", " "), f"{n:,}")
    summary.add_row("workers", str(len(workers)))
    for k, v in counters.items():
        summary.add_row(f"total {k}", f"{v:,}")
    emit(ctx, data, Group(title, summary, queue_table(queues)))
