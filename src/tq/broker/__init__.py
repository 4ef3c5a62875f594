"""The broker process: service (the use-case API), TCP front door, background jobs."""

from tq.broker.server import run_broker, serve
from tq.broker.service import BrokerService

__all__ = ["BrokerService", "run_broker", "serve"]
