"""Several broker URLs and following the leader, without sockets: the URL lists, the address a
NOT_LEADER names, the choice of the next node, and the error every door builds from the wire."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest

from tq.api.ws import error_message
from tq.client import AsyncClient
from tq.client.address import BrokerAddress, leader_address, parse_urls
from tq.client.brokers import Brokers
from tq.client.pacing import Backoff
from tq.config import load
from tq.errors import (
    ConfigError,
    ErrorCode,
    NotLeaderError,
    RateLimitedError,
    UnavailableError,
    error_for_code,
)
from tq.protocol import Nack, decode_payload
from tq.protocol.connection import nack_frame

A = BrokerAddress("a", 1, tls=False)
B = BrokerAddress("b", 2, tls=False)
C = BrokerAddress("c", 3, tls=False)


def test_a_url_list_is_a_sequence_or_one_comma_separated_string_in_order_each_once() -> None:
    assert parse_urls("tq://a:1") == (A,)
    assert parse_urls("tq://a:1,tq://b:2") == (A, B)
    assert parse_urls(" tq://a:1 , tq://b:2 ,tq://a:1") == (A, B)
    assert parse_urls(["tq://b:2", "tq://a:1"]) == (B, A)
    assert parse_urls(("tqs://a:1",)) == (BrokerAddress("a", 1, tls=True),)


@pytest.mark.parametrize(
    ("urls", "says"),
    [
        ("tq://a:1,b:2", "'b:2' in 'tq://a:1,b:2' has no scheme"),
        ("tq://a:1,,tq://b:2", "has an empty item"),
        ("tq://a:1,", "has an empty item"),
        ("", "no broker url in ''"),
        ([], "no broker url in []"),
        ("tq://a:1,tqs://b:2", "mix tq:// and tqs://"),
        ("tq://a:1,http://b:2", "'http://b:2' is not like tq://host:port"),
    ],
)
def test_a_bad_url_list_is_a_config_error_saying_what_is_wrong(
    urls: str | list[str], says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_urls(urls)
    assert says in info.value.message


def test_clients_take_the_list_and_tell_the_nodes_from_the_one_they_talk_to() -> None:
    client = AsyncClient(["tq://a:1", "tq://b:2"])
    assert client.urls == ["tq://a:1", "tq://b:2"]
    assert client.url == "tq://a:1"
    assert repr(client) == "AsyncClient('tq://a:1,tq://b:2')"


def test_the_default_url_may_be_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQ_BROKER_URL", "tq://a:1,tq://b:2")
    assert AsyncClient().urls == ["tq://a:1", "tq://b:2"]


def test_tls_settings_serve_every_node_and_still_need_tqs() -> None:
    with pytest.raises(ConfigError, match=r"tq://a:1,tq://b:2 is plaintext"):
        AsyncClient("tq://a:1,tq://b:2", tls=ssl.create_default_context())


@pytest.mark.parametrize(
    ("leader", "address"),
    [
        ("10.0.0.2:7420", BrokerAddress("10.0.0.2", 7420, tls=True)),
        ("node-3.example:7000", BrokerAddress("node-3.example", 7000, tls=True)),
        ("[::1]:7420", BrokerAddress("::1", 7420, tls=True)),
        ("no-port", None),
        ("host:notaport", None),
        ("", None),
        ("host:1/path", None),
    ],
)
def test_the_leader_a_refusal_names_is_dialled_with_the_scheme_of_the_others(
    leader: str, address: BrokerAddress | None
) -> None:
    assert leader_address(leader, BrokerAddress("x", 1, tls=True)) == address


def test_not_leader_from_the_wire_is_a_not_leader_error_naming_the_leader() -> None:
    frame = nack_frame(7, NotLeaderError("not applied: a follower", leader="10.0.0.2:7420"))
    nack = decode_payload(frame[4], memoryview(frame)[5:])
    assert isinstance(nack, Nack)
    assert (nack.request_id, nack.code, nack.leader) == (7, 6000, "10.0.0.2:7420")
    error = error_for_code(nack.code, nack.message, leader=nack.leader)
    assert isinstance(error, NotLeaderError) and isinstance(error, UnavailableError)
    assert (error.code, error.leader) == (ErrorCode.NOT_LEADER, "10.0.0.2:7420")
    assert error_for_code(6000, "election").leader is None  # type: ignore[attr-defined]
    # The field is NOT_LEADER's alone: another refusal leaves it out.
    other = nack_frame(7, RateLimitedError("slow down", retry_after=1.0))
    assert b"leader" not in other


def test_a_websocket_error_names_the_leader_too() -> None:
    message = error_message(NotLeaderError("not applied", leader="10.0.0.2:7420"))
    assert message["error"]["leader"] == "10.0.0.2:7420"
    assert json.loads(json.dumps(message))["error"]["code"] == 6000
    assert error_message(NotLeaderError("election"))["error"]["leader"] is None
    assert "leader" not in error_message(UnavailableError("bye"))["error"]


def test_the_worker_setting_takes_a_comma_list_of_full_urls() -> None:
    urls = "tq://a:7420,tq://b:7420"
    assert load(None, overrides={"worker.broker_url": urls}).worker.broker_url == urls
    for bad, says in [
        ("tq://a:1,b:2", "item 'b:2' must be a URL like tq://host:port"),
        ("tq://a:1,,tq://b:2", "empty item"),
        ("tq://a:1,tqs://b:2", "mixes tq and tqs"),
    ]:
        with pytest.raises(ConfigError, match=r"worker\.broker_url") as info:
            load(None, overrides={"worker.broker_url": bad})
        assert says in info.value.message


def run(body: object) -> None:
    """Brokers paces with the running loop's clock: run ``body`` inside one."""

    async def main() -> None:
        assert callable(body)
        body()

    asyncio.run(main())


