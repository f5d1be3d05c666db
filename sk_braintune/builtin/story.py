"""A simulated story-listening fMRI experiment built from real, offline parts.

Speech is synthesised by espeak-ng (with word and phone alignments), the "brain" reads meaning
with the all-MiniLM-L6-v2 sentence model, and responses follow the classic encoding-model
recipe: features of the stimulus, convolved with a canonical HRF, sampled at the TR, mapped to
voxels by random weights and buried in Gaussian noise. One story is heard several times with
independent noise, so noise ceilings are real. Several simulated listeners hear the same stories,
each with its own voxel weights on the shared latent features and its own noise. The result
follows the same dataset contract as the real ds003020 loader.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from pathlib import Path

import numpy as np

from .._hashing import digest_bytes, digest_json
from .._utils import atomic_write_bytes, cache_dir, data_file
from ..exceptions import StaleSummaryError
from ..preprocessing import zscore
from .hrf import convolve_hrf, double_gamma_hrf
from .story_features import band_power_envelopes, hold_at_onsets, recent_word_contexts

logger = logging.getLogger(__name__)

_GENERATOR_VERSION = 3
_SPEECH_VERSION = 1
DEFAULT_TEST_STORY = "lighthouse_keeper"
DEFAULT_VALIDATION_STORY = "lost_dog"
LIBRARY_TEST_STORY = "b17"
LIBRARY_VALIDATION_STORY = "a17"
STORY_COLLECTIONS = ("default", "library")
_FINE_STEP = 0.1  # s; grid on which stimulus features are built and convolved
_VOXEL_KINDS = ("semantic", "auditory", "mixed", "noise")
# Summaries of a collection's stimulus features (semantic axes, per-story features at the TRs):
# what a dataset cut to ``minutes`` needs from the stories it does not keep. The package ships
# the summary of the demo's settings; others are cached after the first whole build.
_SUMMARY_VERSION = 1
_SUMMARY_SETTINGS = ("tr", "n_silent_trs", "voice", "rate", "context_words", "n_semantic_dims",
                     "n_acoustic_bands")
SHIPPED_SUMMARIES = Path(__file__).resolve().parent.parent / "data" / "story_summaries"


def _library_order(names):
    """Interleave the two writers' series: a01, b01, a02, b02, ... (topics and styles mix)."""
    def key(name):
        series, number = name[0], int(name[1:3])
        return (number, series)
    return sorted(names, key=key)


def _library_name(prefix, names):
    matches = [n for n in names if n.split("_", 1)[0] == prefix]
    if len(matches) != 1:
        raise RuntimeError(f"the story library should hold exactly one story {prefix}_*.txt, "
                           f"found {matches}; reinstall sk_braintune")
    return matches[0]


def story_texts(collection="default"):
    """The stories shipped with the package.

    Parameters
    ----------
    collection : {"default", "library"}, default="default"
        ``"default"``: 11 short stories (about 350 words, 2-2.5 min of speech each; 21 minutes of
        training speech). ``"library"``: 34 stories of 1,000-1,400 words (6-8 min each, about
        3.5 hours), written for the package around recurring everyday topics (family, food,
        work, weather, travel, neighbours), in training order (the two series interleaved,
        held-out stories last).

    Returns
    -------
    texts : dict of str to str
        Story name -> plain English text.
    """
    if collection == "default":
        return {p.stem: p.read_text(encoding="utf-8").strip()
                for p in sorted(data_file("stories").glob("*.txt"))}
    if collection == "library":
        texts = {p.stem: p.read_text(encoding="utf-8").strip()
                 for p in data_file("story_library").glob("*.txt")}
        held_out = [_library_name(LIBRARY_VALIDATION_STORY, texts),
                    _library_name(LIBRARY_TEST_STORY, texts)]
        order = _library_order([n for n in texts if n not in held_out]) + held_out
        return {name: texts[name] for name in order}
    raise ValueError(f"unknown story collection {collection!r}; choose one of "
                     f"{STORY_COLLECTIONS}")


