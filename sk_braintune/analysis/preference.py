"""Semantic preference: do a model's layers place synonyms closer than near-homophones?

Per layer, the mean cosine similarity of synonym word pairs minus that of near-homophone pairs
(words that sound alike but mean different things). Word representations come from each word's
own audio, mean-pooled over its real frames (:func:`word_representations`). A positive value
means the layer groups words by meaning more than by sound.

The analysis works on any pairs: the built-in spoken word pairs
(:func:`sk_braintune.builtin.make_word_pairs`, whose near-homophones come from
:func:`sk_braintune.builtin.near_homophone_pairs`) are one source of them.
"""

from __future__ import annotations

import numpy as np

from .._docs import fill_doc

__all__ = ["word_representations", "semantic_preference"]


@fill_doc
def word_representations(source, word_pairs, *, batch_size=32, device="auto", verbose=False):
    """Per-layer representation of each word from its own audio (mean over voices).

    Parameters
    ----------
    %(model_source)s
    word_pairs : sklearn.utils.Bunch
        Spoken words: ``audio`` (list of 1-D 16 kHz clips) and ``audio_word`` (the word each
        clip says), e.g. from :func:`sk_braintune.builtin.make_word_pairs`.
    batch_size : int, default=32
        Clips per forward pass.
    %(device)s
    %(verbose)s

    Returns
    -------
    representations : dict of str to ndarray of shape (n_layers, dim)
    """
    from ..features.extractor import pooled_layer_features

    feats = pooled_layer_features(source, word_pairs.audio, batch_size=batch_size, device=device,
                                  verbose=verbose)
    owners = np.asarray(word_pairs.audio_word)
    return {w: feats[owners == w].mean(axis=0) for w in dict.fromkeys(owners)}


def _lookup(features, words):
    """(n_words, n_layers, dim) array of the given words."""
    if callable(features) and not isinstance(features, dict):
        out = np.asarray(features(list(words)), dtype=np.float64)
    else:
        missing = [w for w in words if w not in features]
        if missing:
            raise KeyError(f"no representation for words {missing[:10]}")
        out = np.stack([np.asarray(features[w], dtype=np.float64) for w in words])
    if out.ndim == 2:
        out = out[:, None, :]
    if out.ndim != 3:
        raise ValueError("word representations must be (dim,) or (n_layers, dim) per word")
    return out


def _pair_cosines(features, pairs):
    """Cosine similarity of each pair per layer: (n_pairs, n_layers)."""
    pairs = [(p[0], p[1]) for p in pairs]
    if not pairs:
        raise ValueError("no pairs given")
    a = _lookup(features, [p[0] for p in pairs])
    b = _lookup(features, [p[1] for p in pairs])
    norms = np.linalg.norm(a, axis=2) * np.linalg.norm(b, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, np.einsum("pld,pld->pl", a, b) / norms, 0.0)


def semantic_preference(features, synonym_pairs, homophone_pairs):
    """Per layer: mean cosine similarity of synonyms minus that of near-homophones.

    Parameters
    ----------
    features : dict of str to ndarray of shape (n_layers, dim) or (dim,), or callable
        Word representations (e.g. :func:`word_representations`), or a function mapping a list
        of words to an array of shape (n_words, n_layers, dim).
    synonym_pairs : sequence of (str, str)
        Pairs of words that mean the same (extra items per pair are ignored).
    homophone_pairs : sequence of (str, str) or (str, str, float)
        Pairs of words that sound alike but mean different things, e.g. from
        :func:`sk_braintune.builtin.near_homophone_pairs` (its third item, the phone distance,
        is ignored).

    Returns
    -------
    table : pandas.DataFrame
        One row per layer (index ``layer``), columns ``synonym_similarity``,
        ``homophone_similarity``, ``preference`` (their difference) and ``sem`` (standard error
        of the difference, pairs treated as independent).
    """
    import pandas as pd

    syn = _pair_cosines(features, synonym_pairs)
    hom = _pair_cosines(features, homophone_pairs)
    sem = np.sqrt(syn.var(axis=0, ddof=1) / len(syn) + hom.var(axis=0, ddof=1) / len(hom)) \
        if len(syn) > 1 and len(hom) > 1 else np.full(syn.shape[1], np.nan)
    table = pd.DataFrame({"synonym_similarity": syn.mean(axis=0),
                          "homophone_similarity": hom.mean(axis=0)})
    table["preference"] = table["synonym_similarity"] - table["homophone_similarity"]
    table["sem"] = sem
    table.index.name = "layer"
    return table
