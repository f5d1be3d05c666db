"""``python -m sk_braintune`` runs the command line (same as ``sk-braintune``)."""

import sys

from .commands.cli import main

sys.exit(main())
