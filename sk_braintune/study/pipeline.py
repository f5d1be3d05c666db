"""The brain-tuning study: the library pipeline behind ``sk-braintune demo``.

:func:`run_braintuning_study` runs the whole study on the built-in story dataset for one
pretrained model: brain-tune its top block on the training stories (several simulated listeners
at once, one shared head), tune the random-fMRI controls the same way, then compare pretrained,
brain-tuned and control models on the held-out story, each listener on its own responses
(:func:`sk_braintune.evaluation.evaluate_listener`: layer-wise, noise-ceiling-normalised
alignment per voxel kind, significance, low-level impact, variance partitioning), plus the
encoding-data curve, a semantic probe and semantic preference. The stage functions are public so
that scripts (``benchmarks/study_braintuning.py``, ``benchmarks/data_scaling.py``) can repeat the
study over seeds and sizes. The pipeline logs and shows progress bars; it never prints (the
``demo`` command, :mod:`sk_braintune.commands.demo`, prints its stages and tables).
"""

from __future__ import annotations

import logging

import numpy as np

from .._docs import fill_doc
from .._stages import LoggedStages, prefixed
from ..builtin.registry import model_label, pretrained_model_path
from ..exceptions import StudyInputError
from .settings import CONTROL_MODELS, DEFAULT_CONTROLS, DemoSettings

__all__ = ["StudyInputError", "DemoSettings", "demo_settings", "model_names", "control_targets",
           "study_dataset", "run_braintuning_study", "shared_layer_features", "mean_of_results",
           "results_rows"]

logger = logging.getLogger(__name__)

MODEL_NAMES = ("pretrained", "brain-tuned", *(CONTROL_MODELS[c] for c in DEFAULT_CONTROLS))


# -- settings -------------------------------------------------------------------------------

def demo_settings(quick=False, epochs=None, **overrides):
    """Sizes and hyperparameters of the demo study (:meth:`DemoSettings.preset`).

    Parameters
    ----------
    quick : bool, default=False
        A smaller run (a couple of minutes) for smoke tests.
    epochs : int, optional
        Override the number of tuning epochs.
    **overrides
        Any field of :class:`~sk_braintune.study.settings.DemoSettings`.

    Returns
    -------
    settings : DemoSettings
        ``dataset`` (keyword arguments of ``make_story_dataset``), ``window`` (s),
        ``min_ceiling`` (tuning targets), ``tuner`` (``BrainTuner`` parameters), ``probe``,
        ``ridge_cv`` and ``controls`` (keys of ``CONTROL_MODELS``), ...
    """
    return DemoSettings.preset(quick=quick, epochs=epochs, **overrides)


def model_names(settings):
    """Names of the models a study with these settings compares, in table order.

    Parameters
    ----------
    settings : DemoSettings or dict
        From :func:`demo_settings` (a dict is checked into a ``DemoSettings``).

    Returns
    -------
    names : tuple of str
        ``"pretrained"``, ``"brain-tuned"``, then one name per control (``CONTROL_MODELS``).

    Raises
    ------
    SettingsError
        For a control that is not a key of ``CONTROL_MODELS`` (a :class:`StudyInputError`).
    """
    settings = DemoSettings.from_mapping(settings)
    return ("pretrained", "brain-tuned", *(CONTROL_MODELS[c] for c in settings.controls))


# -- feature extraction helpers -------------------------------------------------------------

@fill_doc
def shared_layer_features(pretrained, tuned, windows, *, batch_size=16, device="auto",
                          verbose=False):
    """Per-layer mean-pooled features of a pretrained model and of top-layer-tuned copies.

    Models tuned with ``trainable_layers=1`` share every layer below the last with the
    pretrained model, so one forward pass serves all of them: the pretrained hidden states are
    computed once and only the last block of each tuned model runs on top of
    ``hidden_states[N - 1]``. The result equals running each model separately.

    Parameters
    ----------
    pretrained : AudioBackbone
    tuned : dict of str to AudioBackbone
        Backbones whose layers below the last equal ``pretrained``'s.
    windows : AudioWindows or ndarray of shape (n_windows, n_samples)
    %(batch_size)s
    %(device)s
        The models return to the CPU after.
    %(verbose)s

    Returns
    -------
    features : dict of str to ndarray of shape (n_windows, (N + 1) * hidden_size)
        Key ``"pretrained"`` plus the keys of ``tuned``.
    """
    from .._utils import resolve_device
    from ..features import TopBlockFeatures, forward_batches

    device = resolve_device(device)
    models = [pretrained, *tuned.values()]
    for model in models:
        model.to(device)
    try:
        reader = TopBlockFeatures(pretrained, tuned, len(windows))
        forward_batches(pretrained, windows, reader.layers, reader, batch_size=batch_size,
                        progress=verbose, description=f"features ({len(models)} models)",
                        also_eval=reader.modules)
    finally:
        for model in models:
            model.to("cpu")
    return {"pretrained": reader.features, **reader.top_features}


