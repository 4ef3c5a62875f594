"""tq.cluster's checks of its own settings, before any etcd is contacted: each bad value is
named in the error."""

from __future__ import annotations

import asyncio

import pytest

from tq.cluster.election import Election, leader_key
from tq.cluster.etcd import Etcd, parse_endpoint, prefix_end
from tq.cluster.log import ReplicatedLog
from tq.errors import ValidationError


@pytest.mark.parametrize(
    ("endpoint", "parsed"),
    [("127.0.0.1:2379", ("127.0.0.1", 2379)), ("http://etcd-1:12379", ("etcd-1", 12379))],
)
def test_endpoints_are_host_port_with_or_without_http(
    endpoint: str, parsed: tuple[str, int]
) -> None:
    assert parse_endpoint(endpoint) == parsed


@pytest.mark.parametrize("endpoint", ["etcd", "etcd:", ":2379", "etcd:99999", "etcd:x"])
def test_a_bad_endpoint_is_named(endpoint: str) -> None:
    with pytest.raises(ValidationError, match=repr(endpoint).replace("'", ".")):
        parse_endpoint(endpoint)


def test_tls_endpoints_are_refused_until_supported() -> None:
    with pytest.raises(ValidationError, match="TLS"):
        parse_endpoint("https://etcd:2379")


def test_a_client_needs_an_endpoint_and_a_positive_timeout() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        Etcd([])
    with pytest.raises(ValidationError, match="timeout 0"):
        Etcd(["127.0.0.1:2379"], timeout_s=0)


def test_keys_live_under_the_cluster_name() -> None:
    assert leader_key("prod") == b"/tq/prod/leader"
    log = ReplicatedLog(Etcd(["127.0.0.1:2379"]), "prod")
    assert log.key(7) == b"/tq/prod/log/00000000000000000007"
    assert log.index_of(log.key(12345)) == 12345
    assert log.key(9) < log.key(10) < log.key(10**19)  # key order is index order
    assert prefix_end(b"/tq/prod/log/") == b"/tq/prod/log0"
    for bad in ("", "a/b"):
        with pytest.raises(ValidationError, match="cluster name"):
            leader_key(bad)


def test_election_ttl_is_whole_seconds_within_bounds() -> None:
    for ttl in (1, 61):
        with pytest.raises(ValidationError, match=f"TTL {ttl}"):
            Election(Etcd(["127.0.0.1:2379"]), "c", "n", "n:1", ttl_s=ttl)


def test_bad_log_arguments_are_refused_before_etcd_is_asked() -> None:
    log = ReplicatedLog(Etcd(["127.0.0.1:1"]), "c", max_entry_bytes=10)

    async def main() -> None:
        with pytest.raises(ValidationError, match="above the 10 byte limit"):
            await log.append(b"x" * 11, epoch=1)
        with pytest.raises(ValidationError, match="must be bytes"):
            await log.append("text", epoch=1)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="start at 1"):
            await log.read(0)
        with pytest.raises(ValidationError, match="start at 1"):
            await log.trim(0)
        with pytest.raises(ValidationError, match="start at 1"):
            await anext(log.follow(0))

    asyncio.run(main())
