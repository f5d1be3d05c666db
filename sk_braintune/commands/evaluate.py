"""``sk-braintune evaluate``: layer-wise alignment and the low-level impact on each participant.

Per-layer features, voxelwise ridge encoding models fitted on the training stories and scored
on the held-out story (noise-ceiling-normalised r per layer and ROI), the low-level impact,
variance partitioning and significance; a per-participant table, an ROI summary across
participants, figures, brain maps and per-layer score images in the data's space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._stages import prefixed
from ..exceptions import StudyInputError
from . import realdata
from .brainmaps import load_subject_mappers, map_figures, subject_brain_map
from .results import StageTimer, results_folder, save_arrays, save_figure, write_csv, write_json
from .settings import EvaluateSettings
from .terminal import show_library_messages

__all__ = ["run_evaluate", "evaluate_job"]


def run_evaluate(config, command_line=None):
    """``sk-braintune evaluate``: layer-wise alignment and low-level impact on each participant.

    Writes ``evaluation.json`` (per participant; the top-level ``layers`` and
    ``low_level_impact`` are those of the first participant), ``normalized_r_per_layer.npy``
    (first participant; ``voxel_scores.npz`` holds every participant's), ``results.csv`` (one row
    per participant and ROI: normalised r per layer, best layer), ``roi_summary.csv`` (per ROI,
    mean and s.e.m. over participants), ``significance.csv`` (the second table: variance
    partitioning and significance per participant and ROI, when on), one
    ``alignment_<participant>.png`` each, and, where the data have places (a ``space`` and
    ``column_index``) or ``config.mapper`` gives a subject's flatmap mapper, one
    ``brainmap_<participant>.png`` (and interactive ``.html``) each: the last layer's
    normalised r on the brain, significance-masked,
    ``config.toml``, ``manifest.json`` and ``report.html``. Unless switched off in the
    settings, ``evaluation.json`` also holds ``variance_partitioning`` (last layer vs the
    low-level features, per ROI) and ``significance`` (per ROI: voxels with q < 0.05, 95%
    block-bootstrap interval of the mean normalised r), and ``voxel_scores.npz`` the per-voxel
    ``<participant>_p_values`` and ``<participant>_q_values`` of the last layer. For data in a
    template or surface space (every ``--dataset`` but ``lebel2023``), ``maps/`` holds each
    layer's per-column normalised r as a NIfTI image or a GIfTI pair in that space.

    Parameters
    ----------
    config : EvaluateSettings or dict
        Resolved settings (``root``, ``subject``, ``model``, ``output``, ``layers``, ``window``,
        ``batch_size``, ``device``, ``executor`` and the Slurm options).
    command_line : list of str, optional
        The command as typed, for the manifest (default: ``sys.argv``).

    Returns
    -------
    results : dict
    """
    from ..provenance import fingerprint_model
    from .report import utc_now

    config = EvaluateSettings.from_mapping(config)
    show_library_messages(not config.quiet)
    realdata.check_inputs(config, "evaluate")  # every participant, the model and --output, up front
    started = utc_now()
    subjects = list(config.subject)
    mappers = load_subject_mappers(config.mapper, subjects)  # a bad --mapper fails here too
    if config.executor == "none":
        jobs = [{"config": config, "participants": subjects}]
    else:  # one job per participant
        jobs = [{"config": config, "participants": [p]} for p in subjects]
    output = Path(config.output)
    with results_folder(output) as folder:  # a bad --output fails here, before any work
        per_participant = {}
        for result in realdata.run_here_or_as_jobs(evaluate_job, jobs, config, "evaluate",
                                                   folder):
            per_participant.update(result)
        results, rows, second_rows, maps = _write_evaluation(config, per_participant,
                                                             subjects, folder, mappers)
        first = per_participant[subjects[0]]
        realdata.finish_results(
            "evaluate", config, folder, started=started, command_line=command_line,
            title=f"sk-braintune evaluate: {config.model} on {', '.join(subjects)}",
            summary=_evaluate_summary(config, per_participant, first),
            sections=_evaluate_sections(config, per_participant, bool(second_rows), maps,
                                        folder),
            seeds={"seed": config.seed}, split=first["split"],
            voxels={p: r["voxel_selection"] for p, r in per_participant.items()},
            data={p: r["data"] for p, r in per_participant.items()},
            models={"evaluated": fingerprint_model(config.model)},
            extra={"participants": subjects,
                   "stage_seconds": {p: r["stage_seconds"] for p, r in per_participant.items()}})
    for row in rows:
        layers = [v for k, v in row.items() if k.startswith("layer_")]
        print(f"{row['participant']:<8}{row['roi']:<14}" + " ".join(f"{v:6.3f}" for v in layers))
    if second_rows:
        print(f"\n{SECOND_TABLE_NOTE}")
        for row in second_rows:
            text = f"{row['participant']:<8}{row['roi']:<14}"
            if "unique" in row:
                text += (f"unique {row['unique']:7.4f} shared {row['shared']:7.4f} "
                         f"shared {row['shared_%']:5.1f}%  ")
            if "n_significant" in row:
                text += (f"sig {row['n_significant']}/{row['n_voxels']} "
                         f"ci [{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
            print(text)
    print(f"results in {output}")
    return results


SECOND_TABLE_NOTE = ("last layer: variance partitioning vs low-level features (unique, shared "
                     "R^2, shared %), voxels with q < 0.05, 95% CI of the mean normalised r")


def _write_evaluation(config, per_participant, subjects, folder, mappers=None):
    """The files of ``evaluate``'s results into ``folder``; returns the results, tables, maps."""
    first = per_participant[subjects[0]]
    voxels = {p: r.pop("voxels") for p, r in per_participant.items()}
    places = {p: r.pop("places", {}) for p, r in per_participant.items()}
    save_arrays(folder / "normalized_r_per_layer.npy", voxels[subjects[0]])
    for participant, result in per_participant.items():
        result["maps"] = _write_layer_maps(voxels[participant], result["layer_indices"],
                                           result.pop("image_space", None), folder / "maps")
    for participant, result in per_participant.items():
        for key, values in result.pop("voxel_significance", {}).items():
            voxels[f"{participant}_{key}"] = values
    results = {"layer_indices": first["layer_indices"], "layers": first["layers"],
               "low_level_impact": first["low_level_impact"],
               **{key: first[key] for key in ("variance_partitioning", "significance")
                  if key in first},
               "stage_seconds": first["stage_seconds"], "participants": per_participant}
    write_json(folder / "evaluation.json", results)
    save_arrays(folder / "voxel_scores.npz", **voxels)
    rows, summary_rows = _evaluation_tables(per_participant)
    write_csv(rows, folder / "results.csv")
    write_csv(summary_rows, folder / "roi_summary.csv")
    second_rows = _second_table_rows(per_participant)
    if second_rows:
        write_csv(second_rows, folder / "significance.csv")
    from ..analysis import figures as fig

    for participant, result in per_participant.items():
        # one curve per ROI (label) for this model
        save_figure(fig.plot_layer_alignment(dict(result["layers"]), title=f"{config.model}, "
                                             f"{participant}: alignment per layer"),
                    folder / f"alignment_{participant}.png", dpi=120, bbox_inches="tight")
    maps = []
    for participant in per_participant:
        # the last layer on the brain, where the data have places (or a mapper is given)
        drawn = subject_brain_map(voxels[participant][-1], voxels.get(f"{participant}_q_values"),
                                  places[participant], folder, participant, model=config.model,
                                  mapper=(mappers or {}).get(participant))
        if drawn is not None:
            maps.append(drawn)
    return results, rows, second_rows, maps


