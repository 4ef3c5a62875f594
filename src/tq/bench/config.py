"""What a ``tq bench`` run measures: the scenarios and their knobs, one frozen value.

Defaults are the figures of the performance targets: 100,000 tasks, 2 worker processes of
concurrency 8, 20,000 tasks/s offered for 30 s. ``stored`` (memory, restart) defaults to
``tasks``; the target run uses 1,000,000.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from tq.errors import ValidationError

SCENARIOS: Final = ("enqueue", "drain", "latency", "steady", "memory", "restart")
#: Scenarios that can run against an existing broker (``--url``): the others need a broker
#: of their own (a clean queue to drain, its PID for RSS, a process to kill).
EXTERNAL_OK: Final = frozenset({"enqueue", "latency", "steady"})
#: The queue every bench task goes to, so a shared broker's other queues are left alone.
QUEUE: Final = "tq-bench"
TASK_TYPE: Final = "tq.bench.noop"
#: The payload size of the memory scenario (the target is stated for 100-byte payloads).
MEMORY_PAYLOAD: Final = 100


@dataclass(frozen=True)
class BenchConfig:
    scenarios: tuple[str, ...] = SCENARIOS
    tasks: int = 100_000
    """Tasks per enqueue phase and drained by the drain scenario."""
    stored: int | None = None
    """Tasks stored for memory and restart; None: ``tasks``."""
    workers: int = 2
    concurrency: int = 8
    rate: float = 20_000.0
    duration: float = 30.0
    batch: int = 500
    window: int = 1000
    """Submits (or batches' tasks) in flight at once in the enqueue and steady scenarios."""
    payload_size: int = 16
    latency_count: int = 1000
    url: str | None = None
    """An existing broker for enqueue/latency/steady; None: a fresh broker per scenario."""
    broker_settings: tuple[tuple[str, str], ...] = ()
    """``--set`` overrides for the brokers the bench spawns (e.g. persistence.sync_mode)."""
    api_key: str | None = dataclasses.field(default=None, repr=False)
    """The key the bench's clients and workers present (``--api-key``); a spawned broker with
    ``auth.enabled`` gets it as its bootstrap admin key. Never printed."""

    def __post_init__(self) -> None:
        for name in ("tasks", "workers", "concurrency", "batch", "window", "latency_count"):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.stored is not None and self.stored < 1:
            raise ValidationError(f"stored must be at least 1, got {self.stored}")
        if self.rate <= 0 or self.duration <= 0:
            raise ValidationError(
                f"rate and duration must be positive, got {self.rate} and {self.duration}"
            )
        if self.payload_size < 0:
            raise ValidationError(f"payload_size must be >= 0, got {self.payload_size}")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ValidationError(
                f"unknown scenario {', '.join(unknown) or '(none)'}: pick from "
                f"{', '.join(SCENARIOS)} or all"
            )

    @property
    def stored_tasks(self) -> int:
        return self.tasks if self.stored is None else self.stored

    @property
    def payload(self) -> bytes:
        return payload_of(self.payload_size)

    def runnable(self) -> tuple[list[str], list[str]]:
        """(scenarios to run, scenarios skipped because ``url`` names an external broker)."""
        if self.url is None:
            return list(self.scenarios), []
        run = [s for s in self.scenarios if s in EXTERNAL_OK]
        return run, [s for s in self.scenarios if s not in EXTERNAL_OK]

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["api_key"] = None if self.api_key is None else "(given)"
        data["scenarios"] = list(self.scenarios)
        data["stored"] = self.stored_tasks
        data["broker_settings"] = dict(self.broker_settings)
        data.update(queue=QUEUE, task_type=TASK_TYPE, memory_payload_size=MEMORY_PAYLOAD)
        return data


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated list, in the canonical order, without duplicates."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    if "all" in names:
        return SCENARIOS
    unknown = sorted(names - set(SCENARIOS))
    if unknown or not names:
        raise ValidationError(
            f"unknown scenario {', '.join(unknown) or repr(text)}: pick from "
            f"{', '.join(SCENARIOS)} or all"
        )
    return tuple(s for s in SCENARIOS if s in names)


def payload_of(size: int) -> bytes:
    """A deterministic payload of ``size`` bytes (printable, so it shows in ``tq status``)."""
    pattern = b"tq-bench-payload:"
    return (pattern * (size // len(pattern) + 1))[:size]
