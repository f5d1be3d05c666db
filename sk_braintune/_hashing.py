"""Content hashing: the one place where arrays, bytes, files and JSON-able values are digested.

Every cache key and fingerprint of the package is built from these pieces: the feature cache's
keys, the tuning checkpoints' fingerprints, the manifests' data and model fingerprints, and the
built-in datasets' cache keys. Each caller keeps its own recipe (algorithm, digest size, what it
feeds in and in which order), so the digests written before this module existed stay valid: a
hash object is fed piece by piece (``update_array``, ``update_json``, ``update_file``), and
``hasher.update(a); hasher.update(b)`` digests exactly what ``hasher.update(a + b)`` does.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["new_hasher", "update_array", "update_json", "update_file", "digest_bytes",
           "digest_json", "digest_file", "digest_arrays"]

#: block size of file reads (1 MiB)
FILE_BLOCK = 1 << 20


def new_hasher(algorithm="blake2b", digest_size=None):
    """A fresh hash object.

    Parameters
    ----------
    algorithm : {"blake2b", "sha256", ...}, default="blake2b"
        Any name :func:`hashlib.new` knows.
    digest_size : int, optional
        Bytes of a BLAKE2b digest (64 when None); not allowed for other algorithms.

    Returns
    -------
    hasher : hashlib hash object
    """
    if algorithm == "blake2b":
        return hashlib.blake2b(digest_size=64 if digest_size is None else int(digest_size))
    if digest_size is not None:
        raise ValueError(f"digest_size applies to blake2b only, not to {algorithm!r}")
    return hashlib.new(algorithm)


def update_array(hasher, array, header="{dtype}{shape}"):
    """Feed an array to ``hasher``: a header naming its dtype and shape, then its bytes.

    Parameters
    ----------
    hasher : hashlib hash object
    array : array-like
        Its C-order bytes are hashed (no copy when it is already C-contiguous).
    header : str or None, default="{dtype}{shape}"
        Format string over ``dtype`` (``str(array.dtype)``, e.g. ``float32``), ``dtype_str``
        (``array.dtype.str``, e.g. ``<f4``) and ``shape`` (the shape tuple), hashed before
        the bytes; None hashes the bytes alone.

    Returns
    -------
    hasher : the same hash object
    """
    array = np.ascontiguousarray(array)
    if header is not None:
        hasher.update(header.format(dtype=str(array.dtype), dtype_str=array.dtype.str,
                                    shape=array.shape).encode())
    if array.size:
        hasher.update(memoryview(array.reshape(-1).view(np.uint8)))
    return hasher


def _json_text(value, default):
    return json.dumps(value, sort_keys=True, default=default)


def update_json(hasher, value, default=None):
    """Feed a JSON-able value to ``hasher`` as ``json.dumps(value, sort_keys=True)``.

    Parameters
    ----------
    hasher : hashlib hash object
    value : JSON-able
    default : callable, optional
        ``json.dumps``'s ``default`` (e.g. ``str``) for values JSON does not know.

    Returns
    -------
    hasher : the same hash object
    """
    hasher.update(_json_text(value, default).encode())
    return hasher


def update_file(hasher, path, block_size=FILE_BLOCK):
    """Feed a file's bytes to ``hasher``, read block by block.

    Parameters
    ----------
    hasher : hashlib hash object
    path : str or pathlib.Path
    block_size : int, default=1 MiB

    Returns
    -------
    hasher : the same hash object
    """
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            hasher.update(block)
    return hasher


def _hex(hasher, length):
    text = hasher.hexdigest()
    return text if length is None else text[:length]


def digest_bytes(data, algorithm="sha256", *, digest_size=None, length=None):
    """Hex digest of bytes (a str is UTF-8 encoded).

    Parameters
    ----------
    data : bytes or str
    algorithm : str, default="sha256"
    digest_size : int, optional
        BLAKE2b only (see :func:`new_hasher`).
    length : int, optional
        Keep the first ``length`` hex digits.

    Returns
    -------
    digest : str
    """
    hasher = new_hasher(algorithm, digest_size)
    hasher.update(data.encode() if isinstance(data, str) else data)
    return _hex(hasher, length)


def digest_json(value, algorithm="sha256", *, digest_size=None, length=None, default=None):
    """Hex digest of ``json.dumps(value, sort_keys=True)``: a key of JSON-able parts.

    Parameters
    ----------
    value : JSON-able
    algorithm : str, default="sha256"
    digest_size : int, optional
        BLAKE2b only.
    length : int, optional
        Keep the first ``length`` hex digits.
    default : callable, optional
        ``json.dumps``'s ``default`` (e.g. ``str``).

    Returns
    -------
    digest : str
    """
    return _hex(update_json(new_hasher(algorithm, digest_size), value, default), length)


def digest_file(path, algorithm="sha256", *, block_size=FILE_BLOCK):
    """Hex digest of a file's bytes (e.g. its SHA-256, as published for downloads).

    Parameters
    ----------
    path : str or pathlib.Path
    algorithm : str, default="sha256"
    block_size : int, default=1 MiB

    Returns
    -------
    digest : str
    """
    return update_file(new_hasher(algorithm), path, block_size).hexdigest()


def digest_arrays(*arrays, algorithm="blake2b", digest_size=20, header="{dtype}{shape}"):
    """Hex digest of arrays, each fed by :func:`update_array`.

    Parameters
    ----------
    *arrays : array-like
    algorithm : str, default="blake2b"
    digest_size : int, optional, default=20
        BLAKE2b only.
    header : str or None, default="{dtype}{shape}"
        See :func:`update_array`.

    Returns
    -------
    digest : str
    """
    hasher = new_hasher(algorithm, digest_size if algorithm == "blake2b" else None)
    for array in arrays:
        update_array(hasher, array, header)
    return hasher.hexdigest()
