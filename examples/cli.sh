#!/usr/bin/env bash
# A CLI session against `make run` (or `tq dev`: a broker and a worker of tq.worker.examples),
# with `tq` on PATH (`source .venv/bin/activate`); set TQ_BROKER_URL for another broker.
set -euo pipefail

tq submit echo '{"x": 1}' --wait                         # prints {"x": 1}
id=$(tq submit sleep '{"seconds": 0.2}' --priority 200)  # prints the task id
tq status "$id"
tq submit echo '{"n": 1}' --count 50 --queue bulk        # no worker serves "bulk" yet
tq queues
tq list --queue bulk --limit 3
tq cancel "$(tq submit echo '{}' --delay 3600)"
tq -o json stats
tq workers
