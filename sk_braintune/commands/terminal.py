"""What the commands show on the terminal besides their own lines: the library's log messages."""

from __future__ import annotations

import logging
import sys

__all__ = ["show_library_messages"]


def show_library_messages(verbose=True):
    """Send the package's INFO log messages (dataset and tuning progress) to the terminal.

    Library modules log instead of printing; the commands call this so that a verbose run
    shows those messages. Calling it again changes nothing.

    Parameters
    ----------
    verbose : bool, default=True
        False: leave logging as it is.
    """
    if not verbose:
        return
    logger = logging.getLogger("sk_braintune")
    if not any(getattr(h, "_sk_braintune_terminal", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._sk_braintune_terminal = True
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
