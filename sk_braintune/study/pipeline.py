"""The brain-tuning study behind ``sk-braintune demo`` and ``sk-braintune dataset``.

``run_demo`` runs the whole study on the built-in story dataset for each pretrained model (the
self-supervised model made here and Whisper tiny.en): brain-tune its top block on the training
stories (several simulated listeners at once, one shared head), tune a random-fMRI control the
same way, then compare pretrained, brain-tuned and control models on the held-out story
(layer-wise, noise-ceiling-normalised alignment per voxel kind, each listener on its own
responses), low-level impact, a semantic probe and semantic preference. The stage functions are
public so that scripts (``benchmarks/study_braintuning.py``, ``benchmarks/data_scaling.py``) can
repeat the study over seeds and sizes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..commands.results import (
    StageTimer,
    dataset_summary,
    format_results_table,
    peak_memory_mib,
    save_config,
    write_results,
)
from .._docs import fill_doc
from ..builtin.registry import model_label, pretrained_model_path
from ..exceptions import StudyInputError
from ..commands.settings import DatasetCommandSettings, DemoCommandSettings
from .settings import CONTROL_MODELS, DEFAULT_CONTROLS, DemoSettings

__all__ = ["StudyInputError", "DemoSettings", "demo_settings", "model_names", "control_targets",
           "run_demo", "run_dataset_summary", "run_braintuning_study", "shared_layer_features",
           "show_library_messages", "mean_of_results"]

MODEL_NAMES = ("pretrained", "brain-tuned", *(CONTROL_MODELS[c] for c in DEFAULT_CONTROLS))
MIN_ALIGNMENT_FOR_IMPACT = 0.05  # impact (A - A_resid) / A is not shown where A is below this


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
        Any field of :class:`~sk_braintune.study.settings.DemoSettings`; a mapping for a
        nested table changes only the keys it holds.

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


def show_library_messages(verbose=True):
    """Send the package's INFO log messages (dataset and tuning progress) to the terminal.

    Library modules log instead of printing; the commands call this so that a verbose run
    shows those messages. Calling it again changes nothing.

    Parameters
    ----------
    verbose : bool, default=True
        False: leave logging as it is.
    """
    import logging
    import sys

    if not verbose:
        return
    logger = logging.getLogger("sk_braintune")
    if not any(getattr(h, "_sk_braintune_terminal", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._sk_braintune_terminal = True
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def _set_torch_threads(config):
    import torch

    if config.threads:
        torch.set_num_threads(int(config.threads))


# -- dataset summary (also the first stage of the demo) ---------------------------------------

def run_dataset_summary(config, command_line=None):
    """``sk-braintune dataset``: generate (or load from the cache) and summarise the demo's dataset.

    Parameters
    ----------
    config : DatasetCommandSettings or dict
        Resolved command-line settings.
    command_line : list of str, optional
        Unused (the command writes no results folder); accepted like the other commands.
    """
    from ..builtin import make_story_dataset

    config = DatasetCommandSettings.from_mapping(config)
    show_library_messages(not config.quiet)
    dataset = DemoSettings().dataset.model_dump(exclude_none=True)
    data = make_story_dataset(random_state=config.seed, verbose=not config.quiet, **dataset)
    print("Built-in story dataset (the demo's: "
          + ", ".join(f"{k}={v}" for k, v in dataset.items()) + ")")
    print(dataset_summary(data))


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
    from ..features import pooled_features

    device = resolve_device(device)
    models = [pretrained, *tuned.values()]
    for model in models:
        model.to(device)
    try:
        features, tuned_features = pooled_features(
            pretrained, windows, range(pretrained.num_hidden_layers + 1), "mean",
            batch_size=batch_size, tops=tuned, progress=verbose,
            description=f"features ({len(models)} models)")
    finally:
        for model in models:
            model.to("cpu")
    return {"pretrained": features, **tuned_features}


# -- the study ----------------------------------------------------------------------------------

ANALYSES = ("alignment", "significance", "low_level_impact", "variance_partitioning",
            "encoding_curve", "probe", "semantic_preference")


def run_braintuning_study(settings, *, seed=0, device="auto", verbose=True, stages=None,
                          output=None, figures=True, analyses=ANALYSES):
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
        Stage timer (prints stage names and times).
    output : str or pathlib.Path, optional
        Where figures go (none when None).
    figures : bool, default=True
    analyses : sequence of str, default=ANALYSES
        Which analyses to run after tuning; the layer-wise alignment always runs.

    Returns
    -------
    results : dict
        JSON-serialisable: ``table`` (rows per model), ``layers`` (per model, per voxel kind,
        per layer), ``history`` (per tuned model), ``stage_seconds``, ``settings``; with
        ``settings.significance``, ``significance`` (per model, per voxel kind: voxels with
        q < 0.05, 95% interval of the mean normalised r; the per-voxel p/q values go to
        ``voxel_scores`` as ``<model>_p_values`` / ``<model>_q_values``); with
        ``settings.variance_partitioning``, ``variance_partitioning`` (per model, per voxel
        kind: unique model / low-level, shared, shared fraction of the last layer).
    """
    from ..builtin import make_story_dataset
    from ..datasets import participant_windows, select_participant
    from ..evaluation.alignment import (
        alignment_significance,
        default_encoder,
        layerwise_alignment,
        low_level_impacts,
        lowlevel_feature_spaces,
        split_layers,
        variance_partition_summary,
    )
    from ..model_selection import HeldOutStories
    from ..tuning import BrainTuner, FrozenLayerCache
    from ..windows import dataset_windows, stack_responses

    settings = DemoSettings.from_mapping(settings)
    stages = stages or StageTimer()
    names = model_names(settings)
    results = {"settings": settings, "seed": seed, "models": list(names)}

    with stages("dataset: espeak-ng stories, simulated responses"):
        data = make_story_dataset(random_state=seed, verbose=verbose,
                                  **settings.dataset.model_dump(exclude_none=True))
    print(dataset_summary(data), flush=True)
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
                        random_state=seed, verbose=verbose, frozen_cache=FrozenLayerCache())
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
    encoder = default_encoder(cv=settings.ridge_cv, backend=settings.ridge_backend)
    per_listener = {p: {} for p in listeners}
    mean_over = f" (each of {len(listeners)} listeners)" if several else ""
    with stages(f"alignment: voxelwise ridge per layer, scored on the held-out story{mean_over}"):
        layers = {p: {name: layerwise_alignment(features[name], n_layers, responses[p], g_all,
                                                fit_stories, test, noise_ceiling=ceiling[p],
                                                voxel_labels=labels, estimator=encoder)
                      for name in names} for p in listeners}
    for p in listeners:
        per_listener[p]["layers"] = {name: {roi: v.tolist() for roi, v in t["roi"].items()}
                                     for name, t in layers[p].items()}
    results["voxel_scores"] = {name: np.mean([layers[p][name]["voxels"] for p in listeners],
                                             axis=0) for name in names}
    results["voxel_labels"] = labels.tolist()

    if "significance" in analyses and settings.significance:
        with stages(f"significance: {settings.n_permutations} block permutations, BH-FDR, "
                    f"block-bootstrap intervals (last layer){mean_over}"):
            for p in listeners:
                per_listener[p]["significance"] = {}
                for name in names:
                    fit = layers[p][name]["last_layer"]
                    sig = alignment_significance(
                        fit["y_true"], fit["prediction"], labels, groups=fit["groups"],
                        noise_ceiling=ceiling[p], n_permutations=settings.n_permutations,
                        n_bootstraps=settings.n_permutations, random_state=seed)
                    per_listener[p]["significance"][name] = sig["roi"]
                    key = (f"{p}_" if several else "") + name.replace("-", "_")
                    results["voxel_scores"][f"{key}_p_values"] = sig["p_values"]
                    results["voxel_scores"][f"{key}_q_values"] = sig["q_values"]
    del layers

    lowlevel = None
    last_layers = {name: split_layers(f, n_layers)[:, -1] for name, f in features.items()}
    del features
    if "low_level_impact" in analyses:
        with stages("low-level impact: power spectrum, phonemes, diphones, articulation "
                    f"regressed out{mean_over}"):
            lowlevel = lowlevel_feature_spaces(data, fit_stories, test)
            for p, own in listeners.items():
                per_listener[p]["low_level_impact"] = low_level_impacts(
                    own, last_layers, g_all, fit_stories, test, estimator=encoder,
                    cv=settings.ridge_cv, lowlevel=lowlevel, responses=responses[p])
    if "variance_partitioning" in analyses and settings.variance_partitioning:
        with stages("variance partitioning: last layer vs the same low-level features "
                    f"(banded ridge){mean_over}"):
            for p, own in listeners.items():
                per_listener[p]["variance_partitioning"] = variance_partition_summary(
                    own, last_layers, g_all, fit_stories, test, lowlevel=lowlevel,
                    n_iter=settings.partitioning_n_iter, cv=settings.ridge_cv,
                    backend=settings.ridge_backend, random_state=seed,
                    responses=responses[p])["roi"]
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

    results["table"] = _results_rows(results, n_layers)
    if figures and output is not None:
        with stages("figures"):
            results["figures"] = _write_figures(results, tuners, Path(output))
    results["stage_seconds"] = dict(stages.times)
    return results


