"""``tq bench``: a load generator for tq (like redis-benchmark), one small module per scenario.

Scenarios: enqueue, drain, latency, steady (open-loop offered rate), memory, restart; the
runner spawns a fresh fsync-durable broker per scenario and ``python -m tq worker
tq.bench.tasks`` workers. Kept import-light: the workers import ``tq.bench.tasks``.
"""
