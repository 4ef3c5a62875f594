"""The broker's open-files limit: at start, raise the soft RLIMIT_NOFILE (towards the hard
limit, never above it) when the connection settings need more descriptors than it allows.
Logged either way; never a reason to refuse to start.
"""

from __future__ import annotations

import logging
import resource

from tq.config import BrokerSettings

log = logging.getLogger(__name__)

#: Descriptors beyond the TCP connections: RocksDB's files, the HTTP, gRPC and metrics doors
#: and their clients, connections in their close grace, etcd, logs, the interpreter's own.
RESERVED_FDS = 1024


def nofile_needed(broker: BrokerSettings) -> int:
    """Descriptors the broker may hold: every TCP slot (established or handshaking) and more."""
    return broker.max_connections + broker.max_handshaking + RESERVED_FDS


def nofile_target(soft: int, hard: int, needed: int) -> int | None:
    """The soft limit to set, or None to keep ``soft`` (already enough, or nothing to gain)."""
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    return target if target > soft else None


def raise_nofile_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (at most the hard limit) and log what it did."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = nofile_target(soft, hard, needed)
    if target is not None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:  # e.g. macOS caps the soft limit at OPEN_MAX
            log.warning(
                "broker.nofile not_raised soft=%d hard=%d needed=%d error=%s", soft, hard, needed, e
            )
            return
        log.info("broker.nofile raised soft=%d to=%d hard=%d needed=%d", soft, target, hard, needed)
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "broker.nofile below_needed soft=%d hard=%d needed=%d: connections beyond the limit "
            "cannot be accepted; raise the hard limit (ulimit -Hn) or lower "
            "broker.max_connections / broker.max_handshaking",
            soft, hard, needed,
        )  # fmt: skip
