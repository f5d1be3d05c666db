"""The frozen-layer cache that BrainTuner fits with ``trainable_layers`` can share.

With ``trainable_layers=k`` only the top ``k`` blocks train, so the hidden states entering them
are the same in every epoch, and in every fit of the same model on the same windows (a
brain-tuned model and its controls, a grid search over learning rates). A
:class:`FrozenLayerCache` holds those hidden states; passing the same instance to several
tuners (``BrainTuner(..., frozen_layer_cache=cache)``) computes them once. It is an explicit
object: nothing is kept between fits that were not given one.
"""

from __future__ import annotations

__all__ = ["FrozenLayerCache"]

# the latest entry up to this size is kept for the next fit
DEFAULT_MAX_BYTES = 2 * 1024 ** 3


class FrozenLayerCache:
    """Hidden states of the frozen lower layers, kept for the next fit on the same windows.

    Holds one entry (the latest): the key identifies the model's weights, the windows, the first
    trainable layer, the input length and the precision, so a fit that differs in any of them
    recomputes. Entries larger than ``max_bytes`` are not kept.

    ``clone`` (and ``copy.deepcopy``) return the same instance, so that the clones made by
    ``GridSearchCV`` or ``cross_validate`` share it as the tuners given it do; pickling stores an
    empty cache (the hidden states are a by-product, not part of a fitted model).

    Parameters
    ----------
    max_bytes : int, default=2 GiB
        Largest entry kept.

    Examples
    --------
    >>> from sk_braintune.tuning import BrainTuner, FrozenLayerCache  # doctest: +SKIP
    >>> cache = FrozenLayerCache()  # doctest: +SKIP
    >>> params = dict(trainable_layers=1, frozen_layer_cache=cache)  # doctest: +SKIP
    >>> tuned = BrainTuner(model, **params).fit(X, y)  # doctest: +SKIP
    >>> control = BrainTuner(model, **params).fit(X, y_permuted)  # reuses it  # doctest: +SKIP
    """

    def __init__(self, max_bytes=DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries = {}

    def get(self, key):
        """The ``(hidden, frame_mask)`` kept for ``key``, or None.

        Parameters
        ----------
        key : tuple
            Model fingerprint, windows fingerprint, first trainable layer, input samples,
            precision.

        Returns
        -------
        entry : tuple of (torch.Tensor of shape (n_windows, F, D), torch.Tensor of shape \
(n_windows, F)) or None
        """
        return self._entries.get(key)

    def put(self, key, hidden, frame_mask):
        """Keep ``(hidden, frame_mask)`` for ``key`` in place of the previous entry.

        Parameters
        ----------
        key : tuple
        hidden : torch.Tensor of shape (n_windows, F, D)
        frame_mask : torch.Tensor of shape (n_windows, F), bool
        """
        self._entries.clear()
        if hidden.element_size() * hidden.nelement() <= self.max_bytes:
            self._entries[key] = (hidden, frame_mask)

    def clear(self):
        """Forget the kept hidden states (frees their memory)."""
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def __deepcopy__(self, memo):
        return self  # shared, never copied: see the class docstring

    def __getstate__(self):
        return {"max_bytes": self.max_bytes, "_entries": {}}

    def __repr__(self):
        return f"FrozenLayerCache(max_bytes={self.max_bytes})"
