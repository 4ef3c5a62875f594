"""Property: any valid set of dotted overrides loads, and the dumped result loads back to the
same settings through overrides, a YAML file and TQ_* variables alike. Settings not built yet
(``UNBUILT``) are left out: any other value of theirs is refused (test_config_unbuilt)."""

from __future__ import annotations

import json
import tempfile
import types
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from tq.config import Settings, dump, load, setting_keys
from tq.config.model import SECTIONS, RaftMember, RateLimitSetting
from tq.config.unbuilt import UNBUILT

MiB = 1024 * 1024

names = st.from_regex(r"\A[a-z][a-z0-9_.-]{0,15}\Z")
hosts = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?\Z")
ports = st.integers(1, 65535)
paths = st.builds(Path, st.from_regex(r"\A/?[a-z][a-z0-9_]{0,8}(/[a-z0-9_]{1,8}){0,2}\Z"))


def port_in(low: int) -> st.SearchStrategy[int]:
    # Each listener gets its own thousand, so drawn ports never clash with each other or with
    # another listener's default (7420, 8080, 9420, 50051, 2379, 2380).
    return st.one_of(st.just(0), st.integers(low, low + 999))


def positive(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, exclude_min=low == 0.0, allow_nan=False, allow_infinity=False)


# Settings whose generic strategy would break a rule tying them to another setting's default,
# or whose text has a syntax of its own.
SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "broker.port": port_in(1000),
    "api.rest_port": port_in(3000),
    "api.grpc_port": port_in(4000),
    "monitoring.prometheus_port": port_in(5000),
    "broker.lease_duration_s": positive(31.0, 1e6),
    "broker.lease_check_interval_s": positive(0.0, 29.0),
    "broker.heartbeat_interval_s": positive(0.0, 29.0),
    "broker.max_frame_size_bytes": st.integers(10 * MiB + 4096, 2**31),
    "broker.max_payload_size_bytes": st.integers(1, 10 * MiB),
    "broker.retry_backoff_base_s": positive(0.0, 300.0),
    "broker.retry_backoff_max_s": positive(300.0, 1e6),
    "broker.default_claim_batch": st.integers(1, 10),
    "broker.max_claim_batch": st.integers(10, 1000),
    "api.cors_origins": st.lists(
        st.one_of(st.just("*"), st.builds("https://{}".format, hosts)), unique=True, max_size=3
    ).map(tuple),
    "worker.broker_url": st.builds(
        "{}://{}:{}".format, st.sampled_from(["tq", "tqs"]), hosts, ports
    ),
    "worker.queues": st.lists(names, min_size=1, max_size=4, unique=True).map(tuple),
    "broker.priority_aging_exempt_queues": st.lists(names, max_size=3, unique=True).map(tuple),
    # raft.enabled needs etcd endpoints, and an advertised address when broker.host is a
    # wildcard: those rules have their own tests (test_config_load); here it stays off.
    "raft.enabled": st.just(False),
    "raft.etcd_endpoints": st.lists(
        st.builds("http://{}:{}".format, hosts, ports), max_size=3, unique=True
    ).map(tuple),
    "raft.advertise_address": st.one_of(st.none(), st.builds("{}:{}".format, hosts, ports)),
    "raft.members": st.lists(
        st.builds(RaftMember, node_id=names, address=st.builds("{}:{}".format, hosts, ports)),
        max_size=3,
        unique_by=lambda m: m.node_id,
    ).map(tuple),
    # Each in a range of its own: a managed etcd's ports must not clash with any listener.
    "raft.etcd_client_port": st.integers(11000, 11999),
    "raft.etcd_peer_port": st.integers(12000, 12999),
    # A secret: dump masks it, so it cannot round-trip (its own test is below).
    "worker.api_key": st.none(),
    "auth.rate_limits": st.dictionaries(
        st.sampled_from(["submit", "read", "work", "admin"]),
        st.one_of(
            st.none(),
            st.builds(RateLimitSetting, rate=positive(0.0, 1e6), burst=st.integers(1, 10**6)),
        ),
        max_size=4,
    ),
}