def _provenance(data, selected, model_path, tuners):
    """Split, tuning targets and fingerprints of the data and models, for the manifest."""
    from ..commands.report import dataset_fingerprints, fingerprint_model, voxel_selection

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


def _results_rows(results, n_layers):
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


def _second_table(results):
    """Rows of the demo's second table: variance partitioning and significance per model."""
    rows = []
    for name in results["models"]:
        partitions = results.get("variance_partitioning", {}).get(name, {})
        significance = results.get("significance", {}).get(name, {})
        if not partitions and not significance:
            continue
        row = {"model": name}
        for roi in ("semantic", "auditory"):
            if roi in partitions:
                row[f"{roi[:3]}_unique"] = partitions[roi]["unique_model"]
                row[f"{roi[:3]}_shared"] = partitions[roi]["shared"]
                row[f"{roi[:3]}_shared_%"] = 100 * partitions[roi]["shared_fraction"]
        for roi in ("semantic", "auditory"):
            if roi in significance:
                entry = significance[roi]
                # a mean over listeners with several
                row[f"{roi[:3]}_sig"] = f"{entry['n_significant']:.4g}/{entry['n_voxels']:.0f}"
                row[f"{roi[:3]}_ci"] = f"[{entry['low']:.2f}, {entry['high']:.2f}]"
        rows.append(row)
    return rows


