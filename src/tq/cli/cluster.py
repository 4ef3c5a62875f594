"""``tq cluster status``: the cluster's nodes, leader, epoch and log as the node reached sees
them (any node answers; a single broker says it is one)."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from tq.cli.admin import table_time
from tq.cli.context import CliContext, connect, emit, plain


@click.group("cluster")
def cluster_group() -> None:
    """A cluster of brokers replicated through etcd (see docs/cluster.md)."""


@cluster_group.command("status")
@click.pass_obj
def status_cmd(ctx: CliContext) -> None:
    """Nodes, leader, epoch, applied index and lag, as the node reached sees them."""
    with connect(ctx) as client:
        status = client.cluster_status()
    data = plain(status)
    if not status.enabled:
        table = Table(title=f"tq broker {status.node_id}: a single broker", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        table.add_row("cluster", "not enabled (raft.enabled is false: its own WAL is the log)")
        emit(ctx, data, table)
        return
    leader = "none elected" if status.leader_id is None else status.leader_id
    title = (
        f"cluster {status.name}: leader {leader}"
        + ("" if status.epoch is None else f", epoch {status.epoch}")
        + f"; log {status.log_first_index}..{status.log_last_index}"
        + f" (as node {status.node_id} sees it)"
    )
    table = Table(title=title, title_justify="left")
    for column in ("node", "address", "role", "applied", "lag", "updated (UTC)"):
        table.add_column(column, justify="right" if column in ("applied", "lag") else "left")
    for node in status.nodes:
        role = Text(node.role, style="bold green" if node.role == "leader" else "")
        table.add_row(
            Text(node.node_id), Text(node.address), role, f"{node.applied_index:,}",
            f"{node.lag:,}", table_time(node.updated_at),
        )  # fmt: skip
    emit(ctx, data, table)
