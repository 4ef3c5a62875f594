"""Helpers shipped to users and used by our tests: a real broker in a child process."""

from tq.testing.broker import BrokerProcess, BrokerTls

__all__ = ["BrokerProcess", "BrokerTls"]