# -- the study ----------------------------------------------------------------------------------

ANALYSES = ("alignment", "significance", "low_level_impact", "variance_partitioning",
            "encoding_curve", "probe", "semantic_preference")


def study_dataset(settings, *, seed=0, verbose=True):
    """The built-in story dataset of a study with these settings (from the cache when made).

    Parameters
    ----------
    settings : DemoSettings or dict
        From :func:`demo_settings`; its ``dataset`` table holds the keyword arguments of
        :func:`sk_braintune.builtin.make_story_dataset`.
    seed : int, default=0
        Seeds the dataset (the same seed as the study's).
    verbose : bool, default=True
        Progress messages (logged) while the dataset is made.

    Returns
    -------
    data : sklearn.utils.Bunch
        The story dataset, as :func:`run_braintuning_study` takes it.
    """
    from ..builtin import make_story_dataset

    settings = DemoSettings.from_mapping(settings)
    return make_story_dataset(random_state=seed, verbose=verbose, **settings.dataset.model_dump(exclude_none=True))


def run_braintuning_study(settings, *, seed=0, device="auto", verbose=True, stages=None,
                          analyses=ANALYSES, data=None):
    """Run the whole study once and return its results.

    Parameters
    ----------
    settings : DemoSettings or dict
        From :func:`demo_settings` (a dict is checked into a ``DemoSettings``).
    seed : int, default=0
        Seeds the dataset, the tuning and the probes.
    device : str, default="auto"
    verbose : bool, default=True
        Progress bars.
    stages : callable, optional
        ``stages(name)`` returns a context manager wrapped around each stage and has a
        ``times`` dict (stage name -> seconds), e.g. the commands' timer that prints each
        stage; stages are logged (:class:`sk_braintune._stages.LoggedStages`) when None.
    analyses : sequence of str, default=ANALYSES
        Which analyses to run after tuning; the layer-wise alignment always runs.
    data : sklearn.utils.Bunch, optional
        The dataset, made by :func:`study_dataset` with the same settings and seed; made here
        (as the stage ``dataset``) when None.

    Returns
    -------
    results : dict
        JSON-serialisable: ``table`` (rows per model, :func:`results_rows`), ``layers`` (per
        model, per voxel kind, per layer), ``history`` (per tuned model), ``stage_seconds``,
        ``settings``; with ``settings.significance``, ``significance`` (per model, per voxel
        kind: voxels with q < 0.05, 95% interval of the mean normalised r; the per-voxel p/q
        values go to ``voxel_scores`` as ``<model>_p_values`` / ``<model>_q_values``); with
        ``settings.variance_partitioning``, ``variance_partitioning`` (per model, per voxel
        kind: unique model / low-level, shared, shared fraction of the last layer);
        ``voxel_maps`` (not JSON: arrays), per listener what its brain maps need: ``space``,
        ``column_index`` and ``mask_img`` (the dataset's, None where it has none),
        ``noise_ceiling``,
        ``voxel_scores`` and ``voxel_q`` (model -> ndarray (n_voxels,): the last layer's
        normalised r and BH-FDR q-values, :func:`~sk_braintune.evaluation.evaluate_listener`;
        ``voxel_q`` empty without the significance).
    """
    from ..datasets import participant_windows, select_participant
    from ..evaluation import (
        default_encoder,
        evaluate_listener,
        low_level_feature_spaces,
        split_layers,
    )
    from ..model_selection import HeldOutStories
    from ..tuning import BrainTuner, FrozenLayerCache
    from ..windows import dataset_windows, stack_responses

    settings = DemoSettings.from_mapping(settings)
    stages = stages or LoggedStages()
    names = model_names(settings)
    results = {"settings": settings, "seed": seed, "models": list(names)}

    if data is None:
        with stages("dataset: espeak-ng stories, simulated responses"):
            data = study_dataset(settings, seed=seed, verbose=verbose)
    train, valid, test = (list(data.split[k]) for k in ("train", "validation", "test"))
    results["train_minutes"] = sum(len(data.audio[s]) for s in train) / data.sample_rate / 60

    with stages(f"pretrained model: {model_label(settings.model)}"):
        model_path = pretrained_model_path(settings.model)

    window = settings.window
    fit_stories = train + valid
    listeners = {p: select_participant(data, p) for p in data.participants}
    several = len(listeners) > 1
    # tuning rows: one per (window, listener) with several listeners (the multi-brain-tuning
    # paper: one shared head), the targets the voxels every listener's noise ceiling passes
    X_fit, y_fit, g_fit, p_fit = participant_windows(data, fit_stories, window=window)
    ceilings = np.min([np.asarray(own.noise_ceiling) for own in listeners.values()], axis=0)
    selected = np.flatnonzero(ceilings > settings.min_ceiling)
    results["n_tuning_targets"] = int(selected.size)
    results["participants"] = list(listeners)
    validation = HeldOutStories(valid)
    by_listener = {"participants": p_fit} if several else {}

    # one FrozenLayerCache for the brain-tuned model and its controls: same model, windows and
    # trainable_layers, so the frozen layers run once for all of them
    tuner_params = dict(settings.tuner.model_dump(), validation=validation, device=device,
                        random_state=seed, verbose=verbose, frozen_layer_cache=FrozenLayerCache())
    tuners = {}
    who = f"{len(listeners)} listeners' " if several else ""
    with stages(f"brain-tuning on {len(fit_stories)} stories, {who}{selected.size} voxels "
                f"with noise ceiling > {settings.min_ceiling}"):
        tuners["brain-tuned"] = BrainTuner(model_path, **tuner_params).fit(
            X_fit, y_fit[:, selected], groups=g_fit, **by_listener)
    results["control"] = {}
    for kind in settings.controls:
        targets, details = _listener_controls(kind, y_fit[:, selected], g_fit, p_fit, seed)
        results["control"][kind] = details
        with stages(f"{CONTROL_MODELS[kind]} control: tuning on {details['description']}"):
            tuners[CONTROL_MODELS[kind]] = BrainTuner(model_path, **tuner_params).fit(
                X_fit, targets, groups=g_fit, **by_listener)
    del X_fit, y_fit
    results["provenance"] = _provenance(data, selected, model_path, tuners)
    results["history"] = {name: t.history_ for name, t in tuners.items()}
    results["best_epoch"] = {name: int(t.best_epoch_) for name, t in tuners.items()}

    sources = {"pretrained": model_path, **tuners}
    X_all = dataset_windows(data, fit_stories + test, window=window)
    g_all = X_all.groups.copy()
    with stages(f"features: every layer, {len(X_all)} windows of {window:g} s, "
                f"{len(names)} models"):
        features = _study_features(model_path, tuners, X_all, settings, device=device,
                                   verbose=verbose)
        n_layers = tuners["brain-tuned"].backbone_.num_hidden_layers + 1
    del X_all

    labels = np.asarray(data.voxel_labels)
    responses = {p: stack_responses(own, fit_stories + test) for p, own in listeners.items()}
    ceiling = {p: np.asarray(own.noise_ceiling) for p, own in listeners.items()}
    # one encoding model for every fit: settings.ridge_backend = "torch" runs them on the GPU
    backend = settings.ridge_backend
    encoder = default_encoder(cv=settings.ridge_cv, backend=backend)
    # the per-listener evaluation (alignment always; the rest as the settings ask)
    evaluated = {
        "significance": "significance" in analyses and settings.significance,
        "low_level_impact": "low_level_impact" in analyses,
        "variance_partitioning": ("variance_partitioning" in analyses
                                  and settings.variance_partitioning)}
    listener_analyses = ("alignment", *(a for a, on in evaluated.items() if on))
    low_level = None
    if evaluated["low_level_impact"] or evaluated["variance_partitioning"]:
        # the stimuli are every listener's: their low-level features are made once
        with stages("low-level features: power spectrum, phonemes, diphones, articulation"):
            low_level = low_level_feature_spaces(data, fit_stories, test)
    per_listener = {p: {} for p in listeners}
    results["voxel_scores"] = {}
    results["voxel_maps"] = {}
    voxel_p_q = {}
    for p, own in listeners.items():
        evaluation = evaluate_listener(
            features, n_layers, responses[p], g_all, train_stories=fit_stories,
            test_stories=test, noise_ceiling=ceiling[p], voxel_labels=labels, dataset=own,
            encoder=encoder, analyses=listener_analyses, low_level=low_level,
            cv=settings.ridge_cv, backend=backend, n_permutations=settings.n_permutations,
            partitioning_n_iter=settings.partitioning_n_iter, random_state=seed,
            stages=prefixed(stages, f"{p}: " if several else ""))
        own_results = per_listener[p]
        own_results["layers"] = {name: {roi: v.tolist() for roi, v in t["roi"].items()}
                                 for name, t in evaluation.alignment.items()}
        results["voxel_scores"][p] = {name: t["voxels"]
                                      for name, t in evaluation.alignment.items()}
        # what a brain map of this listener needs: its places and its last layer's scores
        results["voxel_maps"][p] = {
            "space": own.get("space"), "column_index": own.get("column_index"),
            "mask_img": own.get("mask_img"), "noise_ceiling": ceiling[p],
            "voxel_scores": dict(evaluation.voxel_scores), "voxel_q": dict(evaluation.voxel_q)}
        if evaluation.significance is not None:
            own_results["significance"] = {name: sig["roi"]
                                           for name, sig in evaluation.significance.items()}
            for name, sig in evaluation.significance.items():
                key = (f"{p}_" if several else "") + name.replace("-", "_")
                voxel_p_q[f"{key}_p_values"] = sig["p_values"]
                voxel_p_q[f"{key}_q_values"] = sig["q_values"]
        if evaluation.low_level_impact is not None:
            own_results["low_level_impact"] = evaluation.low_level_impact
        if evaluation.variance_partitioning is not None:
            own_results["variance_partitioning"] = evaluation.variance_partitioning
        del evaluation
    by_model = results["voxel_scores"]
    results["voxel_scores"] = {name: np.mean([by_model[p][name] for p in listeners], axis=0)
                               for name in names}
    results["voxel_scores"].update(voxel_p_q)
    results["voxel_labels"] = labels.tolist()

    last_layers = {name: split_layers(f, n_layers)[:, -1] for name, f in features.items()}
    del features
    mean_over = f" (each of {len(listeners)} listeners)" if several else ""
    if "encoding_curve" in analyses and settings.encoding_curve:
        counts = ", ".join(map(str, settings.encoding_curve))
        with stages(f"encoding-data curve: the ridge on {counts} and all fitting stories "
                    f"(last layer){mean_over}"):
            for p in listeners:
                per_listener[p]["encoding_curve"] = _encoding_curve(
                    last_layers, responses[p], g_all, fit_stories, test, ceiling[p], labels,
                    settings, encoder)
    # the listeners' mean of every per-listener result (the result itself with one listener)
    for key in per_listener[next(iter(listeners))]:
        results[key] = mean_of_results([per_listener[p][key] for p in listeners])
    if several:
        results["per_participant"] = per_listener
    if "probe" in analyses:
        with stages("semantic probe: spoken intents, split by paraphrase"):
            results["probe"] = _probe_scores(sources, settings, seed=seed, device=device,
                                             verbose=verbose)
    if "semantic_preference" in analyses:
        with stages("semantic preference: synonyms vs near-homophones"):
            results["semantic_preference"] = _preference_scores(sources, device=device,
                                                                verbose=verbose)

    results["table"] = results_rows(results, n_layers)
    results["stage_seconds"] = dict(stages.times)
    return results