def _write_figures(results, tuners, output):
    from ..analysis import figures as fig

    output.mkdir(parents=True, exist_ok=True)
    written = []

    def save(figure, name):
        path = output / name
        figure.savefig(path, dpi=120, bbox_inches="tight")
        written.append(str(path))

    for roi in ("semantic", "auditory"):
        save(fig.plot_layer_alignment({m: results["layers"][m][roi]
                                       for m in results["models"]},
                                      title=f"{roi} voxels"), f"alignment_{roi}.png")
    import pandas as pd

    if "low_level_impact" in results:
        # (A - A_resid) / A is noise where A is near 0 (the noise voxels): leave those out
        impacts = {m: pd.Series({roi: v["impact_percent"] for roi, v in table.items()
                                 if v["A"] >= MIN_ALIGNMENT_FOR_IMPACT})
                   for m, table in results["low_level_impact"].items()}
        save(fig.plot_low_level_impact(impacts), "low_level_impact.png")
    if "probe" in results:
        tables = {m: pd.DataFrame({"layer": list(results["probe"][m]),
                                   "score": list(results["probe"][m].values())})
                  for m in results["models"]}
        save(fig.plot_probe_scores(tables, chance=results["probe"].get("chance"),
                                   title="Spoken-intent probe (held-out paraphrases)"),
             "probe_scores.png")
    if "semantic_preference" in results:
        tables = {m: pd.DataFrame(v) for m, v in results["semantic_preference"].items()}
        save(fig.plot_semantic_preference(tables), "semantic_preference.png")
    for name, tuner in tuners.items():
        save(fig.plot_training_curves(tuner.history_, title=name),
             f"training_{name.replace(' ', '_')}.png")
    return written


