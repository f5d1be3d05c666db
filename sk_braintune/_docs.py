"""Shared parameter documentation (a ``docdict``, as nilearn and MNE keep one).

A parameter documented the same way in several places is written once here and filled into the
docstrings by :func:`fill_doc`: a line holding only ``%(name)s`` becomes ``docdict["name"]``,
indented like the placeholder::

    @fill_doc
    def pooled_layer_features(source, audio, layers="all", *, device="auto"):
        '''...

        Parameters
        ----------
        %(model_source)s
        %(device)s
        '''

Only the standard library is imported; every subpackage may use it.
"""

from __future__ import annotations

import re

__all__ = ["docdict", "fill_doc"]

docdict = {}
"""Parameter name (or variant) -> its numpydoc entry (the ``name : type`` line and the text)."""

docdict["model_source"] = """
source : str, os.PathLike, AudioBackbone or fitted estimator
    Speech model: a Hugging Face name or local directory, a loaded
    :class:`~sk_braintune.models.AudioBackbone`, or a fitted estimator holding one in
    ``backbone_`` (a ``BrainTuner`` or ``SpeechFeatureExtractor``, usually wrapped in
    ``sklearn.frozen.FrozenEstimator``); a fitted model's backbone is copied, never modified."""

docdict["layers"] = """
layers : "all" or sequence of int, default="all"
    ``hidden_states`` indices: 0 = input embeddings (input of the first transformer block),
    k = output of block k."""

docdict["batch_size"] = """
batch_size : int, default=16
    Windows per forward pass."""

docdict["device"] = """
device : str, default="auto"
    Torch device; ``"auto"`` uses CUDA when present, else the CPU."""

docdict["verbose"] = """
verbose : bool, default=False
    Show a progress bar."""

docdict["random_state"] = """
random_state : int, RandomState instance or None, default=None
    Seed of the random draws; an int gives the same result at every call."""

docdict["groups"] = """
groups : array-like of shape (n_samples,), default=None
    Story label per sample (row). Rows of one story are one contiguous run in time order."""

docdict["groups_rows"] = """
groups : array-like of shape (n_trs,)
    Story of each row."""

docdict["delays"] = """
delays : sequence of int, default=(1, 2, 3, 4)
    FIR delays in TRs. Positive values look back in time; 0 keeps the undelayed features;
    negative values look ahead."""

docdict["input_features"] = """
input_features : array-like of str or None, default=None
    Ignored: the output names depend only on the fitted model (scikit-learn's API)."""

docdict["splitter_args"] = """
X, y, groups : object, default=None
    Ignored; present for scikit-learn's splitter API."""

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", flags=re.MULTILINE)


def fill_doc(obj):
    """Fill the ``%(name)s`` lines of ``obj``'s docstring from :data:`docdict`.

    Parameters
    ----------
    obj : function or class
        Its ``__doc__`` is rewritten in place; each placeholder must stand alone on its line.

    Returns
    -------
    obj : function or class
        The same object (so that ``fill_doc`` works as a decorator).

    Raises
    ------
    KeyError
        For a placeholder that :data:`docdict` lacks (the message names it and the object).
    """
    doc = obj.__doc__
    if not doc:
        return obj

    def replace(match):
        indent, name = match.groups()
        try:
            entry = docdict[name]
        except KeyError:
            raise KeyError(f"docstring of {getattr(obj, '__qualname__', obj)!r} uses "
                           f"%({name})s, which docdict lacks; known: {sorted(docdict)}") from None
        return "\n".join(indent + line if line else line
                         for line in entry.strip("\n").splitlines())

    obj.__doc__ = _PLACEHOLDER.sub(replace, doc)
    return obj
