"""Helpers shipped to users and used by our tests: a real broker in a child process."""

from tq.testing.broker import BrokerProcess, BrokerTls, new_api_key

__all__ = ["BrokerProcess", "BrokerTls", "new_api_key"]
