"""On-disk cache of extracted features.

Extraction is by far the slowest step of an encoding analysis, and a grid search over ridge
parameters would otherwise re-run the speech model on every fold and candidate. Entries are keyed
by everything that decides the numbers (model fingerprint, layers, pooling, ... and a hash of the
audio content), so a changed model or input can never be served stale features.

File format: an 8-byte magic, a 32-byte BLAKE2b digest of the payload, then the payload (an
``.npz`` archive). Writes are atomic (temporary file, then rename). A truncated or corrupt entry
fails the digest check, is reported with a warning, deleted, and recomputed by the caller.

Several processes (joblib workers, Slurm jobs of one array) may fill one cache directory at
once: a reader never sees a half-written entry (the rename is atomic), writes and deletions of
an entry hold its lock file (``<key>.npz.lock``, a :mod:`filelock` lock, which works across
processes and on shared file systems that support ``flock``), and :meth:`FeatureCache.locked`
lets a caller make its read-compute-write of an entry exclusive, so that concurrent jobs
neither lose each other's additions nor compute the same features twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from .._hashing import digest_arrays, digest_bytes, digest_json, new_hasher
from .._utils import atomic_write_bytes

__all__ = ["FeatureCache", "hash_arrays", "hash_windows", "key_of"]

_MAGIC = b"SKBTFC01"
_DIGEST_SIZE = 32


def _digest(data):
    return bytes.fromhex(digest_bytes(data, "blake2b", digest_size=_DIGEST_SIZE))


def hash_arrays(*arrays):
    """Content hash of arrays (dtype, shape and bytes).

    Parameters
    ----------
    *arrays : array-like

    Returns
    -------
    digest : str
        Hex digest.
    """
    return digest_arrays(*arrays, digest_size=20, header="{dtype}{shape}")


def hash_windows(windows):
    """Content hash of an :class:`~sk_braintune.windows.AudioWindows` without materialising it.

    Hashes each used story's stored waveform once, plus the window ends and length.

    Parameters
    ----------
    windows : AudioWindows

    Returns
    -------
    digest : str
    """
    h = new_hasher("blake2b", 20)
    h.update(f"{windows.window_samples}/{windows.sample_rate}".encode())
    for story in sorted(set(windows.stories)):
        h.update(hash_arrays(windows.waveforms[story]).encode())
    h.update(hash_arrays(windows.ends).encode())
    h.update(json.dumps([str(s) for s in windows.stories]).encode())
    return h.hexdigest()


def key_of(**parts):
    """Stable hash of a dict of JSON-serialisable key parts.

    Parameters
    ----------
    **parts
        Values that decide the cached numbers.

    Returns
    -------
    key : str
    """
    return digest_json(parts, "blake2b", digest_size=20, default=str)


class FeatureCache:
    """A directory of checksummed ``.npz`` entries.

    Parameters
    ----------
    directory : str or os.PathLike
        Created on first write.

    Examples
    --------
    >>> cache = FeatureCache(tmp_path)  # doctest: +SKIP
    >>> cache.put("abc", features=np.zeros((2, 3)))  # doctest: +SKIP
    >>> cache.get("abc")["features"].shape  # doctest: +SKIP
    (2, 3)
    """

    def __init__(self, directory):
        self.directory = Path(directory)

    def path(self, key):
        """File of the entry ``key``.

        Parameters
        ----------
        key : str

        Returns
        -------
        path : pathlib.Path
        """
        return self.directory / f"{key}.npz"

    def _lock(self, key):
        from filelock import FileLock

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # one lock object per file in this process (is_singleton), so that nested use of the
        # same entry's lock (locked() around put()) re-enters instead of deadlocking
        return FileLock(f"{path}.lock", is_singleton=True)

    @contextlib.contextmanager
    def locked(self, key, timeout=-1):
        """Hold the entry's lock: no other process writes or deletes it meanwhile.

        Parameters
        ----------
        key : str
        timeout : float, default=-1
            Seconds to wait for the lock (-1: as long as it takes); past it,
            ``filelock.Timeout`` is raised.

        Yields
        ------
        None
            The lock is held inside the ``with`` block.

        Examples
        --------
        >>> with cache.locked(key):  # doctest: +SKIP
        ...     entry = cache.get(key)
        ...     if entry is None:
        ...         cache.put(key, features=compute())
        """
        with self._lock(key).acquire(timeout=timeout):
            yield self

    def get(self, key):
        """Read an entry.

        Parameters
        ----------
        key : str

        Returns
        -------
        arrays : dict of str to ndarray, or None
            None when the entry is missing or corrupt (a corrupt entry is deleted, with a
            warning).
        """
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        problem = _problem(data)
        if problem is None:
            try:
                with np.load(io.BytesIO(data[_HEADER:]), allow_pickle=False) as npz:
                    return {name: npz[name] for name in npz.files}
            except Exception as exc:  # noqa: BLE001 - any unreadable payload is a corrupt entry
                problem = f"unreadable payload ({exc})"
        warnings.warn(f"Feature cache entry {path} is corrupt: {problem}; deleting it and "
                      "recomputing.", UserWarning, stacklevel=2)
        with self._lock(key):
            # another process may have replaced it with a good entry since it was read
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                current = None
            if current is not None and _problem(current) is not None:
                path.unlink(missing_ok=True)
        return None

    def put(self, key, **arrays):
        """Write an entry atomically, holding its lock.

        Parameters
        ----------
        key : str
        **arrays : ndarray
            Arrays to store (no object arrays).
        """
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
        with self._lock(key):
            atomic_write_bytes(self.path(key), _MAGIC + _digest(payload) + payload)


_HEADER = len(_MAGIC) + _DIGEST_SIZE


def _problem(data):
    """Why ``data`` is not a valid entry, or None."""
    if len(data) < _HEADER or data[:len(_MAGIC)] != _MAGIC:
        return "bad header (truncated or not a cache file)"
    if _digest(data[_HEADER:]) != data[len(_MAGIC):_HEADER]:
        return "checksum mismatch (truncated or corrupted)"
    return None