def _provenance(data, selected, model_path, tuners):
    """Split, tuning targets and fingerprints of the data and models, for the manifest."""
    from ..provenance import dataset_fingerprints, fingerprint_model, voxel_selection

    return {"split": {k: list(v) for k, v in data.split.items()},
            "voxels": {"tuning_targets": voxel_selection(selected, len(data.noise_ceiling))},
            "data": dataset_fingerprints(data),
            "models": {"pretrained": fingerprint_model(model_path),
                       **{name: fingerprint_model(t) for name, t in tuners.items()}}}


@fill_doc
def control_targets(kind, responses, groups, random_state=None):
    """Random-fMRI targets for a control model, row-aligned with ``responses``.

    Parameters
    ----------
    kind : {"block-permuted", "other-story", "phase-randomized"}
        ``"block-permuted"``: 15-TR blocks of the concatenated run, each moved at least 10
        blocks away (fewer when the run is short: half the number of blocks), so with ~1-2 min
        stories they land in other stories. ``"other-story"``: each story takes another story's
        responses, length-matched (:func:`~sk_braintune.tuning.other_story_targets`).
        ``"phase-randomized"``: a generic-tuning control, each story's responses with random
        Fourier phases shared by all voxels (the same spectra, autocorrelation and covariance,
        no stimulus; :func:`~sk_braintune.tuning.phase_randomized_targets`).
    responses : ndarray of shape (n_trs, n_voxels)
        Whole stories concatenated, as :func:`~sk_braintune.windows.windows_from_dataset`
        returns them.
    %(groups_rows)s
    %(random_state)s

    Returns
    -------
    targets : ndarray of shape (n_trs, n_voxels)
    details : dict
        What was done (JSON-serialisable), with a one-line ``description``.
    """
    from ..preprocessing import split_by_story
    from ..tuning.controls import (
        block_permuted_targets,
        other_story_targets,
        phase_randomized_targets,
    )

    if kind == "block-permuted":
        min_distance = min(10, len(responses) // 15 // 2)
        targets = block_permuted_targets(responses, block_size=15, min_distance=min_distance,
                                         random_state=random_state)
        return targets, {"block_size": 15, "min_distance": min_distance,
                         "description": f"15-TR blocks permuted >= {min_distance} blocks away"}
    if kind == "other-story":
        groups = np.asarray(groups)
        by_story = split_by_story(responses, groups)
        # contiguous stories <=> the story changes exactly once between consecutive stories
        if np.count_nonzero(groups[1:] != groups[:-1]) != len(by_story) - 1:
            raise StudyInputError("other-story targets need each story's rows contiguous")
        targets, mapping = other_story_targets(by_story, random_state=random_state)
        return (np.concatenate([targets[s] for s in by_story]),
                {"mapping": mapping, "description": "another story's responses"})
    if kind == "phase-randomized":
        targets = phase_randomized_targets(responses, groups=groups, random_state=random_state)
        return targets, {"description": "each story's responses with random Fourier phases"}
    raise StudyInputError(f"unknown control {kind!r}; choose from {list(CONTROL_MODELS)}")


def _study_features(model_path, tuners, windows, settings, *, device, verbose):
    """Features of the pretrained and tuned models, sharing the frozen layers when possible."""
    from ..models import load_backbone

    if settings.tuner.trainable_layers == 1:
        pretrained = load_backbone(model_path)
        return shared_layer_features(pretrained, {n: t.backbone_ for n, t in tuners.items()},
                                     windows, device=device, verbose=verbose)
    from ..features import extract_layer_features

    features = {}
    for name, source in {"pretrained": model_path, **tuners}.items():
        features[name], _ = extract_layer_features(source, windows, device=device,
                                                   verbose=verbose)
    return features


def mean_of_results(results):
    """The element-wise mean of results that share one nested structure (one per listener).

    Parameters
    ----------
    results : list
        Dicts, lists and numbers nested alike (e.g. each listener's ROI alignment per model);
        strings must be equal in all of them (they are kept).

    Returns
    -------
    mean : same structure
        Numbers averaged, lists averaged element by element; one result is returned as is.
    """
    first = results[0]
    if len(results) == 1:
        return first
    if isinstance(first, dict):
        return {k: mean_of_results([r[k] for r in results]) for k in first}
    if isinstance(first, (list, tuple)):
        return [mean_of_results(list(items)) for items in zip(*results)]
    if isinstance(first, str):
        return first
    return float(np.mean(results))


def _listener_controls(kind, responses, groups, participants, seed):
    """Control targets made from each listener's own rows (:func:`control_targets`)."""
    targets = np.empty_like(responses)
    for who in np.unique(participants):
        rows = np.flatnonzero(participants == who)
        targets[rows], details = control_targets(kind, responses[rows], groups[rows],
                                                 random_state=seed)
    return targets, details


def _encoding_curve(last_layers, responses, groups, fit_stories, test, noise_ceiling, labels,
                    settings, encoder):
    """Normalised r per model, voxel kind and number of fitting stories (last layer)."""
    from ..analysis import data_efficiency_curve

    kinds = {kind: np.flatnonzero(labels == kind) for kind in ("semantic", "auditory")
             if np.any(labels == kind)}
    curve = data_efficiency_curve(last_layers, responses, groups, fit_stories, test,
                                  n_stories=settings.encoding_curve,
                                  noise_ceiling=noise_ceiling, voxels=kinds, estimator=encoder)
    return {name: {roi: {str(row.n_train_stories): float(row.mean_normalized)
                         for row in part[part["voxels"] == roi].itertuples()}
                   for roi in kinds}
            for name, part in curve.groupby("model", sort=False)}


def _probe_scores(sources, settings, *, seed, device, verbose):
    from ..analysis import pooled_layer_features, probe_layers
    from ..builtin import make_intent_dataset

    intents = make_intent_dataset(random_state=seed, **settings.probe.dataset)
    train, test = intents.split["train"], intents.split["test"]
    y = np.asarray(intents.target)
    out = {}
    for name, source in sources.items():
        # padded batches (exact=False): each clip is still pooled over its own frames only
        feats = pooled_layer_features(source, intents.audio, device=device, exact=False,
                                      verbose=verbose)
        table = probe_layers(feats[train], y[train], feats[test], y[test],
                             groups=np.asarray(intents.template)[train], random_state=seed)
        out[name] = {str(row["layer"]): float(row["score"]) for _, row in table.iterrows()}
    out["chance"] = 1.0 / len(intents.target_names)
    return out


def _preference_scores(sources, *, device, verbose):
    from ..analysis import semantic_preference, word_representations
    from ..builtin import make_word_pairs

    pairs = make_word_pairs()
    out = {}
    for name, source in sources.items():
        reps = word_representations(source, pairs, device=device, verbose=verbose)
        table = semantic_preference(reps, pairs.synonym_pairs, pairs.homophone_pairs)
        out[name] = {column: [float(v) for v in table[column].to_numpy()]
                     for column in ("synonym_similarity", "homophone_similarity",
                                    "preference", "sem")}
    return out


def results_rows(results, n_layers):
    """The rows of the study's results table, one per model (the demo's ``results.csv``).

    Parameters
    ----------
    results : dict
        From :func:`run_braintuning_study` (``models``, ``layers`` and the analyses run).
    n_layers : int
        Layers per model (the probe's last layer is ``n_layers - 1``).

    Returns
    -------
    rows : list of dict
        ``model``, then per voxel kind the last and best layer's normalised r
        (``sem_last``, ``sem_best``, ...), the low-level impact on the last layer
        (``lowlevel_sem_%``, ...), the probe's last and best layer and the semantic
        preference of the last layer, where those analyses ran.
    """
    rows = []
    for name in results["models"]:
        layer_roi = results["layers"][name]
        row = {"model": name}
        for roi in ("semantic", "auditory", "mixed"):
            if roi in layer_roi:
                values = np.asarray(layer_roi[roi])
                row[f"{roi[:3]}_last"] = float(values[-1])
                row[f"{roi[:3]}_best"] = float(np.nanmax(values))
        impact = results.get("low_level_impact", {}).get(name, {})
        for roi in ("semantic", "auditory"):
            if roi in impact:
                row[f"lowlevel_{roi[:3]}_%"] = impact[roi]["impact_percent"]
        if "probe" in results:
            numeric = {k: v for k, v in results["probe"][name].items() if k != "weighted"}
            row["probe_last"] = numeric[str(n_layers - 1)]
            row["probe_best"] = max(numeric.values())
        if "semantic_preference" in results:
            row["sem_pref_last"] = results["semantic_preference"][name]["preference"][-1]
        rows.append(row)
    return rows