def _resolve_texts(texts, stories, validation_story, test_story):
    if texts is None:
        texts = story_texts(stories)
        if stories == "default":
            validation_story = validation_story or DEFAULT_VALIDATION_STORY
            test_story = test_story or DEFAULT_TEST_STORY
        else:
            validation_story = validation_story or _library_name(LIBRARY_VALIDATION_STORY, texts)
            test_story = test_story or _library_name(LIBRARY_TEST_STORY, texts)
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
    return digest_json({"params": params, "texts": texts, "version": _GENERATOR_VERSION},
                       length=24, default=str)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_story_dataset(n_train_stories=None, *, stories="default", minutes=None,
                       n_participants=1, participant_similarity=0.5, n_repeats=6,
                       snr=(0.1, 2.0), n_semantic_voxels=400, n_auditory_voxels=250,
                       n_mixed_voxels=150, n_noise_voxels=200, n_semantic_dims=12,
                       n_acoustic_bands=24, context_words=3, tr=2.0045, n_silent_trs=3,
                       voice="en-us", rate=175, texts=None, max_words=None,
                       validation_story=None, test_story=None, cache=True, random_state=0,
                       verbose=False):
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

    With ``n_participants > 1`` every participant hears the same stories; the latent features
    are shared, and each participant has its own voxel weights, SNRs, noise, test-story repeats
    and noise ceiling, over one common voxel space (the same voxel kinds in the same order).

    Parameters
    ----------
    n_train_stories : int, optional
        Number of training stories (the first ones in the collection's order, excluding the
        validation and test stories); all of them by default. The simulated brain is built on
        the chosen stories only (the default collection's historical behaviour); prefer
        ``minutes`` to vary the amount of training audio over one fixed brain.
    stories : {"default", "library"}, default="default"
        Packaged stories (ignored when ``texts`` is given): ``"default"``, 11 short stories (21
        minutes of training speech, validation ``"lost_dog"``, test ``"lighthouse_keeper"``);
        ``"library"``, 34 stories of 6-8 minutes (about 3.2 hours of training speech, one
        validation and one test story, see :func:`story_texts`).
    minutes : float, optional
        Keep only the first training stories, whole and in the collection's order, until their
        audio reaches ``minutes`` minutes (the last one may overshoot). The brain (latent axes,
        voxel weights, noise, test-story repeats) is the one generated over all the stories,
        so datasets with different ``minutes`` share the same validation and test responses: a
        data-scaling curve compares like with like. All training stories by default. Only the
        kept stories are synthesised and embedded when a summary of the collection's stimulus
        features is at hand (shipped with the package for the demo's settings, cached after
        any whole build, e.g. without ``minutes``); the dataset is the same bit for bit, and
        a summary that this machine's espeak-ng, MiniLM and BLAS do not reproduce on the kept
        stories is not used.
    n_participants : int, default=1
        Simulated listeners, with ids ``"P01"``, ``"P02"``, ... Participant ``"P01"`` is the
        same for any ``n_participants``.
    participant_similarity : float in [0, 1], default=0.5
        Correlation between the voxel weights of ``"P01"`` and those of every other
        participant (0: independent tuning, 1: identical tuning; the noise is always
        independent). Two participants other than ``"P01"`` correlate by its square.
    n_repeats : int, default=6
        Presentations of the test story, each with independent noise.
    snr : float or (float, float), default=(0.1, 2.0)
        Signal-to-noise variance ratio of one presentation: one value for all signal voxels, or
        a range sampled log-uniformly per voxel and participant. With ``N`` repeats the true
        noise ceiling of a voxel is ``sqrt(snr * N / (snr * N + 1))`` (0.61-0.96 for the
        defaults).
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
        espeak-ng voice (:func:`sk_braintune.builtin.list_voices`).
    rate : int, default=175
        Speaking rate in words per minute.
    texts : dict of str to str or list of str, optional
        Stories to use instead of the packaged ones (at least 3). Without ``test_story`` and
        ``validation_story`` the last story is the test story and the one before the validation
        story.
    max_words : int, optional
        Keep only the first ``max_words`` words of each story (quick, small datasets).
    validation_story, test_story : str, optional
        Names of the held-out stories (defaults of the packaged collections above).
    cache : bool, default=True
        Read and write caches under ``cache_dir("datasets")``: the synthesised speech of each
        story (keyed by its text, voice and rate), the MiniLM context embeddings of each story
        (keyed by the contexts), the summary of the stimulus features of all the stories
        (see ``minutes``) and the simulated responses (keyed by every parameter and the
        texts), so changing only voxel parameters or the seed skips the slow steps. ``False``
        neither reads nor writes any cache.
    random_state : int, default=0
        Seed of the voxel weights, SNRs and noise. Same seed, same dataset.
    verbose : bool, default=False
        Log progress (``logging`` at INFO level) and show a progress bar over the stories.

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
        ``participants`` (``("P01", ...)``), ``participant_data`` (participant -> Bunch with its
        ``responses``, ``repeats``, ``noise_ceiling``, ``column_index`` and ``ground_truth``: its
        ``semantic_weights``, ``acoustic_weights``, ``signal``, ``snr`` and
        ``true_noise_ceiling``), ``ground_truth`` and ``description``. The top-level
        ``responses``, ``repeats`` and ``noise_ceiling`` are those of ``"P01"``.
        ``ground_truth`` holds the shared ``semantic`` and ``acoustic`` features (story ->
        HRF-convolved, z-scored features at the TRs, ``(n_trs, n_semantic_dims)`` and
        ``(n_trs, n_acoustic_bands)``), ``semantic_projection`` (``(384, n_semantic_dims)`` PCA
        axes), ``word_semantics`` (story -> ``(n_words, n_semantic_dims)`` latent value at each
        word, before the HRF) and ``hrf``, plus ``"P01"``'s ``semantic_weights`` and
        ``acoustic_weights`` (``(n_features, n_voxels)``), ``signal`` (story -> noise-free
        ``(n_trs, n_voxels)``), ``snr`` (``(n_voxels,)``, 0 for noise voxels) and
        ``true_noise_ceiling`` (``(n_voxels,)``). ``space`` (``"fsaverage5"``) and
        ``column_index`` (``(n_voxels,)`` vertex indices, ``"P01"``'s; each participant's in its
        ``participant_data``) place the voxels on the cortex for brain maps
        (:func:`sk_braintune.builtin.cortex.voxel_places`; both None when there are more voxels
        than fsaverage5's cortical vertices); the responses do not depend on them.

    Raises
    ------
    ValueError
        For empty texts, fewer than 3 stories, an unknown collection or invalid sizes.
    """
    from sklearn.utils import Bunch

    for name, value, minimum in (("n_repeats", n_repeats, 2), ("n_semantic_voxels",
                                 n_semantic_voxels, 0), ("n_auditory_voxels", n_auditory_voxels, 0),
                                 ("n_mixed_voxels", n_mixed_voxels, 0),
                                 ("n_noise_voxels", n_noise_voxels, 0),
                                 ("n_semantic_dims", n_semantic_dims, 1),
                                 ("n_acoustic_bands", n_acoustic_bands, 1),
                                 ("context_words", context_words, 1),
                                 ("n_silent_trs", n_silent_trs, 0),
                                 ("n_participants", n_participants, 1)):
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
    if stories not in STORY_COLLECTIONS:
        raise ValueError(f"stories must be one of {STORY_COLLECTIONS} (the packaged "
                         f"collections), got {stories!r}; pass your own stories as texts=")
    if minutes is not None and (isinstance(minutes, bool) or not np.isscalar(minutes)
                                or not float(minutes) > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    if minutes is not None and n_train_stories is not None:
        raise ValueError("give n_train_stories or minutes, not both")
    similarity = float(participant_similarity)
    if not 0.0 <= similarity <= 1.0:
        raise ValueError(f"participant_similarity must lie in [0, 1], got "
                         f"{participant_similarity!r}")

    texts, validation_story, test_story = _resolve_texts(texts, stories, validation_story,
                                                         test_story)
    train_pool = [n for n in texts if n not in (validation_story, test_story)]
    if n_train_stories is None:
        n_train_stories = len(train_pool)
    _check_int("n_train_stories", n_train_stories, 1)
    if n_train_stories > len(train_pool):
        raise ValueError(f"n_train_stories={n_train_stories} but only {len(train_pool)} "
                         "training stories are available")
    split = {"train": train_pool[:n_train_stories], "validation": [validation_story],
             "test": [test_story]}
    names = split["train"] + split["validation"] + split["test"]
    texts = {name: _truncate_words(texts[name], max_words) for name in names}

    params = dict(n_repeats=n_repeats, snr=snr_range, n_semantic_voxels=n_semantic_voxels,
                  n_auditory_voxels=n_auditory_voxels, n_mixed_voxels=n_mixed_voxels,
                  n_noise_voxels=n_noise_voxels, n_semantic_dims=n_semantic_dims,
                  n_acoustic_bands=n_acoustic_bands, context_words=context_words, tr=float(tr),
                  n_silent_trs=n_silent_trs, voice=voice, rate=rate, split=split,
                  random_state=random_state)
    if n_participants > 1:  # keys of one-participant datasets stay as they were
        params.update(n_participants=n_participants, participant_similarity=similarity)
    dataset = _to_bunch(_build(texts, names, split, params, minutes, cache, verbose), Bunch)
    # Places on fsaverage5 for brain maps: they label the voxels, the responses ignore them.
    from .cortex import voxel_places

    try:
        for participant, own in dataset.participant_data.items():
            own.column_index = voxel_places(dataset.voxel_labels, participant, random_state)
        dataset.space = "fsaverage5"
        dataset.column_index = dataset.participant_data[dataset.participants[0]].column_index
    except ValueError:  # more voxels than cortical vertices: no places
        dataset.space = dataset.column_index = None
    return dataset


def _read_pickle(path, verbose):
    """The object pickled at ``path``, or None when absent or unreadable (then regenerated)."""
    if path is None or not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception:  # a corrupt or stale cache file is regenerated
        return None
    if verbose:
        logger.info("make_story_dataset: responses loaded from cache %s", path)
    return data


def _write_pickle(path, data):
    if path is not None:
        atomic_write_bytes(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))


def _with_audio(data, speech):
    return dict(data, audio={name: speech[name]["audio"] for name in speech})


def _build(texts, names, split, params, minutes, cache, verbose):
    """The dataset's fields: read from the cache, or generated for the stories it keeps.

    With ``minutes`` and a summary of the collection's stimulus features (in the cache, or
    shipped with the package for the demo's settings), only the kept training stories and the
    held-out ones are synthesised and embedded; the brain is the one built over every story,
    bit for bit (see :func:`_generate`). Without a summary the whole collection is built, as
    without ``minutes``; every whole build caches its summary.
    """
    folder = cache_dir("datasets") if cache else None
    full_path = folder / f"story_{_cache_key(params, texts)}.pkl" if cache else None
    summary_key = _summary_key(texts, params)
    if minutes is not None:
        part_key = _cache_key(dict(params, minutes=float(minutes)), texts)
        part_path = folder / f"story_{part_key}.pkl" if cache else None
        data = _read_pickle(part_path, verbose)
        if data is not None:
            return _with_audio(data, _load_speech(texts, data["stories"], params, cache,
                                                  verbose))
        summary = None if cache and full_path.exists() else _read_summary(summary_key, cache)
        if summary is not None:
            keep = _minutes_stories(summary, split, minutes, params["tr"])
            speech = _load_speech(texts, keep, params, cache, verbose)
            try:
                data, _ = _generate(speech, names, split, dict(params, cache=cache), verbose,
                                    summary=summary, keep=keep)
            except StaleSummaryError as exc:
                logger.info("make_story_dataset: %s; building every story", exc)
            else:
                data = _keep_training_minutes(_with_audio(data, speech), float(minutes))
                _write_pickle(part_path, {k: v for k, v in data.items() if k != "audio"})
                return data
    speech = _load_speech(texts, names, params, cache, verbose)
    data = _read_pickle(full_path, verbose)
    if data is None:
        data, summary = _generate(speech, names, split, dict(params, cache=cache), verbose)
        _write_pickle(full_path, data)
        if cache:  # small: what a later dataset cut to ``minutes`` needs
            _write_summary(cache_dir("datasets", "summaries") / f"{summary_key}.npz", summary)
    data = _with_audio(data, speech)
    if minutes is not None:
        data = _keep_training_minutes(data, float(minutes))
    return data


def _speech_digest(texts, params):
    return digest_json({"texts": texts, "voice": params["voice"], "rate": params["rate"],
                        "tr": params["tr"], "n_silent_trs": params["n_silent_trs"],
                        "version": _SPEECH_VERSION})


def story_speech(stories="library", split="train", *, voice="en-us", rate=175, tr=2.0045,
                 n_silent_trs=3, max_words=None, cache=True, verbose=False, synthesize=True):
    """Synthesised speech of a packaged collection's stories, without simulated responses.

    The audio equals ``make_story_dataset(stories=stories, ...).audio`` for the same voice,
    rate, TR and padding (both read the same per-story speech cache), e.g. the training speech
    on which :func:`sk_braintune.builtin.load_ssl_speech_model` is pretrained.

    Parameters
    ----------
    stories : {"default", "library"}, default="library"
        The packaged collection.
    split : {"train", "validation", "test", "all"}, default="train"
        Which of its stories (the default held-out stories of :func:`make_story_dataset`).
    voice, rate, tr, n_silent_trs, max_words, cache, verbose
        As in :func:`make_story_dataset`.
    synthesize : bool, default=True
        False returns ``(None, digest)`` at once, without synthesising (or reading) any audio.

    Returns
    -------
    speech : dict of str to sklearn.utils.Bunch or None
        Story -> ``audio`` (float32, 16 kHz, padded to whole TRs), ``words`` and ``phones``
        (DataFrames with ``onset``, ``offset``, ``label``), in the collection's order.
    digest : str
        SHA-256 of the texts, voice and rate: what the speech depends on (a cache key).
    """
    from sklearn.utils import Bunch

    if stories not in STORY_COLLECTIONS:
        raise ValueError(f"stories must be one of {STORY_COLLECTIONS}, got {stories!r}")
    texts, validation_story, test_story = _resolve_texts(None, stories, None, None)
    held_out = {"validation": [validation_story], "test": [test_story]}
    if split == "train":
        names = [n for n in texts if n not in (validation_story, test_story)]
    elif split == "all":
        names = list(texts)
    elif split in held_out:
        names = held_out[split]
    else:
        raise ValueError(f"split must be 'train', 'validation', 'test' or 'all', got {split!r}")
    if max_words is not None:
        _check_int("max_words", max_words, 1)
    texts = {name: _truncate_words(texts[name], max_words) for name in names}
    params = dict(tr=float(tr), voice=voice, rate=rate, n_silent_trs=n_silent_trs)
    if not synthesize:
        return None, _speech_digest(texts, params)
    speech = _load_speech(texts, names, params, cache, verbose)
    digest = _speech_digest(texts, params)
    out = {name: Bunch(audio=speech[name]["audio"], words=speech[name]["words"],
                       phones=speech[name]["phones"]) for name in names}
    return out, digest


def _summary_key(texts, params):
    """What a collection's stimulus features depend on (its stories, in order, and settings)."""
    return digest_json({"stories": [[name, text] for name, text in texts.items()],
                        "settings": {k: params[k] for k in _SUMMARY_SETTINGS},
                        "version": _GENERATOR_VERSION, "summary": _SUMMARY_VERSION}, length=24)


def _summary_paths(key, cache):
    """Where a summary may be: the cache (when used), then the package's data."""
    paths = [cache_dir("datasets", "summaries") / f"{key}.npz"] if cache else []
    return paths + [SHIPPED_SUMMARIES / f"{key}.npz"]


def _read_summary(key, cache):
    """The summary of :func:`_write_summary` for ``key``, or None."""
    for path in _summary_paths(key, cache):
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as f:
                names = [str(n) for n in f["names"]]
                bounds = np.cumsum(f["n_trs"])[:-1]
                return dict(projection=f["projection"], axis_scale=f["axis_scale"],
                            semantic=dict(zip(names, np.split(f["semantic"], bounds))),
                            acoustic=dict(zip(names, np.split(f["acoustic"], bounds))))
        except (OSError, ValueError, KeyError):  # unreadable: look further, or rebuild
            continue
    return None


def _write_summary(path, summary):
    """Save a collection's stimulus features (``.npz``, a few hundred kB for the library)."""
    names = list(summary["semantic"])
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, names=np.array(names), projection=summary["projection"],
        axis_scale=summary["axis_scale"],
        n_trs=np.array([len(summary["semantic"][n]) for n in names], dtype=np.int64),
        semantic=np.concatenate([summary["semantic"][n] for n in names]),
        acoustic=np.concatenate([summary["acoustic"][n] for n in names]))
    atomic_write_bytes(path, buffer.getvalue())


def _minutes_stories(summary, split, minutes, tr):
    """The stories a ``minutes`` dataset keeps, from the summary's story lengths.

    The same choice as :func:`_keep_training_minutes` makes from the audio (each story's
    audio is ``round(n_trs * tr * 16000)`` samples), plus the held-out stories.
    """
    kept, total = [], 0.0
    for name in split["train"]:
        if total >= minutes * 60.0:
            break
        kept.append(name)
        total += int(round(len(summary["semantic"][name]) * tr * 16000)) / 16000
    return kept + split["validation"] + split["test"]


def _keep_training_minutes(data, minutes):
    """Drop the training stories after the first ones whose audio reaches ``minutes``."""
    sample_rate, kept, total = data["sample_rate"], [], 0.0
    for name in data["split"]["train"]:
        if total >= minutes * 60.0:
            break
        kept.append(name)
        total += data["audio"][name].size / sample_rate
    dropped = set(data["split"]["train"]) - set(kept)

    def keep(mapping):
        return {k: v for k, v in mapping.items() if k not in dropped}

    out = dict(data)
    out["split"] = dict(data["split"], train=kept)
    out["stories"] = [s for s in data["stories"] if s not in dropped]
    for field in ("audio", "tr_times", "responses", "words", "phones"):
        out[field] = keep(data[field])
    truth = dict(data["ground_truth"])
    for field in ("semantic", "acoustic", "word_semantics", "signal"):
        truth[field] = keep(truth[field])
    out["ground_truth"] = truth
    out["participant_data"] = {}
    for participant, own in data["participant_data"].items():
        own_truth = dict(own["ground_truth"], signal=keep(own["ground_truth"]["signal"]))
        out["participant_data"][participant] = dict(own, responses=keep(own["responses"]),
                                                    ground_truth=own_truth)
    # the top-level fields stay the first participant's (the same objects)
    first = out["participant_data"][data["participants"][0]]
    out["responses"] = first["responses"]
    out["ground_truth"]["signal"] = first["ground_truth"]["signal"]
    out["description"] = data["description"] + (
        f" Training audio limited to {minutes:g} min: {len(kept)} stories, "
        f"{total / 60:.1f} min.")
    return out


def _to_bunch(data, bunch_cls):
    data = dict(data)
    data["participant_data"] = {p: bunch_cls(**own) for p, own in data["participant_data"].items()}
    return bunch_cls(**data)


def _speech_key(text, voice, rate):
    return digest_json({"text": text, "voice": voice, "rate": rate, "version": _SPEECH_VERSION},
                       length=24)


def _load_speech(texts, names, params, cache, verbose):
    """Synthesised audio (padded to whole TRs), words and phones of each story, cached by text.

    Audio is quantised to the int16 grid (and cached as int16), so cached and fresh audio are
    identical.
    """
    from tqdm.auto import tqdm

    from . import synthesize

    tr, sample_rate, voice, rate = params["tr"], 16000, params["voice"], params["rate"]
    start = time.perf_counter()
    speech = {}
    for name in tqdm(names, desc="speech", disable=not verbose, leave=False):
        path = (cache_dir("datasets", "speech") / f"{_speech_key(texts[name], voice, rate)}.pkl"
                if cache else None)
        entry = None
        if cache and path.exists():
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f)
            except Exception:  # a corrupt cache file is synthesised again
                entry = None
        if entry is None:
            utt = synthesize(texts[name], voice=voice, rate=rate)
            entry = dict(audio=np.round(utt.audio * 32767.0).astype(np.int16),
                         duration=utt.duration, words=utt.words, phones=utt.phones)
            if cache:
                atomic_write_bytes(path, pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))
        n_trs = int(np.ceil(entry["duration"] / tr)) + params["n_silent_trs"]
        n_samples = int(round(n_trs * tr * sample_rate))
        wav = np.zeros(n_samples, dtype=np.float32)
        clip = entry["audio"][:n_samples]
        wav[:clip.size] = clip.astype(np.float32) / np.float32(32767.0)
        speech[name] = dict(audio=wav, tr_times=(np.arange(n_trs) + 0.5) * tr,
                            words=entry["words"], phones=entry["phones"])
    if verbose:
        total = sum(v["audio"].size for v in speech.values()) / sample_rate
        logger.info("make_story_dataset: speech of %d stories (%.0f s of audio) in %.1f s",
                    len(names), total, time.perf_counter() - start)
    return speech


