"""``python -m bench.scaling``: the scaling proof (``bench.scaling.cli``)."""

import sys

from bench.scaling.cli import main

sys.exit(main())
