"""A simulated story-listening fMRI experiment built from real, offline parts.

Speech is synthesised by espeak-ng (with word and phone alignments), the "brain" reads meaning
with the all-MiniLM-L6-v2 sentence model, and responses follow the classic encoding-model
recipe: features of the stimulus, convolved with a canonical HRF, sampled at the TR, mapped to
voxels by random weights and buried in Gaussian noise. One story is heard several times with
independent noise, so noise ceilings are real. The result follows the same dataset contract as
the real ds003020 loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time

import numpy as np

from .._utils import atomic_write_bytes, cache_dir, data_file
from ..preprocessing import zscore
from .hrf import convolve_hrf, double_gamma_hrf
from .story_features import (band_power_envelopes, hold_at_onsets, recent_word_contexts)

logger = logging.getLogger(__name__)

_GENERATOR_VERSION = 2
DEFAULT_TEST_STORY = "lighthouse_keeper"
DEFAULT_VALIDATION_STORY = "lost_dog"
_FINE_STEP = 0.1  # s; grid on which stimulus features are built and convolved
_VOXEL_KINDS = ("semantic", "auditory", "mixed", "noise")


def story_texts():
    """The stories shipped with the package.

    Returns
    -------
    texts : dict of str to str
        Story name -> plain English text (about 350 words, 2-2.5 min of speech each).
    """
    return {p.stem: p.read_text(encoding="utf-8").strip()
            for p in sorted(data_file("stories").glob("*.txt"))}


def _resolve_texts(texts, validation_story, test_story):
    if texts is None:
        texts = story_texts()
        validation_story = validation_story or DEFAULT_VALIDATION_STORY
        test_story = test_story or DEFAULT_TEST_STORY
    elif isinstance(texts, str):
        raise TypeError("texts must be a dict of story name -> text or a list of texts, not one "
                        "str: wrap it, e.g. texts={'story': text}")
    elif not isinstance(texts, dict):
        texts = {f"story{i:02d}": t for i, t in enumerate(texts)}
    texts = {str(k): v for k, v in texts.items()}
    for name, text in texts.items():
        if not isinstance(text, str) or not any(ch.isalnum() for ch in text):
            raise ValueError(f"story {name!r} has an empty text: every story needs words to speak")
    names = list(texts)
    if len(names) < 3:
        raise ValueError(f"need at least 3 stories (train, validation, test); got {len(names)}")
    test_story = test_story or names[-1]
    validation_story = validation_story or [n for n in names if n != test_story][-1]
    for role, name in (("test_story", test_story), ("validation_story", validation_story)):
        if name not in texts:
            raise ValueError(f"{role}={name!r} is not among the stories {names}")
    if test_story == validation_story:
        raise ValueError("test_story and validation_story must differ")
    return texts, validation_story, test_story


def _truncate_words(text, max_words):
    """The first ``max_words`` words of ``text``, ending with a full stop."""
    if max_words is None:
        return text
    tokens = text.split()
    if len(tokens) <= max_words:
        return text
    return " ".join(tokens[:max_words]).rstrip(",;:") + "."


def _cache_key(params, texts):
    blob = json.dumps({"params": params, "texts": texts, "version": _GENERATOR_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_story_dataset(n_train_stories=None, *, n_repeats=6, snr=(0.1, 2.0),
                       n_semantic_voxels=400, n_auditory_voxels=250, n_mixed_voxels=150,
                       n_noise_voxels=200, n_semantic_dims=12, n_acoustic_bands=24,
                       context_words=3, tr=2.0045, n_silent_trs=3, voice="en-us", rate=175,
                       texts=None, max_words=None, validation_story=None, test_story=None,
                       cache=True, random_state=0, verbose=False):
    """Simulated fMRI responses of listeners to synthesised stories (the built-in dataset).

    Each story is spoken by espeak-ng. The simulated brain has four kinds of voxels:

    - ``"semantic"``: random mixtures of ``n_semantic_dims`` latent semantic features, the top
      principal axes (within stories) of the all-MiniLM-L6-v2 embedding of the last
      ``context_words`` words heard, held from each word's onset to the next;
    - ``"auditory"``: random mixtures of ``n_acoustic_bands`` log mel band-power envelopes;
    - ``"mixed"``: half of each;
    - ``"noise"``: noise only.

    Features are built on a 0.1-s grid, convolved with SPM's double-gamma HRF, sampled at the
    mid-volume times ``(k + 0.5) * tr`` and z-scored per story. Each voxel's noise-free signal
    (unit variance) is mixed with unit Gaussian noise at that voxel's signal-to-noise variance
    ratio, and each presentation is z-scored per voxel, as real fMRI runs are.

    Parameters
    ----------
    n_train_stories : int, optional
        Number of training stories (the first ones in name order, excluding the validation and
        test stories); all of them by default.
    n_repeats : int, default=6
        Presentations of the test story, each with independent noise.
    snr : float or (float, float), default=(0.1, 2.0)
        Signal-to-noise variance ratio of one presentation: one value for all signal voxels, or
        a range sampled log-uniformly per voxel. With ``N`` repeats the true noise ceiling of a
        voxel is ``sqrt(snr * N / (snr * N + 1))`` (0.61-0.96 for the defaults).
    n_semantic_voxels, n_auditory_voxels, n_mixed_voxels, n_noise_voxels : int
        Voxels of each kind (400, 250, 150, 200), in that order along the voxel axis.
    n_semantic_dims : int, default=12
        Latent semantic dimensions shared by all semantic voxels.
    n_acoustic_bands : int, default=24
        Mel bands of the acoustic features.
    context_words : int, default=3
        Words of recent context embedded at each word (~1 s of speech). Short contexts make
        the semantic voxels follow word meaning, which a speech model can learn from a few
        stories; with 10 words (~3.5 s, sentence-level meaning) brain-tuning Whisper tiny.en on
        the default 18 minutes did not raise semantic alignment (see the user guide).
    tr : float, default=2.0045
        Repetition time in seconds.
    n_silent_trs : int, default=3
        TRs of silence appended to each story (the audio is padded to cover every volume).
    voice : str, default="en-us"
        espeak-ng voice (:func:`sk_braintune.speech.list_voices`).
    rate : int, default=175
        Speaking rate in words per minute.
    texts : dict of str to str or list of str, optional
        Stories to use instead of the packaged ones (at least 3). Without ``test_story`` and
        ``validation_story`` the last story is the test story and the one before the validation
        story.
    max_words : int, optional
        Keep only the first ``max_words`` words of each story (quick, small datasets).
    validation_story, test_story : str, optional
        Names of the held-out stories (packaged defaults: ``"lost_dog"``, ``"lighthouse_keeper"``).
    cache : bool, default=True
        Read and write the generated dataset under ``cache_dir("datasets")``, keyed by every
        parameter and the texts (the MiniLM context embeddings are cached by content too, so
        changing only voxel parameters or the seed skips the slow step). ``False`` neither
        reads nor writes any cache.
    random_state : int, default=0
        Seed of the voxel weights, SNRs and noise. Same seed, same dataset.
    verbose : bool, default=False
        Print progress.

    Returns
    -------
    dataset : sklearn.utils.Bunch
        The dataset contract: ``stories`` (train, validation, test order), ``sample_rate``
        (16000), ``audio`` (story -> float32 waveform), ``tr``, ``tr_times`` (story -> float64
        mid-volume times), ``responses`` (story -> ``(n_trs, n_voxels)`` float32; for the test
        story the mean of the z-scored repeats), ``repeats`` (test story ->
        ``(n_repeats, n_trs, n_voxels)`` float32), ``noise_ceiling`` (``(n_voxels,)`` Schoppe
        cc_max from the repeats), ``words`` and ``phones`` (story -> DataFrame with ``onset``,
        ``offset``, ``label``), ``phone_set`` ("espeak"), ``split``, ``voxel_labels``,
        ``ground_truth`` and ``description``. ``ground_truth`` holds ``semantic`` and
        ``acoustic`` (story -> HRF-convolved, z-scored features at the TRs, ``(n_trs,
        n_semantic_dims)`` and ``(n_trs, n_acoustic_bands)``), ``semantic_weights`` and
        ``acoustic_weights`` (``(n_features, n_voxels)``), ``semantic_projection`` (``(384,
        n_semantic_dims)`` PCA axes), ``word_semantics`` (story -> ``(n_words,
        n_semantic_dims)`` latent value at each word, before the HRF), ``signal`` (story ->
        noise-free ``(n_trs, n_voxels)``), ``snr`` (``(n_voxels,)``, 0 for noise voxels),
        ``true_noise_ceiling`` (``(n_voxels,)``) and ``hrf``.

    Raises
    ------
    ValueError
        For empty texts, fewer than 3 stories or invalid sizes.
    """
    from sklearn.utils import Bunch

    for name, value, minimum in (("n_repeats", n_repeats, 2), ("n_semantic_voxels",
                                 n_semantic_voxels, 0), ("n_auditory_voxels", n_auditory_voxels, 0),
                                 ("n_mixed_voxels", n_mixed_voxels, 0),
                                 ("n_noise_voxels", n_noise_voxels, 0),
                                 ("n_semantic_dims", n_semantic_dims, 1),
                                 ("n_acoustic_bands", n_acoustic_bands, 1),
                                 ("context_words", context_words, 1),
                                 ("n_silent_trs", n_silent_trs, 0)):
        _check_int(name, value, minimum)
    if n_semantic_voxels + n_auditory_voxels + n_mixed_voxels + n_noise_voxels == 0:
        raise ValueError("the dataset needs at least one voxel")
    if not tr > 0:
        raise ValueError(f"tr must be positive, got {tr!r}")
    snr_range = (float(snr), float(snr)) if np.isscalar(snr) else tuple(map(float, snr))
    if len(snr_range) != 2 or min(snr_range) <= 0:
        raise ValueError(f"snr must be a positive float or a (low, high) pair, got {snr!r}")
    if max_words is not None:
        _check_int("max_words", max_words, 1)

    texts, validation_story, test_story = _resolve_texts(texts, validation_story, test_story)
    train_pool = [n for n in texts if n not in (validation_story, test_story)]
    if n_train_stories is None:
        n_train_stories = len(train_pool)
    _check_int("n_train_stories", n_train_stories, 1)
    if n_train_stories > len(train_pool):
        raise ValueError(f"n_train_stories={n_train_stories} but only {len(train_pool)} "
                         "training stories are available")
    split = {"train": train_pool[:n_train_stories], "validation": [validation_story],
             "test": [test_story]}
    stories = split["train"] + split["validation"] + split["test"]
    texts = {name: _truncate_words(texts[name], max_words) for name in stories}

    params = dict(n_repeats=n_repeats, snr=snr_range, n_semantic_voxels=n_semantic_voxels,
                  n_auditory_voxels=n_auditory_voxels, n_mixed_voxels=n_mixed_voxels,
                  n_noise_voxels=n_noise_voxels, n_semantic_dims=n_semantic_dims,
                  n_acoustic_bands=n_acoustic_bands, context_words=context_words, tr=float(tr),
                  n_silent_trs=n_silent_trs, voice=voice, rate=rate, split=split,
                  random_state=random_state)
    path = cache_dir("datasets") / f"story_{_cache_key(params, texts)}.pkl" if cache else None
    if cache and path.exists():
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
            if verbose:
                logger.info(f"[make_story_dataset] loaded from cache {path}")
            return _to_bunch(data, Bunch)
        except Exception:  # a corrupt or stale cache file is regenerated
            pass

    data = _generate(texts, stories, split, dict(params, cache=cache), verbose)
    if cache:
        atomic_write_bytes(path, pickle.dumps(_for_cache(data), protocol=pickle.HIGHEST_PROTOCOL))
    return _to_bunch(data, Bunch)


def _for_cache(data):
    # Audio is on the int16 grid already: store it as int16 to halve the file.
    out = dict(data)
    out["audio"] = {k: np.round(v * 32767.0).astype(np.int16) for k, v in data["audio"].items()}
    return out


def _to_bunch(data, bunch_cls):
    data = dict(data)
    data["audio"] = {k: (v.astype(np.float32) / np.float32(32767.0) if v.dtype == np.int16 else v)
                     for k, v in data["audio"].items()}
    data["participant_data"] = {p: bunch_cls(**own) for p, own in data["participant_data"].items()}
    return bunch_cls(**data)


def _embed_contexts(contexts, cache):
    """MiniLM embeddings of the word contexts, cached on disk by content (the slow step)."""
    import io

    from ..models.minilm import embed_texts

    key = hashlib.sha256("\n".join(contexts).encode()).hexdigest()[:24]
    path = cache_dir("datasets", "minilm") / f"contexts_{key}.npy" if cache else None
    if cache and path.exists():
        try:
            embeddings = np.load(path)
            if embeddings.shape == (len(contexts), 384):
                return embeddings
        except (OSError, ValueError):
            pass
    embeddings = embed_texts(contexts)
    if cache:
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        atomic_write_bytes(path, buffer.getvalue())
    return embeddings


def _generate(texts, stories, split, params, verbose):
    from ..metrics import noise_ceiling
    from ..speech import synthesize

    start = time.perf_counter()
    tr, sample_rate = params["tr"], 16000
    rng = np.random.default_rng(params["random_state"])

    audio, tr_times, words, phones = {}, {}, {}, {}
    for name in stories:
        utt = synthesize(texts[name], voice=params["voice"], rate=params["rate"])
        n_trs = int(np.ceil(utt.duration / tr)) + params["n_silent_trs"]
        n_samples = int(round(n_trs * tr * sample_rate))
        wav = np.zeros(n_samples, dtype=np.float32)
        # Quantise to the int16 grid so cached and fresh audio are identical.
        wav[:utt.audio.size] = np.round(utt.audio[:n_samples] * 32767.0) / 32767.0
        audio[name] = wav
        tr_times[name] = (np.arange(n_trs) + 0.5) * tr
        words[name], phones[name] = utt.words, utt.phones
    if verbose:
        logger.info(f"[make_story_dataset] synthesised {len(stories)} stories "
              f"({sum(a.size for a in audio.values()) / sample_rate:.0f} s) in "
              f"{time.perf_counter() - start:.1f} s")

    contexts = [recent_word_contexts(words[name]["label"], params["context_words"])
                for name in stories]
    embeddings = _embed_contexts([c for story in contexts for c in story], params["cache"])
    bounds = np.cumsum([0] + [len(c) for c in contexts])
    per_story = {name: embeddings[bounds[i]:bounds[i + 1]] for i, name in enumerate(stories)}
    if verbose:
        logger.info(f"[make_story_dataset] embedded {len(embeddings)} word contexts "
              f"({time.perf_counter() - start:.1f} s)")

    # Semantic axes: principal axes of within-story variation (z-scoring per story removes
    # the between-story part from the responses anyway).
    centred = np.concatenate([e - e.mean(axis=0) for e in per_story.values()]).astype(np.float64)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(params["n_semantic_dims"], vt.shape[0])
    projection = vt[:k].T  # (384, k)
    # Fix each axis's sign (SVD's is arbitrary) so the dataset is reproducible across BLAS.
    projection *= np.sign(projection[np.argmax(np.abs(projection), axis=0), np.arange(k)])
    axis_scale = singular[:k] / singular[0]

    hrf = double_gamma_hrf(dt=_FINE_STEP)
    semantic, acoustic, word_semantics = {}, {}, {}
    for name in stories:
        n_steps = int(np.ceil(audio[name].size / sample_rate / _FINE_STEP))
        fine_times = np.arange(n_steps) * _FINE_STEP
        latent = (per_story[name] - per_story[name].mean(axis=0)) @ projection
        word_semantics[name] = latent.astype(np.float32)
        held = hold_at_onsets(latent, words[name]["onset"].to_numpy(), fine_times)
        bands = band_power_envelopes(audio[name], sample_rate, params["n_acoustic_bands"],
                                     _FINE_STEP, n_steps)
        for out, fine in ((semantic, held), (acoustic, bands)):
            convolved = convolve_hrf(fine, hrf)
            sampled = np.stack([np.interp(tr_times[name], fine_times + _FINE_STEP / 2, col)
                                for col in convolved.T], axis=1)
            out[name] = zscore(sampled).astype(np.float32)

    n_kind = [params[f"n_{kind}_voxels"] for kind in _VOXEL_KINDS]
    labels = np.repeat(np.array(_VOXEL_KINDS), n_kind)
    n_voxels = labels.size
    uses_semantic = np.isin(labels, ["semantic", "mixed"])
    uses_acoustic = np.isin(labels, ["auditory", "mixed"])
    sem_weights = rng.standard_normal((k, n_voxels)) * axis_scale[:, None] * uses_semantic
    ac_weights = rng.standard_normal((params["n_acoustic_bands"], n_voxels)) * uses_acoustic
    low, high = params["snr"]
    voxel_snr = np.exp(rng.uniform(np.log(low), np.log(high), n_voxels))
    voxel_snr[labels == "noise"] = 0.0

    # Scale each part to unit variance over all stories (one scale for all, so the signal stays
    # a linear function of the features across stories); mixed voxels get half of each.
    def normalised(weights, feats):
        scale = np.concatenate([feats[n].astype(np.float64) @ weights for n in stories]).std(0)
        return weights / np.where(scale > 0, scale, 1.0)

    mix = np.where(labels == "mixed", np.sqrt(0.5), 1.0)
    sem_weights = normalised(sem_weights, semantic) * mix
    ac_weights = normalised(ac_weights, acoustic) * mix
    # signal = semantic @ semantic_weights + acoustic @ acoustic_weights, exactly
    signal = {n: semantic[n].astype(np.float64) @ sem_weights
              + acoustic[n].astype(np.float64) @ ac_weights for n in stories}

    signal_gain = np.sqrt(voxel_snr / (1.0 + voxel_snr))
    noise_gain = np.sqrt(1.0 / (1.0 + voxel_snr))

    def present(name, seed):
        noise = np.random.default_rng(seed).standard_normal(signal[name].shape)
        return zscore(signal[name] * signal_gain + noise * noise_gain).astype(np.float32)

    seeds = np.random.SeedSequence(params["random_state"]).spawn(len(stories))
    responses, repeats = {}, {}
    for i, name in enumerate(stories):
        if name in split["test"]:
            rep_seeds = seeds[i].spawn(params["n_repeats"])
            repeats[name] = np.stack([present(name, s) for s in rep_seeds])
            responses[name] = repeats[name].mean(axis=0)
        else:
            responses[name] = present(name, seeds[i])
    test = split["test"][0]
    n_rep = params["n_repeats"]
    true_ceiling = np.sqrt(voxel_snr * n_rep / (voxel_snr * n_rep + 1.0))

    description = (
        f"Simulated story-listening fMRI (sk_braintune built-in, generator v{_GENERATOR_VERSION}): "
        f"{len(stories)} stories spoken by espeak-ng (voice {params['voice']}, "
        f"{params['rate']} wpm); "
        f"{n_voxels} voxels ({', '.join(f'{c} {k_}' for k_, c in zip(_VOXEL_KINDS, n_kind))}); "
        f"semantic voxels read {k} PCA axes of all-MiniLM-L6-v2 embeddings of the last "
        f"{params['context_words']} words; auditory voxels read "
        f"{params['n_acoustic_bands']} log mel band-power envelopes; double-gamma HRF; TR {tr} s; test story {test!r} heard "
        f"{n_rep} times; per-presentation SNR {low:g}-{high:g} (variance ratio)."
    )
    if verbose:
        logger.info(f"[make_story_dataset] done in {time.perf_counter() - start:.1f} s")
    ceiling = noise_ceiling(repeats[test]).astype(np.float64)
    own_truth = dict(semantic_weights=sem_weights.astype(np.float32),
                     acoustic_weights=ac_weights.astype(np.float32),
                     signal={n: v.astype(np.float32) for n, v in signal.items()},
                     snr=voxel_snr, true_noise_ceiling=true_ceiling)
    participant_data = {"P01": dict(responses=responses, repeats=repeats, noise_ceiling=ceiling,
                                    ground_truth=own_truth)}
    return dict(
        stories=list(stories), sample_rate=sample_rate, audio=audio, tr=tr, tr_times=tr_times,
        responses=responses, repeats=repeats, noise_ceiling=ceiling,
        participants=("P01",), participant_data=participant_data,
        words=words, phones=phones, phone_set="espeak", split=split, voxel_labels=labels,
        ground_truth=dict(
            semantic=semantic, acoustic=acoustic,
            semantic_projection=projection.astype(np.float32), word_semantics=word_semantics,
            hrf=hrf, **own_truth,
        ),
        description=description,
    )
