"""`python -m examples.vault`: the KeyVault as a process (see examples/config.py)."""

import sys

from examples.serving import main
from examples.vault.app import API

sys.exit(main(API))
