"""The open-files limit the broker asks for: what it needs, and how far it may raise it."""

from __future__ import annotations

import resource

from tq.broker.limits import RESERVED_FDS, nofile_needed, nofile_target
from tq.config import BrokerSettings

INF = resource.RLIM_INFINITY


def test_every_established_and_handshaking_slot_needs_a_descriptor_plus_a_reserve() -> None:
    broker = BrokerSettings(max_connections=300, max_handshaking=200)
    assert nofile_needed(broker) == 500 + RESERVED_FDS


def test_a_soft_limit_below_the_need_is_raised_to_the_need() -> None:
    assert nofile_target(soft=1024, hard=1_048_576, needed=3024) == 3024
    assert nofile_target(soft=1024, hard=INF, needed=3024) == 3024


def test_the_soft_limit_is_raised_no_further_than_the_hard_limit() -> None:
    assert nofile_target(soft=1024, hard=2048, needed=3024) == 2048


def test_a_soft_limit_already_enough_or_at_the_hard_limit_is_kept() -> None:
    assert nofile_target(soft=4096, hard=8192, needed=3024) is None
    assert nofile_target(soft=INF, hard=INF, needed=3024) is None
    assert nofile_target(soft=1024, hard=1024, needed=3024) is None