def constraints(info: FieldInfo) -> dict[str, float]:
    """ge/gt/le/lt of a field, including those inside an Optional[Annotated[...]]."""
    found = list(info.metadata)
    for arg in get_args(info.annotation):
        if get_origin(arg) is Annotated:
            for extra in get_args(arg)[1:]:
                found.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
    bounds: dict[str, float] = {}
    for item in found:
        for name in ("ge", "gt", "le", "lt"):
            if (bound := getattr(item, name, None)) is not None:
                bounds[name] = bound
    return bounds


def strategy_for(section: str, key: str) -> st.SearchStrategy[Any]:
    if (special := SPECIAL.get(f"{section}.{key}")) is not None:
        return special
    info = SECTIONS[section].model_fields[key]
    annotation: Any = info.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        optional = True
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    bounds = constraints(info)
    low = bounds.get("ge", bounds.get("gt", 0))
    high = bounds.get("le", bounds.get("lt", 10**9))
    base: st.SearchStrategy[Any]
    if annotation is bool:
        base = st.booleans()
    elif annotation is int:
        base = st.integers(int(low) + ("gt" in bounds), int(high))
    elif annotation is float:
        base = st.floats(
            low, high, exclude_min="gt" in bounds, allow_nan=False, allow_infinity=False
        )
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        base = st.sampled_from(list(annotation))
    elif annotation is Path:
        base = paths
    elif annotation is str:
        base = names
    else:
        raise AssertionError(f"no strategy for {section}.{key}: {annotation!r}")
    return st.one_of(st.none(), base) if optional else base


def env_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def flat(data: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{section}.{key}": value for section, body in data.items() for key, value in body.items()
    }


@st.composite
def overrides(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(
        st.lists(
            st.sampled_from([key for key in setting_keys() if key not in UNBUILT]),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    chosen = {key: draw(strategy_for(*key.split("."))) for key in keys}
    # A setting that needs another (a TLS certificate its key) brings it along.
    changed = True
    while changed:
        changed = False
        for key, value in list(chosen.items()):
            for other in NEEDS.get(key, ()) if value else ():
                if chosen.get(other) is None:
                    chosen[other] = draw(paths)
                    changed = True
    return chosen


#: Settings that, when set, need others set too (the model's rules tying them together).
NEEDS: dict[str, tuple[str, ...]] = {
    "auth.tls_cert_file": ("auth.tls_key_file",),
    "auth.tls_key_file": ("auth.tls_cert_file",),
    "auth.tls_ca_file": ("auth.tls_cert_file",),
    "auth.require_client_cert": ("auth.tls_ca_file",),
    "worker.tls_cert_file": ("worker.tls_key_file",),
    "worker.tls_key_file": ("worker.tls_cert_file",),
}


@settings(max_examples=200, deadline=None)
@given(overrides())
def test_any_valid_override_round_trips_through_dump_and_load(chosen: dict[str, Any]) -> None:
    loaded = load(env={}, overrides=chosen)
    for key, value in chosen.items():
        section, name = key.split(".")
        assert getattr(getattr(loaded, section), name) == value

    data = dump(loaded)
    assert load(env={}, overrides=flat(data)) == loaded
    env = {
        f"TQ_{section.upper()}__{name.upper()}": env_text(value)
        for section, body in data.items()
        for name, value in body.items()
    }
    assert load(env=env) == loaded
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tq.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        assert load(path, env={}) == loaded


def test_the_dump_of_the_defaults_loads_back_to_the_defaults() -> None:
    assert load(env={}, overrides=flat(dump(Settings()))) == Settings()


def test_the_api_key_is_read_from_every_source_but_dumped_masked() -> None:
    secret = "tq_0123456789ab_" + "A" * 43
    for loaded in (
        load(env={"TQ_WORKER__API_KEY": secret}),
        load(env={}, overrides={"worker.api_key": secret}),
    ):
        assert loaded.worker.api_key is not None
        assert loaded.worker.api_key.get_secret_value() == secret
        assert secret not in json.dumps(dump(loaded))
        assert secret not in repr(loaded)
