"""``python -m bench.chaos [--small] [--seed N] ...``; see ``bench.chaos.run``."""

from bench.chaos.run import main

raise SystemExit(main())
