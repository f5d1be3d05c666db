"""Named, timed stages for library pipelines: logged, never printed.

A pipeline (:func:`sk_braintune.study.run_braintuning_study`,
:func:`sk_braintune.evaluation.evaluate_listener`) wraps each of its stages in
``with stages(name):``. Any callable that returns a context manager for a name works; commands
pass one that prints (``sk_braintune.commands.results.StageTimer``), and without one the library
uses :class:`LoggedStages`, which logs the start and the duration of each stage at INFO level.
"""

from __future__ import annotations

import contextlib
import logging
import time

__all__ = ["LoggedStages", "prefixed"]

logger = logging.getLogger("sk_braintune.stages")


class LoggedStages:
    """Time named stages and log them (INFO), keeping the times.

    Parameters
    ----------
    log : logging.Logger, optional
        Where the stage messages go (``sk_braintune.stages`` by default).

    Attributes
    ----------
    times : dict of str to float
        Seconds of each finished stage, by name.

    Examples
    --------
    >>> from sk_braintune._stages import LoggedStages
    >>> stages = LoggedStages()
    >>> with stages("fit"):
    ...     pass
    >>> list(stages.times)
    ['fit']
    """

    def __init__(self, log=None):
        self.log = log
        self.times = {}

    @contextlib.contextmanager
    def __call__(self, name):
        log = self.log or logger
        log.info("%s ...", name)
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0
        log.info("%s: done in %.1f s", name, self.times[name])


def prefixed(stages, prefix):
    """A stage callable that puts ``prefix`` before every name given to ``stages``.

    Parameters
    ----------
    stages : callable
        ``stages(name)`` returns a context manager.
    prefix : str
        e.g. ``"P01: "``; ``""`` returns ``stages`` itself.

    Returns
    -------
    stages : callable
    """
    if not prefix:
        return stages
    return lambda name: stages(prefix + name)
