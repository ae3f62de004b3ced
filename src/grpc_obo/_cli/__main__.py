"""`python -m grpc_obo._cli`: the `grpc-obo` command without the installed script."""

import sys

from grpc_obo._cli import main

sys.exit(main())
