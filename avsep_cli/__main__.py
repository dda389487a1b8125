"""`python -m avsep_cli` runs the same command-line interface as the `avsep` console script."""

import sys

from avsep_cli.cli import main

sys.exit(main())