def _second_table_rows(per_participant):
    """Rows of ``significance.csv``: the last layer's variance partitioning and significance."""
    rows = []
    for participant, result in per_participant.items():
        for roi in result["layers"]:
            parts = result.get("variance_partitioning", {}).get(roi)
            sig = result.get("significance", {}).get(roi)
            if not (parts or sig):
                continue
            row = {"participant": participant, "roi": roi}
            if parts:
                row.update(unique=parts["unique_model"], shared=parts["shared"],
                           **{"shared_%": 100 * parts["shared_fraction"]})
            if sig:
                row.update(n_significant=sig["n_significant"], n_voxels=sig["n_voxels"],
                           ci_low=sig["low"], ci_high=sig["high"])
            rows.append(row)
    return rows


def _evaluate_summary(config, per_participant, first):
    split = first["split"]
    n_train = len(split.get("train", [])) + len(split.get("validation", []))
    text = [f"Evaluated {config.model} on {realdata.DATASET_NAMES[config.dataset]} "
            f"participant(s) "
            f"{', '.join(per_participant)}: ridge encoding models of layers "
            f"{', '.join(map(str, first['layer_indices']))} (hidden_states index) fitted on "
            f"{n_train} stories and scored on the held-out story "
            f"{', '.join(split.get('test', []))} (noise-ceiling-normalised r)."]
    found = []
    for participant, result in per_participant.items():
        for roi, values in result["layers"].items():
            values = np.asarray(values, float)
            if np.isfinite(values).any():
                best = int(np.nanargmax(values))
                found.append(f"{participant} {roi}: best layer {result['layer_indices'][best]} "
                             f"(r = {values[best]:.3f}), last layer {values[-1]:.3f}")
    if found:
        text.append("Found: " + "; ".join(found) + ".")
    return text