def _embed_contexts(contexts, cache):
    """MiniLM embeddings of one story's word contexts, cached on disk by content (slow step)."""
    from .minilm import embed_texts

    key = digest_bytes("\n".join(contexts), length=24)
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


def _participant_seeds(random_state, k):
    """(weight generator, per-story noise seed source) of participant ``k``.

    Participant 0 draws exactly as the one-participant generator always did.
    """
    if k == 0:
        return np.random.default_rng(random_state), np.random.SeedSequence(random_state)
    weights_seed, noise_seed = np.random.SeedSequence([random_state, k]).spawn(2)
    return np.random.default_rng(weights_seed), noise_seed


def _simulate_participant(k, semantic, acoustic, axis_scale, labels, stories, split, params,
                          first_raw=None, keep=None):
    """Voxel weights, SNRs, noise-free signal and noisy responses of one participant.

    The weights are scaled over every story of ``stories`` (whose ``semantic`` and ``acoustic``
    features are needed); the signal and responses are made for the stories of ``keep`` (all
    by default), each with the noise seed of its place in ``stories``.

    Returns the participant's record and its raw (unnormalised) weights, which the other
    participants mix with their own to be ``participant_similarity``-correlated with it.
    """
    from ..metrics import noise_ceiling

    rng, noise_source = _participant_seeds(params["random_state"], k)
    n_voxels = labels.size
    n_dims = axis_scale.size
    uses_semantic = np.isin(labels, ["semantic", "mixed"])
    uses_acoustic = np.isin(labels, ["auditory", "mixed"])
    raw_sem = rng.standard_normal((n_dims, n_voxels))
    raw_ac = rng.standard_normal((params["n_acoustic_bands"], n_voxels))
    if first_raw is not None:
        rho = params["participant_similarity"]
        raw_sem = rho * first_raw[0] + np.sqrt(1.0 - rho ** 2) * raw_sem
        raw_ac = rho * first_raw[1] + np.sqrt(1.0 - rho ** 2) * raw_ac
    sem_weights = raw_sem * axis_scale[:, None] * uses_semantic
    ac_weights = raw_ac * uses_acoustic
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
    keep = stories if keep is None else keep
    signal = {n: semantic[n].astype(np.float64) @ sem_weights
              + acoustic[n].astype(np.float64) @ ac_weights for n in keep}

    signal_gain = np.sqrt(voxel_snr / (1.0 + voxel_snr))
    noise_gain = np.sqrt(1.0 / (1.0 + voxel_snr))

    def present(name, seed):
        noise = np.random.default_rng(seed).standard_normal(signal[name].shape)
        return zscore(signal[name] * signal_gain + noise * noise_gain).astype(np.float32)

    seeds = dict(zip(stories, noise_source.spawn(len(stories))))
    responses, repeats = {}, {}
    for name in keep:
        if name in split["test"]:
            rep_seeds = seeds[name].spawn(params["n_repeats"])
            repeats[name] = np.stack([present(name, s) for s in rep_seeds])
            responses[name] = repeats[name].mean(axis=0)
        else:
            responses[name] = present(name, seeds[name])
    n_rep = params["n_repeats"]
    true_ceiling = np.sqrt(voxel_snr * n_rep / (voxel_snr * n_rep + 1.0))
    record = dict(
        responses=responses, repeats=repeats,
        noise_ceiling=noise_ceiling(repeats[split["test"][0]]).astype(np.float64),
        ground_truth=dict(semantic_weights=sem_weights.astype(np.float32),
                          acoustic_weights=ac_weights.astype(np.float32),
                          signal={n: v.astype(np.float32) for n, v in signal.items()},
                          snr=voxel_snr, true_noise_ceiling=true_ceiling))
    return record, (raw_sem, raw_ac)


