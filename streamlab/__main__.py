"""`python -m streamlab` runs the command-line interface."""

import sys

from streamlab.cli import main

raise SystemExit(main(sys.argv[1:]))
