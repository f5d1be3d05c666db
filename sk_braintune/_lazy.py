"""PEP 562 lazy exports shared by the package's ``__init__`` modules.

Heavy dependencies (torch, transformers, scikit-learn, SciPy) load only when a name that needs
them is first used, so ``import sk_braintune`` stays fast.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package, exports):
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` for lazily imported names.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : dict of str to str
        Public name -> module defining it, relative to ``package`` (``"windows"`` or
        ``".windows"``) or absolute (``"sk_braintune.windows"``).

    Returns
    -------
    getattr_, dir_, all_ : callable, callable, list of str
        To be bound to ``__getattr__``, ``__dir__`` and ``__all__``.
    """
    def __getattr__(name):
        try:
            module_name = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if not module_name.startswith((".", "sk_braintune")):
            module_name = "." + module_name
        value = getattr(importlib.import_module(module_name, package), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__, sorted(exports)
