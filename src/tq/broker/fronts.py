"""The management front doors (REST + WebSocket, gRPC, Prometheus) started in the broker's
event loop, each a thin adapter over ``BrokerService``; enabled by the ``api`` and
``monitoring`` settings. Each lives in ``tq.api`` and is imported only when enabled, so a
broker without them pays nothing for them."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Protocol

from tq.broker.service import BrokerService
from tq.config import Settings

log = logging.getLogger(__name__)


class FrontDoor(Protocol):
    """Built as ``Cls(service, settings)``; ``start`` binds and returns the port in use."""

    name: str
    port: int

    async def start(self) -> int: ...

    async def stop(self) -> None: ...


#: (enabled?, module, class) for each front door, in start order.
_FRONTS: tuple[tuple[Callable[[Settings], bool], str, str], ...] = (
    (lambda settings: settings.monitoring.prometheus_enabled, "tq.api.metrics", "MetricsServer"),
    # One HTTP server carries REST and WebSocket: it runs if either is enabled.
    (lambda settings: settings.api.http_enabled, "tq.api.http", "HttpServer"),
    (lambda settings: settings.api.grpc_enabled, "tq.api.grpc", "GrpcServer"),
)


async def start_front_doors(service: BrokerService, settings: Settings) -> list[FrontDoor]:
    started: list[FrontDoor] = []
    for enabled, module, cls_name in _FRONTS:
        if not enabled(settings):
            continue
        cls = getattr(importlib.import_module(module), cls_name)
        front: FrontDoor = cls(service, settings)
        front.port = await front.start()
        log.info("api.listening name=%s port=%d", front.name, front.port)
        started.append(front)
    return started
