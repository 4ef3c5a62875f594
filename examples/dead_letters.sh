#!/usr/bin/env bash
# Dead letters from the CLI, against `make run` (or `tq dev`: a broker and a worker of
# tq.worker.examples), with `tq` on PATH; set TQ_BROKER_URL for another broker.
set -euo pipefail

tq submit json '{oops' --wait || echo "exit $?: rejected, so in dead letter at once"
tq dead-letters --type json              # each with why it failed
tq list --state dead_letter --limit 5    # the error column shows it too
tq retry --type json                     # every json dead letter: pending again
tq submit json '{oops' --wait || true
tq purge --type json --state dead_letter --yes   # counts, then deletes what it counted
