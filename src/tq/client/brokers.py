"""Which broker a client talks to: the nodes it was given, the one it dials now, and moving on.

Rules. Calls go to one node at a time (``address``), the first given at the start. A failed
connection attempt moves to the next node at once; only after every node has failed once in
a row (a round) does the client pause (its Backoff), so a single URL behaves as before and a
dead node costs a cluster client no wait. A NOT_LEADER refusal (nothing was applied) moves
to the leader it names, which need not be in the list (the nodes of a cluster share one
scheme, so the leader's address gets ours); one that names none moves to the next node, and
the caller pauses before retrying (an election is under way). The last error of each node
in the current round is kept, so a failure names every URL tried and why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from tq.client.address import BrokerAddress, leader_address, parse_urls
from tq.client.pacing import Backoff
from tq.errors import NotLeaderError, TqError

log = logging.getLogger(__name__)


class Brokers:
    """The broker addresses of one client and the choice among them."""

    def __init__(self, urls: str | Sequence[str], backoff: Backoff) -> None:
        self.addresses = parse_urls(urls)
        self.backoff = backoff
        #: Where the next connection goes.
        self.address = self.addresses[0]
        #: Position in ``addresses`` of the last listed node chosen (a leader we were sent to
        #: may be outside the list: when it fails, the rotation goes on after this one).
        self._index = 0
        #: Failed attempts in a row, and the last error of each node among them.
        self._failures = 0
        self._errors: dict[BrokerAddress, str] = {}

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    @property
    def urls(self) -> str:
        """Every node as one comma-separated list, as it may be given back."""
        return ",".join(a.url for a in self.addresses)

    def failed(self, at: BrokerAddress, error: TqError) -> bool:
        """An attempt on ``at`` failed with ``error``: move to the next node. True if that
        ended a round: the Backoff then holds the next attempt back (``backoff.wait()``);
        within a round the next node is tried at once."""
        self._errors[at] = _reason(error)
        self._failures += 1
        if self.address == at:
            self._next()
        if self._failures < len(self.addresses):
            return False
        self._failures = 0
        self.backoff.failed()
        return True

    def succeeded(self) -> None:
        self.backoff.succeeded()
        self._failures = 0
        self._errors.clear()

    def follow(self, refusal: NotLeaderError, at: BrokerAddress) -> bool:
        """The node at ``at`` refused a request as not the leader: move to the leader it names;
        True if it named one (the request may go there at once), False if it did not (we moved
        to the next node: pause first). Also False for an address that is no use (``at``
        itself, or one that does not parse)."""
        self._errors[at] = f"not the leader: {refusal.message}"
        target = None if refusal.leader is None else leader_address(refusal.leader, at)
        if target is not None and target != at:
            listed = next((a for a in self.addresses if a == target), target)
            if listed != self.address:
                log.info("leader.follow from=%s to=%s", at.url, listed.url)
            self.address = listed
            if listed in self.addresses:
                self._index = self.addresses.index(listed)
            return True
        if refusal.leader is not None:
            log.warning("leader.unusable from=%s leader=%r", at.url, refusal.leader)
        if self.address == at:
            self._next()
        return False

    def _next(self) -> None:
        """The listed node after the current one (after the last listed one chosen, when the
        current one is a leader outside the list)."""
        if self.address in self.addresses:
            self._index = self.addresses.index(self.address)
        self._index = (self._index + 1) % len(self.addresses)
        self.address = self.addresses[self._index]

    def last_errors(self) -> str:
        """``url (error)`` of every node that failed in this round, comma-separated."""
        return ", ".join(f"{a.url} ({why})" for a, why in self._errors.items())

    def unreachable(self, last: TqError) -> str:
        """Why no node could be reached: for one node ``cannot reach the broker at URL: why``
        (as ever), for several every URL with its last error."""
        if not self.several:
            return f"cannot reach the broker at {self.addresses[0].url}: {last.message}"
        return f"cannot reach any of the brokers: {self.last_errors()}"

    def nowhere(self, describe: str, last: TqError | None) -> str:
        """The message of a call whose deadline passed without a connection."""
        if not self.several:
            cause = f" (last error: {last.message})" if last else ""
            return f"no connection to {self.addresses[0].url} {describe}{cause}"
        tried = self.last_errors() or self.urls
        return f"no connection to any of the brokers {describe}: {tried}"


def _reason(error: TqError) -> str:
    """What went wrong, short: the socket's own words when a socket error lies beneath."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return os.strerror(seen.errno) if seen.errno else str(seen) or type(seen).__name__
        seen = seen.__cause__
    return error.message
