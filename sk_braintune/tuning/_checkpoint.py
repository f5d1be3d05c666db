"""Atomic per-epoch checkpoints and the fingerprints that decide whether one may be resumed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .._hashing import new_hasher, update_array, update_json
from .._utils import atomic_write_bytes
from ..exceptions import CheckpointError
from ..windows import is_audio_windows

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def windows_fingerprint(X):
    """Hash of the windows alone (see :func:`data_fingerprint`)."""
    h = new_hasher("blake2b", 16)
    _hash_windows(h, X)
    return h.hexdigest()


def data_fingerprint(X, y, groups, participants=None):
    """Hash of the training data: windows (their samples), targets, story and participant labels.

    For an :class:`~sk_braintune.windows.AudioWindows` the stored waveforms and window ends are
    hashed (cheap), for arrays their bytes.

    Returns
    -------
    digest : str
    """
    h = new_hasher("blake2b", 16)
    _hash_windows(h, X)
    update_array(h, y, _ARRAY_HEADER)
    if groups is not None:
        h.update("\0".join(map(str, np.asarray(groups).tolist())).encode())
    if participants is not None:  # absent for one participant: the hash stays as it was
        h.update(b"participants")
        update_array(h, np.asarray(participants, dtype=np.int64), header=None)
    return h.hexdigest()


# repr((shape, str(dtype))): the header these fingerprints have always had
_ARRAY_HEADER = "({shape!r}, {dtype!r})"


def _hash_windows(h, X):
    if is_audio_windows(X):
        h.update(repr((X.shape, X.window_samples)).encode())
        for story in sorted(X.waveforms):
            h.update(str(story).encode())
            update_array(h, X.waveforms[story], header=None)
        update_array(h, X.ends, header=None)
        h.update("\0".join(map(str, X.stories)).encode())
    else:
        update_array(h, X, _ARRAY_HEADER)


def config_fingerprint(params, backbone_fingerprint):
    """Hash of the estimator's parameters that shape training, plus the initial backbone's hash."""
    h = update_json(new_hasher("blake2b", 16), {k: repr(v) for k, v in sorted(params.items())})
    h.update(str(backbone_fingerprint).encode())
    return h.hexdigest()


def save_checkpoint(directory, state):
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (temporary file, then rename).

    A crash mid-write leaves the previous checkpoint intact.
    """
    import torch

    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(Path(directory) / CHECKPOINT_NAME, buffer.getvalue())


def load_checkpoint(directory):
    """Load ``directory/checkpoint.pt`` onto the CPU, or return None when there is none."""
    import torch

    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    # our own file (contains numpy RNG states and history): full unpickling is needed
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: "
                              f"{exc}); it is damaged. Delete it to start afresh, or use "
                              "another checkpoint_dir.") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by an incompatible version of sk_braintune; "
                              "delete it or use another checkpoint_dir.")
    return state