def test_a_failed_node_moves_on_at_once_and_only_a_failed_round_pauses() -> None:
    def body() -> None:
        brokers = Brokers("tq://a:1,tq://b:2,tq://c:3", Backoff(5.0))
        down = UnavailableError("cannot connect")
        assert brokers.address == A
        assert brokers.failed(A, down) is False
        assert (brokers.address, brokers.backoff.wait()) == (B, 0.0)
        assert brokers.failed(B, down) is False
        assert brokers.address == C
        assert brokers.failed(C, down) is True  # every node failed once: pause
        assert brokers.address == A
        assert brokers.backoff.wait() > 0
        assert "tq://a:1 (cannot connect), tq://b:2 (cannot connect)" in brokers.unreachable(down)
        brokers.succeeded()
        assert brokers.backoff.wait() == 0.0

    run(body)


def test_a_single_node_pauses_after_each_failure_as_it_always_did() -> None:
    def body() -> None:
        brokers = Brokers("tq://a:1", Backoff(5.0))
        down = UnavailableError("cannot connect to tq://a:1: refused")
        assert brokers.failed(A, down) is True
        assert brokers.address == A
        assert brokers.backoff.wait() > 0
        assert brokers.unreachable(down) == (
            "cannot reach the broker at tq://a:1: cannot connect to tq://a:1: refused"
        )

    run(body)


def test_a_refusal_moves_to_the_leader_it_names_even_outside_the_list() -> None:
    def body() -> None:
        brokers = Brokers("tq://a:1,tq://b:2,tq://c:3", Backoff(5.0))
        assert brokers.follow(NotLeaderError("no", leader="c:3"), A) is True
        assert brokers.address == C
        # A leader no URL named: dialled as told; when it fails, the list goes on after C.
        assert brokers.follow(NotLeaderError("no", leader="d:4"), C) is True
        assert brokers.address == BrokerAddress("d", 4, tls=False)
        brokers.failed(brokers.address, UnavailableError("down"))
        assert brokers.address == A

    run(body)


def test_a_refusal_naming_no_usable_leader_moves_to_the_next_node() -> None:
    def body() -> None:
        brokers = Brokers("tq://a:1,tq://b:2", Backoff(5.0))
        assert brokers.follow(NotLeaderError("election"), A) is False
        assert brokers.address == B
        assert brokers.follow(NotLeaderError("stale", leader="b:2"), B) is False  # itself
        assert brokers.address == A
        assert brokers.follow(NotLeaderError("odd", leader="garbage"), A) is False
        assert brokers.address == B
        # Heard late, about a node already left: no second move.
        assert brokers.follow(NotLeaderError("election"), A) is False
        assert brokers.address == B
        assert "tq://b:2 (not the leader: stale)" in brokers.last_errors()

    run(body)
