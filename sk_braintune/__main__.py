"""``python -m sk_braintune`` runs the command line (same as ``sk-braintune``)."""

import sys

from .cli import main

sys.exit(main())