def participant_ids(n_participants):
    """Ids of the built-in dataset's simulated participants: ``("P01", "P02", ...)``.

    Parameters
    ----------
    n_participants : int

    Returns
    -------
    ids : tuple of str
    """
    return tuple(f"P{k + 1:02d}" for k in range(n_participants))


def _semantic_axes(embeddings, n_dims):
    """Principal axes (within stories) of the word-context embeddings, and their scales.

    Per-story z-scoring removes the between-story part from the responses anyway. Each axis's
    sign (SVD's is arbitrary) is fixed so the dataset is reproducible across BLAS.
    """
    centred = np.concatenate([e - e.mean(axis=0) for e in embeddings]).astype(np.float64)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(n_dims, vt.shape[0])
    projection = vt[:k].T  # (384, k)
    projection *= np.sign(projection[np.argmax(np.abs(projection), axis=0), np.arange(k)])
    return projection, singular[:k] / singular[0]


def _stimulus_features(speech, embedding, projection, hrf, params):
    """One story's features: semantic and acoustic at the TRs, and the latent value per word.

    Built on the 0.1-s grid, HRF-convolved, sampled at the TRs and z-scored within the story.
    """
    sample_rate, audio, tr_times = 16000, speech["audio"], speech["tr_times"]
    n_steps = int(np.ceil(audio.size / sample_rate / _FINE_STEP))
    fine_times = np.arange(n_steps) * _FINE_STEP
    latent = (embedding - embedding.mean(axis=0)) @ projection
    held = hold_at_onsets(latent, speech["words"]["onset"].to_numpy(), fine_times)
    bands = band_power_envelopes(audio, sample_rate, params["n_acoustic_bands"], _FINE_STEP,
                                 n_steps)
    out = []
    for fine in (held, bands):
        convolved = convolve_hrf(fine, hrf)
        sampled = np.stack([np.interp(tr_times, fine_times + _FINE_STEP / 2, col)
                            for col in convolved.T], axis=1)
        out.append(zscore(sampled).astype(np.float32))
    return out[0], out[1], latent.astype(np.float32)


