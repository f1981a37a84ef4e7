"""``python -m messagine``: the command line (see messagine.cli)."""

import sys

from messagine.cli import main

sys.exit(main())
