"""Control targets for brain-tuning.

Every effect of brain-tuning is a difference between a model tuned on real fMRI and a model tuned
the same way on targets that keep the fMRI's statistics but not its relation to the stimulus.
These builders make such targets; pass them to :meth:`BrainTuner.fit` as ``y``.

- :func:`other_story_targets`: each story is paired with another story's responses (real brain
  data, same voxels, wrong stimulus).
- :func:`block_permuted_targets`: the story's own responses, shuffled in blocks of ``block_size``
  TRs, each block moved far from where it was (keeps the marginal distribution and the
  within-block autocorrelation, breaks the stimulus alignment).
- :func:`phase_randomized_targets`: surrogate responses with each story's power spectrum (hence
  every voxel's autocorrelation) and the voxels' cross-spectra, but random Fourier phases: a
  generic-tuning control, noise with the statistics of fMRI and no stimulus in it.
- :func:`representation_targets`: another model's features (e.g. a language model's, for the
  "LM-tuned" baseline) made into well-scaled targets.

Only NumPy is imported at module level.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..preprocessing import zscore_per_story

__all__ = ["other_story_targets", "block_permuted_targets", "phase_randomized_targets",
           "representation_targets"]


def _as_random_state(random_state):
    from sklearn.utils import check_random_state

    return check_random_state(random_state)


def _match_length(responses, n_trs):
    """Crop ``responses`` to ``n_trs`` rows, or wrap it around (tile) when it is shorter."""
    n_source = responses.shape[0]
    if n_source >= n_trs:
        return responses[:n_trs].copy()
    return responses[np.arange(n_trs) % n_source].copy()


def _story_rows(groups, n_trs):
    """Story names (in order of first appearance) and the row indices of each.

    ``groups=None`` is one story named ``"y"`` holding every row.
    """
    if groups is None:
        return ["y"], [np.arange(n_trs)]
    groups = np.asarray(groups)
    if groups.shape != (n_trs,):
        raise ValueError(f"groups must have shape ({n_trs},), got {groups.shape}")
    names = list(dict.fromkeys(groups.tolist()))
    return names, [np.flatnonzero(groups == g) for g in names]


def other_story_targets(responses_by_story, mapping=None, random_state=None):
    """Give each story the fMRI responses recorded for a different story.

    Parameters
    ----------
    responses_by_story : dict of str to ndarray of shape (n_trs_story, n_voxels)
        Responses per story (e.g. ``dataset.responses``). At least two stories.
    mapping : dict of str to str, optional
        ``{target_story: source_story}``: the responses of ``source_story`` become the targets of
        ``target_story``. By default a random derangement (a random cyclic order of the stories,
        each story taking its successor's responses), so no story keeps its own responses.
        A mapping that sends a story to itself is an error.
    random_state : int, RandomState instance or None, default=None
        Seeds the default mapping.

    Returns
    -------
    targets : dict of str to ndarray of shape (n_trs_story, n_voxels)
        Same keys, order and row counts as ``responses_by_story``. The source responses are
        length-matched: cropped to the first ``n_trs_story`` rows when longer, wrapped around
        (rows ``i % n_source``) when shorter.
    mapping : dict of str to str
        The mapping used.

    Examples
    --------
    >>> import numpy as np
    >>> resp = {"a": np.zeros((5, 2)), "b": np.ones((3, 2))}
    >>> targets, mapping = other_story_targets(resp, random_state=0)
    >>> mapping
    {'a': 'b', 'b': 'a'}
    >>> targets["a"].shape
    (5, 2)
    """
    stories = list(responses_by_story)
    if len(stories) < 2:
        raise ValueError(
            f"other_story_targets needs at least two stories, got {len(stories)}; use "
            "block_permuted_targets for a single story."
        )
    responses = {s: np.asarray(responses_by_story[s]) for s in stories}
    n_voxels = {r.shape[1:] for r in responses.values()}
    if len(n_voxels) != 1 or any(r.ndim != 2 for r in responses.values()):
        raise ValueError("all responses must be 2-D (n_trs, n_voxels) with the same n_voxels")
    if mapping is None:
        rng = _as_random_state(random_state)
        order = [stories[i] for i in rng.permutation(len(stories))]
        mapping = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
        mapping = {s: mapping[s] for s in stories}
    else:
        mapping = dict(mapping)
        missing = [s for s in stories if s not in mapping]
        unknown = [src for src in mapping.values() if src not in responses]
        if missing or unknown:
            raise ValueError(f"mapping lacks stories {missing} or names unknown sources {unknown}")
        own = [s for s in stories if mapping[s] == s]
        if own:
            raise ValueError(f"mapping sends stories {own} to themselves; a control needs "
                             "another story's responses")
    targets = {s: _match_length(responses[mapping[s]], responses[s].shape[0]) for s in stories}
    return targets, mapping


def _far_permutation(n_blocks, min_distance, rng, n_sweeps=30):
    """Random permutation ``sigma`` with ``|sigma[i] - i| >= min_distance`` for every ``i``.

    Starts from a random cyclic shift by ``s`` in ``[min_distance, n_blocks - min_distance]``
    (valid by construction) and mixes it with random transpositions that keep every block far
    from home (a Metropolis walk over valid permutations with uniform proposals).
    """
    shift = int(rng.randint(min_distance, n_blocks - min_distance + 1))
    sigma = (np.arange(n_blocks) + shift) % n_blocks
    for _ in range(n_sweeps * n_blocks):
        a, b = rng.randint(0, n_blocks, size=2)
        if a == b:
            continue
        if abs(sigma[b] - a) >= min_distance and abs(sigma[a] - b) >= min_distance:
            sigma[a], sigma[b] = sigma[b], sigma[a]
    return sigma


def block_permuted_targets(y, block_size=15, min_distance=10, random_state=None, groups=None,
                           return_permutation=False):
    """Permute a story's responses in blocks of TRs, each block moved far from its place.

    The TRs of each story are cut into consecutive blocks of ``block_size`` TRs (the last one may
    be shorter). The blocks are reordered by a random permutation ``sigma`` (block ``i`` goes to
    block position ``sigma[i]``) with ``|sigma[i] - i| >= min_distance`` for every block, and
    concatenated. The result is a row permutation of ``y``: the marginal distribution of every
    voxel is unchanged, autocorrelation within blocks is kept, and the stimulus alignment is gone.

    Parameters
    ----------
    y : ndarray of shape (n_trs, n_targets) or (n_trs,)
        Responses of one story, or of several stories when ``groups`` is given.
    block_size : int, default=15
        TRs per block (15 TRs = 30 s, the paper's control).
    min_distance : int, default=10
        Minimum displacement of every block, in blocks. A story needs at least
        ``2 * min_distance`` blocks (``2 * min_distance * block_size`` TRs, less up to
        ``block_size - 1`` for a partial last block); shorter stories are an error.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutation.
    groups : array-like of shape (n_trs,), optional
        Story of each TR; each story is permuted separately (blocks never cross stories).
    return_permutation : bool, default=False
        Also return the row index such that ``permuted = y[index]``.

    Returns
    -------
    permuted : ndarray, same shape and dtype as ``y``
    index : ndarray of shape (n_trs,), int64
        Only when ``return_permutation``.

    Raises
    ------
    ValueError
        When a story has fewer than ``2 * min_distance`` blocks (no such permutation exists).
    """
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if not (isinstance(block_size, numbers.Integral) and block_size >= 1):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not (isinstance(min_distance, numbers.Integral) and min_distance >= 1):
        raise ValueError(f"min_distance must be a positive int, got {min_distance!r}")
    rng = _as_random_state(random_state)
    n_trs = y.shape[0]
    names, runs = _story_rows(groups, n_trs)
    index = np.arange(n_trs)
    for name, rows in zip(names, runs):
        n_blocks = -(-len(rows) // block_size)
        if n_blocks < 2 * min_distance:
            raise ValueError(
                f"story {name!r} has {len(rows)} TRs = {n_blocks} blocks of {block_size} TRs, but "
                f"moving every block at least {min_distance} blocks away needs at least "
                f"{2 * min_distance} blocks ({(2 * min_distance - 1) * block_size + 1} TRs); use a "
                "smaller block_size or min_distance, or other_story_targets."
            )
        sigma = _far_permutation(n_blocks, min_distance, rng)
        blocks = [rows[i * block_size:(i + 1) * block_size] for i in range(n_blocks)]
        order = np.argsort(sigma)  # order[p] = block placed at position p
        index[rows] = np.concatenate([blocks[b] for b in order])
    permuted = y[index]
    return (permuted, index) if return_permutation else permuted


def phase_randomized_targets(y, groups=None, random_state=None):
    """Phase-randomised surrogates of the responses: same spectra, no stimulus alignment.

    Each story's responses are Fourier-transformed along time, every frequency's phase is
    shifted by a random angle drawn once per story and frequency and shared by all voxels, and
    the result is transformed back (multivariate phase randomisation, Prichard & Theiler,
    1994). Every voxel keeps its mean and exactly its periodogram, hence its circular
    autocorrelation and variance; because the shift is shared, the cross-spectra between voxels
    (their covariance) are kept too. What is lost is any relation to the stimulus: tuning on
    these targets measures the generic effect of tuning on fMRI-like noise.

    Parameters
    ----------
    y : ndarray of shape (n_trs, n_targets) or (n_trs,)
        Responses of one story, or of several stories when ``groups`` is given.
    groups : array-like of shape (n_trs,), optional
        Story of each TR; each story is randomised separately (its rows need not be
        contiguous).
    random_state : int, RandomState instance or None, default=None
        Seeds the phases.

    Returns
    -------
    surrogate : ndarray, same shape as ``y``
        Floating point (``y``'s dtype when it is floating, float64 otherwise).

    Raises
    ------
    ValueError
        When ``y`` is not 1-D or 2-D, holds non-finite values, ``groups`` has the wrong length,
        or a story has fewer than 3 TRs (no phase can be randomised).
    """
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("y holds NaN or infinite values; drop or impute those voxels first")
    dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64
    rng = _as_random_state(random_state)
    n_trs = y.shape[0]
    names, runs = _story_rows(groups, n_trs)
    surrogate = np.empty(y.shape, dtype=dtype)
    for name, rows in zip(names, runs):
        n = len(rows)
        if n < 3:
            raise ValueError(f"story {name!r} has {n} TRs; phase randomisation needs at least 3")
        spectrum = np.fft.rfft(y[rows].astype(np.float64, copy=False), axis=0)
        angles = rng.uniform(0.0, 2.0 * np.pi, size=spectrum.shape[0])
        # the mean (frequency 0) and, for an even length, the Nyquist term are real: keep them
        angles[0] = 0.0
        if n % 2 == 0:
            angles[-1] = 0.0
        shift = np.exp(1j * angles)
        if spectrum.ndim == 2:
            shift = shift[:, None]
        surrogate[rows] = np.fft.irfft(spectrum * shift, n=n, axis=0)
    return surrogate


def representation_targets(features, groups=None, n_components=None, random_state=None):
    """Turn another model's features into targets for :class:`BrainTuner`.

    Tuning a speech model on a language model's (or a bigger speech model's) representations
    instead of fMRI is the paper's "representation-tuned" baseline (e.g. BigSLM- or LM-tuned).
    This z-scores the features (per story when ``groups`` is given, as fMRI responses are) and
    optionally reduces them with PCA so the head stays small.

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_features)
        Features per TR, e.g. ``SpeechFeatureExtractor(model=...).fit_transform(X)`` or
        word-embedding features resampled to TRs.
    groups : array-like of shape (n_trs,), optional
        Story of each TR; z-scoring is done within each story.
    n_components : int, optional
        Keep this many principal components (computed after z-scoring, then z-scored again).
    random_state : int, RandomState instance or None, default=None
        Seeds the randomised PCA solver when ``n_components`` is given.

    Returns
    -------
    targets : ndarray of shape (n_trs, n_features or n_components), float32
        Zero mean and unit variance per column (per story with ``groups``); constant columns are 0.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (n_trs, n_features), got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or inf")

    targets = zscore_per_story(features, groups)
    if n_components is not None:
        from sklearn.decomposition import PCA

        targets = PCA(n_components=n_components, random_state=random_state).fit_transform(targets)
        targets = zscore_per_story(targets, groups)
    return targets.astype(np.float32)
