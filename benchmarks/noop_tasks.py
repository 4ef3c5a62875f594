"""The no-op task of the benchmarks (the shared harness's ``noop(x) -> x``)."""

import tq


@tq.handler("noop")
def noop(payload: bytes) -> bytes:
    return payload