def _evaluate_sections(config, per_participant, second, maps=(), folder=None):
    from .report import ReportFigure, ReportSection, ReportTable

    tables = [ReportTable("Alignment per participant, ROI and layer", "results.csv",
                          note="Noise-ceiling-normalised r of the held-out story per layer "
                               "(layer_<hidden_states index>), the best layer and its score."),
              ReportTable("ROI summary across participants", "roi_summary.csv",
                          note="Mean and s.e.m. over participants of the best layer's and of "
                               "the last layer's score.")]
    if second:
        tables.append(ReportTable("Last layer: variance partitioning and significance",
                                  "significance.csv", note=SECOND_TABLE_NOTE.capitalize() +
                                  " (block permutation test, BH-FDR)."))
    figures = [ReportFigure(f"alignment_{p}.png",
                            f"{p}: noise-ceiling-normalised r of {config.model} on the held-out "
                            "story per layer, one curve per ROI.")
               for p in per_participant]
    sections = [ReportSection("Results", tables=tables),
                ReportSection("Alignment per layer", figures=figures)]
    if maps:
        sections.append(ReportSection("Brain maps (last layer)",
                                      figures=map_figures(maps, folder)))
    return sections


def _evaluation_tables(per_participant):
    """Rows of ``results.csv`` (participant x ROI) and ``roi_summary.csv`` (ROI)."""
    rows = []
    for participant, result in per_participant.items():
        for roi, values in result["layers"].items():
            values = np.asarray(values, float)
            row = {"participant": participant, "roi": roi}
            row.update({f"layer_{k}": float(v)
                        for k, v in zip(result["layer_indices"], values)})
            best = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
            row["best_layer"] = int(result["layer_indices"][best])
            row["best"] = float(values[best])
            rows.append(row)
    summary = []
    for roi in dict.fromkeys(row["roi"] for row in rows):
        best = np.array([row["best"] for row in rows if row["roi"] == roi])
        last = np.array([[v for k, v in row.items() if k.startswith("layer_")][-1]
                         for row in rows if row["roi"] == roi])
        sem = (lambda v: float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1
               else float("nan"))
        summary.append({"roi": roi, "n_participants": int(best.size),
                        "best_mean": float(best.mean()), "best_sem": sem(best),
                        "last_mean": float(last.mean()), "last_sem": sem(last)})
    return rows, summary


