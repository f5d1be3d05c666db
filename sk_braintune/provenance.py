"""Provenance: content fingerprints of arrays, files, models and datasets, and voxel selections.

A results folder's manifest records these so that two runs can be compared and a run's inputs
identified; the study and the commands use them alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._hashing import new_hasher, update_array, update_file

__all__ = ["fingerprint_arrays", "fingerprint_files", "fingerprint_model", "voxel_selection",
           "dataset_fingerprints"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".model")


def _hasher():
    return new_hasher("blake2b", 16)


def fingerprint_arrays(arrays):
    """Hash of arrays (a mapping name -> array, e.g. story -> responses, or one array).

    Parameters
    ----------
    arrays : ndarray or mapping of str to array-like
        Mapping keys are hashed with the values, in sorted order (the fingerprint does not
        depend on the mapping's order). Lazily loaded arrays are read chunk by chunk along
        their first axis.

    Returns
    -------
    fingerprint : str
        ``"blake2b:<32 hex digits>"``.
    """
    hasher = _hasher()
    if hasattr(arrays, "keys"):
        items = sorted(arrays.items(), key=lambda item: str(item[0]))
    else:
        items = [("", arrays)]
    for key, value in items:
        hasher.update(str(key).encode() + b"\0")
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1 and not isinstance(value, np.ndarray):
            # h5py datasets or memory maps: hash in slabs, never the whole array at once
            hasher.update(f"{np.dtype(value.dtype).str}{tuple(shape)}".encode())
            step = max(1, 2 ** 26 // max(1, int(np.prod(shape[1:])) * 4))
            for start in range(0, shape[0], step):
                update_array(hasher, value[start:start + step], header=None)
        else:
            update_array(hasher, np.asarray(value), header="{dtype_str}{shape}")
    return "blake2b:" + hasher.hexdigest()


def fingerprint_files(paths):
    """Hash of the contents of files, read in 1 MiB blocks.

    Parameters
    ----------
    paths : iterable of str or pathlib.Path
        Hashed in sorted order, each with its file name.

    Returns
    -------
    fingerprint : str
        ``"blake2b:<32 hex digits>"``.
    """
    hasher = _hasher()
    for path in sorted(Path(p) for p in paths):
        hasher.update(path.name.encode() + b"\0")
        update_file(hasher, path)
    return "blake2b:" + hasher.hexdigest()


def fingerprint_model(model):
    """Fingerprint of a model: its weights files, or its state dict.

    Parameters
    ----------
    model : str, pathlib.Path, torch.nn.Module or fitted estimator
        A local model directory (its weights and config files are hashed), a hub name (not
        hashed: no local files), a torch module (its ``state_dict`` tensors are hashed) or an
        estimator holding one in ``backbone_`` (e.g. a fitted :class:`~sk_braintune.BrainTuner`).

    Returns
    -------
    fingerprint : dict
        ``source`` (what was hashed: ``"files"``, ``"state_dict"`` or ``"name"``),
        ``fingerprint`` (str, or None for a hub name) and ``name`` (the path or the class).
    """
    if isinstance(model, (str, Path)):
        path = Path(model).expanduser()
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()
                     and p.suffix in _WEIGHT_SUFFIXES]
            return {"name": str(model), "source": "files",
                    "fingerprint": fingerprint_files(files) if files else None}
        if path.is_file():
            return {"name": str(model), "source": "files",
                    "fingerprint": fingerprint_files([path])}
        return {"name": str(model), "source": "name", "fingerprint": None}
    module = getattr(model, "backbone_", model)
    state = getattr(module, "state_dict", None)
    if state is None:
        raise TypeError(f"cannot fingerprint {type(model).__name__}: expected a model "
                        "directory, a torch module or an estimator with backbone_")
    import torch

    hasher = _hasher()
    for key, tensor in sorted(state().items()):
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{key}\0{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.numel():
            hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"name": type(module).__name__, "source": "state_dict",
            "fingerprint": "blake2b:" + hasher.hexdigest()}


def voxel_selection(indices, n_voxels=None):
    """Count and hash of a voxel selection.

    Parameters
    ----------
    indices : array-like of int, shape (n_selected,)
        Selected voxel indices.
    n_voxels : int, optional
        Voxels the selection was made from.

    Returns
    -------
    selection : dict
        ``count``, ``n_voxels`` and ``fingerprint`` (of the int64 indices).
    """
    indices = np.asarray(indices, dtype=np.int64).ravel()
    return {"count": int(indices.size), "n_voxels": None if n_voxels is None else int(n_voxels),
            "fingerprint": fingerprint_arrays(indices)}


def dataset_fingerprints(data, stories=None):
    """Fingerprints of a dataset bunch's audio and responses (per participant when several).

    Parameters
    ----------
    data : sklearn.utils.Bunch
        Dataset following the sk_braintune contract.
    stories : list of str, optional
        Stories to include (default: ``data.stories``).

    Returns
    -------
    fingerprints : dict of str to str
        ``audio``, ``responses`` (of ``participants[0]``), ``repeats`` when present, and
        ``responses/<participant>`` for every participant of ``participant_data``.
    """
    stories = list(data.stories if stories is None else stories)
    out = {"audio": fingerprint_arrays({s: data.audio[s] for s in stories}),
           "responses": fingerprint_arrays({s: data.responses[s] for s in stories})}
    repeats = {s: r for s, r in (getattr(data, "repeats", None) or {}).items() if s in stories}
    if repeats:
        out["repeats"] = fingerprint_arrays(repeats)
    participant_data = getattr(data, "participant_data", None) or {}
    if len(participant_data) > 1:
        for participant, bunch in participant_data.items():
            out[f"responses/{participant}"] = fingerprint_arrays(
                {s: bunch.responses[s] for s in stories if s in bunch.responses})
    return out
