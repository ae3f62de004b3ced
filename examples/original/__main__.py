"""`python -m examples.original`: the Workspace as a process (see examples/config.py)."""

import sys

from examples.original.app import API
from examples.serving import main

sys.exit(main(API))
