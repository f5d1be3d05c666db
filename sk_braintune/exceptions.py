"""The project's error and warning classes, in one place.

Every class is importable from here; the modules that raised or issued them before
(``sk_braintune.study``, ``sk_braintune.datasets``) re-export them, so older imports keep working.
This module imports nothing heavy: it sits at the bottom of the package's layers.
"""

from __future__ import annotations

__all__ = ["StudyInputError", "SettingsError", "NaNVoxelWarning", "StoryLeakWarning",
           "CheckpointError", "JobError", "StaleSummaryError"]


class StudyInputError(ValueError):
    """A user-facing input problem of a command (wrong path, missing participant, bad option).

    The command line prints its message on one line and exits with status 2.
    """


class SettingsError(StudyInputError):
    """A settings value or key that is not valid (wrong type, not an allowed value, unknown key).

    Raised when settings objects are built from a ``--config`` TOML file or from keyword
    arguments; the message names the key, the expected type and the allowed values.
    """


class NaNVoxelWarning(UserWarning):
    """Some voxels hold NaN or inf in the responses; says how many and what the loader did."""


class StoryLeakWarning(UserWarning):
    """A cross-validation split puts rows of one story on both sides (train and held out).

    Neighbouring TRs of a story are correlated (autocorrelation, the HRF), so such a split
    scores the model on data it has nearly seen: scores are inflated. Use a story-grouped
    splitter (``GroupKFold``, ``LeaveOneGroupOut``) with ``groups``.
    """


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed: it is damaged, or of another configuration or data.

    The message names the file; delete it (``sk-braintune tune --overwrite``) or use another
    ``checkpoint_dir`` to start afresh.
    """


class JobError(RuntimeError):
    """A job of :func:`~sk_braintune.executors.run_jobs` failed (the message names its log).

    Parameters
    ----------
    message : str
    index : int
        Position of the failed job in ``jobs``.
    stderr : pathlib.Path or None, default=None
        The job's stderr log.

    Attributes
    ----------
    index : int
        Position of the failed job in ``jobs``.
    stderr : pathlib.Path or None
        The job's stderr log (None for ``executor="none"``).
    """

    def __init__(self, message, index, stderr=None):
        super().__init__(message)
        self.index = index
        self.stderr = stderr


class StaleSummaryError(RuntimeError):
    """A stored summary of the built-in dataset's stimulus features that this machine does not
    reproduce bit for bit (another espeak-ng or MiniLM build).

    The dataset is then built from every story instead of only the ones a run uses.
    """
