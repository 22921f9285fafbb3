"""`python -m ctfhost_client`: the `ctfhost` command."""

import sys

from ctfhost_client.cli import main

sys.exit(main())