def _generate(speech, stories, split, params, verbose, summary=None, keep=None):
    """The simulated dataset (without audio) and the summary of the stimulus features.

    The brain (semantic axes, scale of the voxel weights) is built over every story of
    ``stories``; the fields are made for the stories of ``keep`` (all by default), whose
    ``speech`` is given. With a ``summary`` of every story's features (from an earlier build,
    :func:`_read_summary`), only the kept stories are embedded: their features must equal the
    summary's bit for bit, or :class:`~sk_braintune.exceptions.StaleSummaryError` is raised.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tr, sample_rate = params["tr"], 16000
    keep = list(stories) if keep is None else list(keep)
    embedded = keep if summary is not None else stories
    tr_times = {name: speech[name]["tr_times"] for name in keep}
    words = {name: speech[name]["words"] for name in keep}
    phones = {name: speech[name]["phones"] for name in keep}

    per_story = {}
    for name in tqdm(embedded, desc="word meaning", disable=not verbose, leave=False):
        contexts = recent_word_contexts(speech[name]["words"]["label"], params["context_words"])
        per_story[name] = _embed_contexts(contexts, params["cache"])
    if verbose:
        logger.info("make_story_dataset: embedded %d word contexts (%.1f s)",
                    sum(len(e) for e in per_story.values()), time.perf_counter() - start)

    if summary is None:
        projection, axis_scale = _semantic_axes(list(per_story.values()),
                                                params["n_semantic_dims"])
    else:
        projection, axis_scale = summary["projection"], summary["axis_scale"]
    k = projection.shape[1]
    hrf = double_gamma_hrf(dt=_FINE_STEP)
    semantic, acoustic, word_semantics = {}, {}, {}
    for name in embedded:
        semantic[name], acoustic[name], word_semantics[name] = _stimulus_features(
            speech[name], per_story[name], projection, hrf, params)
    if summary is None:
        summary = dict(projection=projection, axis_scale=axis_scale, semantic=semantic,
                       acoustic=acoustic)
    else:
        for name in keep:
            if not (np.array_equal(semantic[name], summary["semantic"][name])
                    and np.array_equal(acoustic[name], summary["acoustic"][name])):
                raise StaleSummaryError(f"the stimulus features of story {name!r} differ from "
                                    "the summary's (another espeak-ng, MiniLM or BLAS build)")
    all_semantic = {name: summary["semantic"][name] for name in stories}
    all_acoustic = {name: summary["acoustic"][name] for name in stories}

    n_kind = [params[f"n_{kind}_voxels"] for kind in _VOXEL_KINDS]
    labels = np.repeat(np.array(_VOXEL_KINDS), n_kind)
    n_voxels = labels.size
    participants = participant_ids(params.get("n_participants", 1))
    participant_data, first_raw = {}, None
    for index, participant in enumerate(participants):
        record, raw = _simulate_participant(index, all_semantic, all_acoustic, axis_scale,
                                            labels, stories, split, params, first_raw, keep)
        participant_data[participant] = record
        first_raw = raw if first_raw is None else first_raw
    first = participant_data[participants[0]]
    test = split["test"][0]
    n_rep = params["n_repeats"]
    low, high = params["snr"]

    description = (
        f"Simulated story-listening fMRI (sk_braintune built-in, generator v{_GENERATOR_VERSION}): "
        f"{len(stories)} stories spoken by espeak-ng (voice {params['voice']}, "
        f"{params['rate']} wpm); {len(participants)} simulated participant(s); "
        f"{n_voxels} voxels ({', '.join(f'{c} {k_}' for k_, c in zip(_VOXEL_KINDS, n_kind))}); "
        f"semantic voxels read {k} PCA axes of all-MiniLM-L6-v2 embeddings of the last "
        f"{params['context_words']} words; auditory voxels read "
        f"{params['n_acoustic_bands']} log mel band-power envelopes; double-gamma HRF; TR {tr} s; "
        f"test story {test!r} heard {n_rep} times; per-presentation SNR {low:g}-{high:g} "
        "(variance ratio)."
    )
    if verbose:
        logger.info("make_story_dataset: done in %.1f s", time.perf_counter() - start)
    semantic = {name: semantic[name] for name in keep}
    acoustic = {name: acoustic[name] for name in keep}
    word_semantics = {name: word_semantics[name] for name in keep}
    data = dict(
        stories=list(stories), sample_rate=sample_rate, tr=tr, tr_times=tr_times,
        responses=first["responses"], repeats=first["repeats"],
        noise_ceiling=first["noise_ceiling"],
        participants=participants, participant_data=participant_data,
        words=words, phones=phones, phone_set="espeak", split=split, voxel_labels=labels,
        ground_truth=dict(
            semantic=semantic, acoustic=acoustic,
            semantic_projection=projection.astype(np.float32), word_semantics=word_semantics,
            hrf=hrf, **first["ground_truth"],
        ),
        description=description,
    )
    return data, summary
