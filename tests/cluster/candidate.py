"""A leader candidate as its own process, for fault tests (kill -9, SIGSTOP): it campaigns,
then appends to the log every 50 ms, printing one line per event with its monotonic time:

    leader EPOCH T | appended INDEX EPOCH T | fenced T | lost REASON T | error TEXT T

    python -m tests.cluster.candidate NODE CLUSTER TTL ENDPOINT[,ENDPOINT...]
"""

from __future__ import annotations

import asyncio
import sys
import time

from tq.cluster.election import Election
from tq.cluster.etcd import Etcd
from tq.cluster.log import ReplicatedLog
from tq.errors import NotLeaderError, TqError


def say(*words: object) -> None:
    print(*words, f"{time.monotonic():.4f}", flush=True)  # noqa: T201 (the test reads this)


async def main(node: str, cluster: str, ttl_s: int, endpoints: list[str]) -> None:
    etcd = Etcd(endpoints, timeout_s=1.0)
    election = Election(
        etcd, cluster, node, f"{node}:7420", ttl_s=ttl_s, on_lost=lambda why: say("lost", why)
    )
    while True:
        try:
            epoch = await election.campaign(timeout_s=60)
            break
        except TqError as exc:
            say("error", type(exc).__name__)
    say("leader", epoch)
    log = ReplicatedLog(etcd, cluster)
    fenced = False
    while not (fenced and election.lost.is_set()):
        if not fenced:
            try:
                index = await log.append(node.encode(), epoch=epoch)
                say("appended", index, epoch)
            except NotLeaderError:
                say("fenced")
                fenced = True
            except TqError as exc:
                say("error", type(exc).__name__)
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")))
