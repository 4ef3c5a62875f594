"""``python -m tq``: the ``tq`` command line."""

from tq.cli import main

main()
