"""`python -m examples.downstream`: the DocumentStore as a process (see examples/config.py)."""

import sys

from examples.downstream.app import API
from examples.serving import main

sys.exit(main(API))