def _paper_protocol(data, participant, config):
    """The brain-tuning paper's evaluation protocol on ds003020 (``--protocol paper``).

    Its 24 training stories (:data:`~sk_braintune.datasets.PAPER_TRAIN_STORIES`), the test
    story ``wheretheressmoke`` scored against the mean of its repeats (the paper's
    ``spe_and_cc_norm`` averages ``individual_repeats``; the release's ``data`` rows of that
    story are another average, so the two differ slightly), and its ridge: ``alphas="huth"``,
    ``cv_scoring="huth_rsq"`` and 3 bootstrap draws of 20-TR chunks holding out 25% on one
    grid over the concatenated training stories (``ConcatenatedSplits(ChunkedBootstrap(...,
    chunking="reference"))``).

    Returns
    -------
    data : Bunch
        A shallow copy whose test responses are the mean of the repeats.
    train, test : list of str
    encoder : RidgeEncoder
    """
    from sklearn.utils import Bunch

    from ..datasets import PAPER_TRAIN_STORIES, TEST_STORY
    from ..encoding import ChunkedBootstrap, RidgeEncoder
    from ..model_selection import ConcatenatedSplits

    if config.dataset != "lebel2023":
        raise StudyInputError(f"--protocol paper is the paper's protocol on ds003020; it does "
                              f"not apply to --dataset {config.dataset}")
    missing = [s for s in (*PAPER_TRAIN_STORIES, TEST_STORY) if s not in data.stories]
    if missing:
        raise StudyInputError(f"{participant}: --protocol paper needs the paper's 24 training "
                              f"stories and {TEST_STORY}; not loaded: {missing} (leave out "
                              "--stories, or list them all)")
    if TEST_STORY not in data.repeats:
        raise StudyInputError(f"{participant}: {TEST_STORY} has no individual_repeats in its "
                              "file; the paper scores against their mean")
    out = Bunch(**data)
    repeats = np.asarray(data.repeats[TEST_STORY], dtype=np.float32)
    out.responses = dict(data.responses, **{TEST_STORY: repeats.mean(axis=0)})
    cv = ConcatenatedSplits(ChunkedBootstrap(n_splits=3, chunk_length=20, test_size=0.25,
                                             chunking="reference", random_state=config.seed))
    encoder = RidgeEncoder(alphas="huth", cv=cv, cv_scoring="huth_rsq",
                           backend=config.ridge_backend)
    return out, list(PAPER_TRAIN_STORIES), [TEST_STORY], encoder


def _write_layer_maps(scores, layer_indices, image_space, folder):
    """Each layer's per-column scores as an image in the data's space (none for space=None).

    ``<subject>_layer<k>_normalized-r_space-<space>.nii.gz`` in a volume space, a
    ``..._hemi-L.func.gii`` / ``..._hemi-R.func.gii`` pair on a surface; NaN where no column.
    Returns the paths relative to ``folder``'s parent (the results folder).
    """
    from ..datasets import save_record_image

    if image_space is None:
        return []
    paths = []
    for k, layer in enumerate(layer_indices):
        stem = folder / f"{image_space['subject']}_layer{int(layer):02d}_normalized-r"
        paths += save_record_image(scores[k], image_space, stem)
    return [str(path.relative_to(folder.parent)) for path in paths]