def run_demo(config, command_line=None):
    """``sk-braintune demo``: the full study on the built-in story dataset, for each model.

    Runs :func:`run_braintuning_study` once per pretrained model of ``config.models`` (the
    self-supervised model made here and Whisper tiny.en by default) on the same dataset, and
    writes ``results.json``, ``results.csv`` (one row per model family and model),
    ``voxel_scores.npz``, ``config.toml``, ``manifest.json`` and ``report.html`` into
    ``config.output``, each family's figures into a subfolder named after it.

    Parameters
    ----------
    config : DemoCommandSettings or dict
        Resolved command-line settings (``output``, ``quick``, ``seed``, ``device``, ``epochs``,
        ``models``, ``controls``, ``quiet``, ``no_figures``, ``threads``).
    command_line : list of str, optional
        The command as typed, for the manifest (default: ``sys.argv``).

    Returns
    -------
    results : dict
        ``families`` (model -> the study's results), ``table`` (rows with ``family`` and
        ``model``), ``stage_seconds``, ``wall_seconds``, ``peak_memory_mib``.
    """
    from ..commands.report import utc_now, write_manifest, write_report

    config = DemoCommandSettings.from_mapping(config)
    started = utc_now()
    _set_torch_threads(config)
    output = Path(config.output)
    verbose = not config.quiet
    show_library_messages(verbose)
    stages = StageTimer()
    labels = [model_label(m) for m in config.models]
    print(f"sk_braintune demo: brain-tuning {' and '.join(labels)} on the built-in story "
          f"dataset ({'quick' if config.quick else 'full'} run), results in {output}/",
          flush=True)
    settings = config.study_settings()
    families, provenance, voxel_scores = {}, {}, {}
    for model, label in zip(config.models, labels):
        settings.model = model
        stages.prefix = f"{label}: " if len(config.models) > 1 else ""
        print(f"\n== {label}", flush=True)
        result = run_braintuning_study(settings, seed=config.seed, device=config.device,
                                       verbose=verbose, stages=stages,
                                       output=output / _folder_name(label),
                                       figures=not config.no_figures)
        provenance[model] = result.pop("provenance", {})
        voxel_scores.update({f"{_folder_name(label)}__{k}": v
                             for k, v in result.pop("voxel_scores").items()})
        families[model] = result
    stages.prefix = ""
    results = {"models": list(config.models), "families": families,
               "table": [{"family": label, **row} for model, label in zip(config.models, labels)
                         for row in families[model]["table"]],
               "figures": [f for r in families.values() for f in r.get("figures", [])],
               "voxel_scores": voxel_scores,
               "stage_seconds": dict(stages.times),
               "peak_memory_mib": peak_memory_mib(), "wall_seconds": stages.elapsed()}
    paths = write_results(results, output)
    save_config(config, output)
    manifest = _demo_manifest(config, settings, provenance, results, started, command_line)
    paths.append(str(write_manifest(manifest, output)))
    paths.append(str(write_report(
        output, title="sk-braintune demo: brain-tuning on the built-in story dataset",
        figures=results["figures"], manifest=manifest, summary=DEMO_SUMMARY)))
    _print_demo_tables(results, labels)
    print(f"wall time {results['wall_seconds']:.0f} s, peak memory "
          f"{results['peak_memory_mib']:.0f} MiB; wrote {', '.join(paths)}"
          + (f" and {len(results['figures'])} figures" if results["figures"] else ""))
    return results


DEMO_SUMMARY = ("Held-out story, mean over the simulated listeners. sem/aud/mix: "
                "noise-ceiling-normalised r in semantic, auditory and mixed voxels (last layer / "
                "best layer); lowlevel_*_%: low-level impact on the last layer's alignment; "
                "probe: spoken-intent accuracy on unseen paraphrases; sem_pref: synonyms minus "
                "near-homophones (last layer).")


def _folder_name(label):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in label).strip("_")


def _demo_manifest(config, settings, provenance, results, started, command_line):
    from ..commands.report import build_manifest

    first = next(iter(provenance.values()))
    seed = config.seed
    return build_manifest(
        "demo", {"command": config, "study": settings}, started=started,
        command_line=command_line,
        seeds={"dataset": seed, "tuning": seed, "controls": seed, "probe": seed},
        split=first.get("split"), voxels=first.get("voxels"), data=first.get("data"),
        models={f"{model}/{name}": fingerprint for model, p in provenance.items()
                for name, fingerprint in p.get("models", {}).items()},
        extra={"stage_seconds": results["stage_seconds"],
               "peak_memory_mib": results["peak_memory_mib"]})


def _print_demo_tables(results, labels):
    chance = next(iter(results["families"].values())).get("probe", {}).get("chance")
    print()
    # the report's summary, with the probe's chance level, wrapped for the terminal
    print(textwrap.fill(DEMO_SUMMARY.replace(
        "unseen paraphrases;", f"unseen paraphrases (chance {chance or float('nan'):.3f});"),
        width=99))
    for label, family in zip(labels, results["families"].values()):
        print(f"\n{label}")
        print(format_results_table(family["table"]))
    seconds = [_second_table(family) for family in results["families"].values()]
    if any(seconds):
        print()
        print("Second estimate and significance (last layer). unique/shared: variance "
              "partitioning R^2 vs low-level\nfeatures, shared_%: shared / (unique + shared); "
              "sig: voxels with q < 0.05 (block permutation,\nBH-FDR); ci: 95% block-bootstrap "
              "interval of the mean normalised r.")
        for label, second in zip(labels, seconds):
            if second:
                print(f"\n{label}")
                print(format_results_table(second))
    print()