def evaluate_job(job):
    """Evaluate ``config.model`` on each of ``participants`` (runs in a job or here).

    Each participant is loaded on its own (participants need not share a voxel space here);
    features are extracted once per distinct story list.

    Parameters
    ----------
    job : dict
        ``{"config": EvaluateSettings, "participants": list of str}``.

    Returns
    -------
    results : dict of str to dict
        Participant -> ``layer_indices``, ``layers`` (ROI -> normalised r per layer),
        ``voxels`` (ndarray of shape (n_layers, n_voxels)), ``low_level_impact``,
        ``variance_partitioning`` and ``significance`` (when on), ``voxel_significance``
        (``p_values``, ``q_values`` of the last layer, or empty), ``image_space`` (the data's
        ``space``, ``column_index``, ``mask_img``, ``n_vertices`` and ``subject``, for the
        per-layer score images; None for ds003020), ``places`` (the record's ``space``,
        ``column_index``, ``mask_img`` and ``voxel_indices``, for the brain maps), ``split``,
        ``voxel_selection``, ``data`` (fingerprints) and ``stage_seconds``.
    """
    from ..evaluation import default_encoder, evaluate_listener, low_level_feature_spaces
    from ..features import extract_layer_features
    from ..provenance import dataset_fingerprints, voxel_selection
    from ..windows import dataset_windows, stack_responses

    config, participants = job["config"], job["participants"]
    analyses = ("alignment", "low_level_impact",
                *(("variance_partitioning",) if config.variance_partitioning else ()),
                *(("significance",) if config.significance else ()))
    out = {}
    features_by_stories = {}
    for participant in participants:
        data = realdata.load_dataset(config, participant)
        stages = StageTimer()
        train = list(data.split["train"]) + list(data.split["validation"])
        test = list(data.split["test"])
        encoder = None
        if config.protocol == "paper":
            data, train, test, encoder = _paper_protocol(data, participant, config)
        if not test:
            raise StudyInputError(f"{participant}: no test story among the loaded stories "
                                  "(the paper's is wheretheressmoke)")
        # memory at full size (84 stories: 16 h of audio, ~4 GB at 16 kHz; 29,000 TRs x
        # 90,000 voxels, ~10 GB): the audio is held once (the windows' copy serves as the
        # dataset's audio) and only until the features and the low-level features are made;
        # then the responses are stacked once, training stories first, and every fit reads
        # views of them
        X = dataset_windows(data, train + test, window=config.window, share_audio=True)
        groups = X.groups.copy()
        key = tuple(train + test)
        if key not in features_by_stories:
            with stages(f"features of {config.model} on {len(X)} windows"):
                try:
                    features_by_stories[key] = extract_layer_features(
                        config.model, X, layers=config.layer_indices(),
                        batch_size=config.batch_size, device=config.device,
                        verbose=not config.quiet)
                except OSError as exc:
                    raise StudyInputError(f"could not load model {config.model!r}: "
                                          f"{exc}") from exc
        with stages(f"{participant}: low-level features"):
            low_level = low_level_feature_spaces(data, train, test)
        fingerprints = dataset_fingerprints(data, train + test)
        del X
        data["audio"] = {}  # nothing below reads the audio
        with stages(f"{participant}: stack responses"):
            y = stack_responses(data, train + test)
        # loaders of volumes and surfaces hold every story's responses in memory: drop them
        # (and the repeats, already summed up in the noise ceiling) so that the responses are
        # held once, as ``y``, from here on
        data["responses"], data["repeats"] = {}, {}
        feats, layer_indices = features_by_stories[key]
        if data.noise_ceiling is None:
            raise StudyInputError(f"{participant}: no loaded story has repeats, so the scores "
                                  "cannot be normalised by a noise ceiling; load a story the "
                                  "participant heard several times")
        nc = np.asarray(data.noise_ceiling)
        # the demo's evaluation, with the configured ridge (inner CV clamped to the training
        # stories by the evaluation), or the paper's; --ridge-backend torch runs the ridge on
        # the GPU
        if encoder is None:
            encoder = default_encoder(cv=config.ridge_cv, backend=config.ridge_backend)
        evaluation = evaluate_listener(
            {"model": feats}, len(layer_indices), y, groups, train_stories=train,
            test_stories=test, noise_ceiling=nc, voxel_labels=np.asarray(data.voxel_labels),
            dataset=data, encoder=encoder,
            analyses=analyses, low_level=low_level, cv=config.ridge_cv,
            backend=config.ridge_backend, n_permutations=config.n_permutations,
            partitioning_n_iter=config.partitioning_n_iter, random_state=config.seed,
            stages=prefixed(stages, f"{participant}: "))
        extra, extra_voxels = {}, {}
        if evaluation.variance_partitioning is not None:
            extra["variance_partitioning"] = evaluation.variance_partitioning["model"]
        if evaluation.significance is not None:
            sig = evaluation.significance["model"]
            extra["significance"] = sig["roi"]
            extra_voxels = {"p_values": sig["p_values"], "q_values": sig["q_values"]}
        table = evaluation.alignment["model"]
        voxel_indices = data.get("voxel_indices", data.get("column_index"))
        out[participant] = {
            # the way from columns back to an image, written with the results (picklable:
            # it travels back from a job)
            "image_space": (None if data.get("space") is None else {
                "space": data.space, "column_index": np.asarray(data.column_index),
                "mask_img": data.get("mask_img"), "n_vertices": data.get("n_vertices"),
                "subject": data.get("subject") or participant}),
            # where the voxels are, for the brain maps (space None: no maps without a mapper)
            "places": {key: data.get(key) for key in ("space", "column_index", "mask_img",
                                                      "voxel_indices")},
            "layer_indices": [int(k) for k in layer_indices],
            "layers": {roi: np.asarray(v).tolist() for roi, v in table["roi"].items()},
            "voxels": np.asarray(table["voxels"]),
            "low_level_impact": evaluation.low_level_impact["model"],
            **extra,
            "voxel_significance": extra_voxels,
            "split": ({"train": train, "validation": [], "test": test}
                      if config.protocol == "paper"
                      else {k: list(v) for k, v in data.split.items()}),
            "protocol": config.protocol,
            "voxel_selection": voxel_selection(
                np.arange(nc.size) if voxel_indices is None else voxel_indices, nc.size),
            "data": fingerprints,
            "stage_seconds": dict(stages.times)}
        # the next participant's data load into memory this one's responses leave free
        del data, y, low_level, evaluation, table
    return out
