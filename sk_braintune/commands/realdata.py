"""``sk-braintune tune`` and ``evaluate``: the study on real fMRI data with a local model.

``--dataset`` picks the layout: ``lebel2023`` (OpenNeuro ds003020, the default), ``narratives``
(ds002345), ``petit-prince`` (ds003643) or ``bids`` (any BIDS dataset with preprocessed
derivatives; ``--space`` and ``--task`` select the runs). A model tuned on one dataset can be
evaluated on another (``--model`` a tuned ``backbone/`` folder).

``tune`` brain-tunes one model on one or several participants (several: one shared head over
their common voxel space, the follow-up paper's recipe). ``evaluate`` scores one model on each
participant: layer-wise alignment per ROI and the low-level impact, a per-participant table and an
ROI summary across participants. Both can run their work in this process (``--executor none``)
or as jobs through :func:`sk_braintune.executors.run_jobs` (``local``: submitit's local
executor; ``slurm``: a Slurm cluster, one job per participant for ``evaluate``).

Every results folder gets ``results.csv``, ``config.toml``, ``manifest.json`` and
``report.html`` (see :mod:`sk_braintune.commands.report`). It is written as a transaction
(:func:`~sk_braintune.commands.results.results_folder`): into a temporary folder beside
``--output``, checked writable before any work, moved into place when complete; a run that
fails or is killed leaves the previous results as they were.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

import numpy as np

from .._stages import prefixed
from .results import (
    StageTimer,
    results_folder,
    save_arrays,
    save_config,
    save_figure,
    write_csv,
    write_json,
)
from ..exceptions import CheckpointError, StudyInputError
from .brainmaps import load_subject_mappers, map_figures, subject_brain_map
from .settings import EvaluateSettings, TuneSettings
from .terminal import show_library_messages

__all__ = ["run_tune", "run_evaluate"]


_DATASET_NAMES = {"lebel2023": "OpenNeuro ds003020", "narratives": "Narratives (ds002345)",
                  "petit-prince": "Le Petit Prince (ds003643)",
                  "bids": "the BIDS dataset (with derivatives)"}


def _check_inputs(config, command):
    """Everything a real-data command needs, checked before any heavy work.

    Options, the data (every participant's files, headers only), the stories each command
    needs, the device and the model (loaded once on the CPU, with the window length and the
    layers checked against it); ``--output`` is checked next, when the results folder is
    prepared (:func:`~sk_braintune.commands.results.results_folder`). Every problem is a
    :class:`StudyInputError` (one line, exit status 2).
    """
    if config.root is None:
        raise StudyInputError(f"--root is required: the local copy of "
                              f"{_DATASET_NAMES[config.dataset]}")
    if config.dataset == "bids" and not config.space:
        raise StudyInputError("--space is required with --dataset bids: the derivatives' "
                              "space, e.g. MNI152NLin2009cAsym, T1w or fsaverage6")
    if not Path(config.root).is_dir():
        raise StudyInputError(f"data root {config.root} does not exist or is not a directory")
    if not config.subject:
        raise StudyInputError("--subject is required, e.g. --subject UTS03 (several: "
                              "--subject UTS01 UTS02 UTS03)")
    if not config.model:
        raise StudyInputError("--model is required: a Hugging Face model name or local path")
    if command == "evaluate":
        config.layer_indices()  # a malformed --layers fails first
    _check_data(config, command)
    _check_device(config)
    _check_model(config, command)


def _check_data(config, command):
    """Every participant's files (headers only) and the stories the command needs (ds003020;
    the other datasets' loaders check their files as they read them)."""
    from ..datasets import check_lebel2023

    if config.dataset != "lebel2023":
        return
    stories = None if config.stories is None else list(config.stories)
    summaries = []
    for subject in config.subject:
        try:
            summaries.append(check_lebel2023(config.root, subject, stories))
        except (FileNotFoundError, ValueError) as exc:
            raise StudyInputError(str(exc)) from exc
    split = summaries[0].split
    given = ("--stories " + " ".join(stories)) if stories else "the stories found"
    if not split["train"] and (command == "evaluate" or not split["validation"]):
        raise StudyInputError(
            f"{given}: no training story among them (the test story wheretheressmoke and the "
            "validation stories stagefright and life are not trained on); add training "
            "stories")
    if not split["test"]:
        use = ("which the evaluation scores" if command == "evaluate"
               else "whose repeats give the noise ceiling that selects the voxels")
        raise StudyInputError(f"{given}: the test story wheretheressmoke is missing, {use}; "
                              "add it")


def _check_device(config):
    """``--device`` names a device this machine has (on a cluster: a valid name only)."""
    import torch

    from .._utils import resolve_device

    if config.executor != "none":  # the jobs run elsewhere: only the name can be checked
        try:
            torch.device("cpu" if config.device == "auto" else config.device)
        except (RuntimeError, TypeError):
            raise StudyInputError(f"--device: device {config.device!r} is not a torch device; "
                                  "use auto, cpu, cuda or cuda:N") from None
        return
    try:
        resolve_device(config.device)
    except ValueError as exc:
        raise StudyInputError(f"--device: {exc}") from None


def _check_model(config, command):
    """Load the model once on the CPU: it exists, is a speech encoder, its weights are intact,
    and it takes the window length and the layers asked for."""
    from ..features.extractor import resolve_layers
    from ..models.backbone import load_backbone, quiet_transformers
    from ..windows import DEFAULT_SAMPLE_RATE as SAMPLE_RATE

    model = config.model
    # a path-like name or an existing relative path is a local directory, never a hub name
    local = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or local.exists()
    if looks_local and not local.exists():
        raise StudyInputError(f"model path {model} does not exist")
    try:
        with warnings.catch_warnings(), quiet_transformers():
            warnings.simplefilter("ignore")  # said again when the model is loaded for the work
            backbone = load_backbone(str(local) if looks_local else model, device="cpu")
    except (OSError, ValueError) as exc:
        raise StudyInputError(f"could not load model {model!r}: {exc}") from exc
    limit = backbone.max_samples
    if limit is not None and config.window * SAMPLE_RATE > limit:
        seconds = limit / SAMPLE_RATE
        raise StudyInputError(f"--window {config.window:g} s is longer than the {seconds:g} s "
                              f"the {backbone.family} encoder of {model} accepts; use --window "
                              f"{seconds:g} or less")
    if command == "evaluate":
        layers = config.layer_indices()
        try:
            resolve_layers(layers, backbone.num_hidden_layers)
        except ValueError as exc:
            raise StudyInputError(f"--layers {config.layers}: {exc}") from None


def _load_real(config, subject):
    """The ``--dataset`` loader for one participant (a str) or several (a list), errors made
    clear."""
    from .. import datasets

    stories = None if config.stories is None else list(config.stories)
    task = None if config.task is None else list(config.task)
    try:
        if config.dataset == "narratives":
            return datasets.load_narratives(config.root, subject, stories,
                                            space=config.space or "fsaverage6",
                                            pipeline=config.pipeline, task=task)
        if config.dataset == "petit-prince":
            language = "EN" if not task else task[0].removeprefix("lpp")
            sections = (None if stories is None
                        else [int(s.removeprefix("section")) for s in stories])
            return datasets.load_petit_prince(config.root, subject, language=language,
                                              space=config.space or "MNIColin27",
                                              sections=sections)
        if config.dataset == "bids":
            return datasets.load_bids(config.root, subject, task, space=config.space,
                                      derivatives=config.derivatives, stories=stories)
        return datasets.load_lebel2023(config.root, subject, stories=stories,
                                       nan_policy=config.nan_policy, verbose=not config.quiet)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise StudyInputError(str(exc)) from exc


def _run(function, jobs, config, kind, folder):
    """``function(job)`` for each job: here, or as jobs of ``executors.run_jobs``.

    The jobs' logs go to ``folder/jobs/<kind>`` (``folder``: the results being written).
    """
    if config.executor == "none":
        return [function(job) for job in jobs]
    from ..executors import JobError, run_jobs

    try:
        return list(run_jobs(function, jobs, executor=config.executor,
                             folder=Path(folder) / "jobs" / kind,
                             name=f"sk_braintune_{kind}", verbose=not config.quiet,
                             **config.slurm_options()))
    except JobError as exc:
        raise StudyInputError(f"{kind} job failed: {exc}") from exc


def _flat_rows(history):
    """History rows with nested values (per-participant scores) flattened to ``key/sub``."""
    rows = []
    for entry in history:
        row = {}
        for key, value in entry.items():
            if isinstance(value, dict):
                row.update({f"{key}/{k}": v for k, v in value.items()})
            else:
                row[key] = value
        rows.append(row)
    return rows


def _finish(command, config, output, *, started, command_line, title, summary=None,
            sections=None, **manifest_parts):
    """config.toml, manifest.json and report.html of a results folder."""
    from .report import build_manifest, write_manifest, write_report

    save_config(config, output)
    manifest = build_manifest(command, config, started=started, command_line=command_line,
                              **manifest_parts)
    write_manifest(manifest, output)
    write_report(output, title=title, summary=summary, sections=sections, manifest=manifest)
    return manifest


def _checkpoint_folder(output):
    """Where ``tune`` keeps its per-epoch checkpoints: a hidden folder beside ``output``.

    Not part of the results (the tuned backbone is): it outlives a run that is killed, so that
    the same command resumes it, and is deleted once the results are in place.
    """
    output = Path(output).expanduser().absolute()
    return output.parent / f".{output.name}.checkpoints"


# -- tune -------------------------------------------------------------------------------------

def run_tune(config, command_line=None):
    """``sk-braintune tune``: brain-tune a model on one or several ds003020 participants.

    Writes the tuned backbone (``backbone/``, ``save_pretrained``), ``selected_voxels.npy``,
    ``history.json``, ``results.csv`` (the history per epoch), ``training_curves.png``,
    ``config.toml``, ``manifest.json`` and ``report.html`` into ``config.output`` (all at once,
    when the run is complete). Per-epoch checkpoints are kept in the hidden folder
    ``.<output name>.checkpoints`` beside it while the run lasts: the same command resumes a
    run that was killed; they are deleted once the results are in place.

    Parameters
    ----------
    config : TuneSettings or dict
        Resolved settings (``root``, ``subject``, ``model``, ``output``, ``epochs``,
        ``lr_backbone``, ``lr_head``, ``window``, ``batch_size``, ``min_ceiling``, ``seed``,
        ``device``, ``executor`` and the Slurm options).
    command_line : list of str, optional
        The command as typed, for the manifest (default: ``sys.argv``).

    Returns
    -------
    summary : dict
        ``output``, ``best_epoch``, ``n_voxels`` (tuning targets) and ``participants``.
    """
    from .report import utc_now

    config = TuneSettings.from_mapping(config)
    show_library_messages(not config.quiet)
    _check_inputs(config, "tune")
    started = utc_now()
    output = Path(config.output)
    checkpoints = _checkpoint_folder(output)
    if config.overwrite and checkpoints.exists():
        shutil.rmtree(checkpoints)
        print(f"--overwrite: removed the checkpoint of an unfinished run in {checkpoints}")
    elif (checkpoints / "checkpoint.pt").exists():
        print(f"resuming the unfinished run from its checkpoint in {checkpoints} (--overwrite "
              "starts over)")
    with results_folder(output) as folder:  # a bad --output fails here, before any work
        try:
            checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyInputError(f"cannot write checkpoints to {checkpoints}: "
                                  f"{exc.strerror or exc}; choose another --output") from None
        try:
            (summary,) = _run(tune_job, [{"config": config, "folder": str(folder),
                                          "checkpoint_dir": str(checkpoints)}],
                              config, "tune", folder)
        except BaseException:
            with contextlib.suppress(OSError):  # kept only when it holds a run to resume
                checkpoints.rmdir()
            raise
        parts = summary.pop("manifest")
        _finish("tune", config, folder, started=started, command_line=command_line,
                title=f"sk-braintune tune: {config.model} on {', '.join(config.subject)}",
                summary=_tune_summary(config, summary), sections=_tune_sections(), **parts)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: nothing to resume
    summary["output"] = str(output)
    print(f"tuned backbone in {output / 'backbone'}; best epoch {summary['best_epoch']}; "
          f"history, training curves, manifest and report in {output}")
    return summary


def _tune_summary(config, summary):
    return [f"Brain-tuned {config.model} on ds003020 participant(s) "
            f"{', '.join(summary['participants'])}: {summary['n_voxels']} voxels with a noise "
            f"ceiling above {config.min_ceiling:g} as targets, up to {config.epochs} epoch(s), "
            f"seed {config.seed}.",
            f"The epoch kept (best on the validation stories) was epoch "
            f"{summary['best_epoch']} (0-based); its weights are the tuned backbone in "
            "backbone/ (save_pretrained)."]


def _tune_sections():
    from .report import ReportFigure, ReportSection, ReportTable

    return [ReportSection("Training", tables=[ReportTable(
        "History per epoch", "results.csv",
        note="Training loss, validation loss and validation r (mean over target voxels) per "
             "epoch; per-participant values as key/participant.")],
        figures=[ReportFigure("training_curves.png",
                              "Training and validation loss and validation r per epoch of "
                              "brain-tuning.")])]


def _selected_voxels(data, columns, stories):
    """A shallow copy of ``data`` whose responses of ``stories`` hold only ``columns``.

    Lazy (hf5-backed) responses stay lazy (``take_columns``): nothing is read here.
    """
    from sklearn.utils import Bunch

    def subset(responses):
        return {s: (responses[s].take_columns(columns) if hasattr(responses[s], "take_columns")
                    else np.asarray(responses[s])[:, columns]) for s in stories}

    out = Bunch(**data)
    out.responses = subset(data.responses)
    if "participant_data" in data:
        out.participant_data = {p: Bunch(**dict(d, responses=subset(d["responses"])))
                                for p, d in data.participant_data.items()}
    return out


def tune_job(job):
    """Tune one model on ``config.subject`` and write its files (runs in a job or here).

    Parameters
    ----------
    job : dict
        ``{"config": TuneSettings, "folder": str, "checkpoint_dir": str}``: the settings, the
        folder to write the results into (default: ``config.output``) and the checkpoints'
        folder (default: ``<folder>/checkpoints``).

    Returns
    -------
    summary : dict
        ``output``, ``best_epoch``, ``n_voxels``, ``participants`` and ``manifest`` (the
        manifest's split, voxel, data and model parts).
    """
    from ..model_selection import HeldOutStories
    from ..provenance import dataset_fingerprints, fingerprint_model, voxel_selection
    from ..tuning import BrainTuner
    from ..windows import windows_from_dataset

    config = job["config"]
    subjects = list(config.subject)
    several = len(subjects) > 1
    data = _load_real(config, subjects if several else subjects[0])
    output = Path(job.get("folder") or config.output)
    stages = StageTimer()
    train = list(data.split["train"])
    valid = list(data.split["validation"])
    fit_params = {}
    if several:
        participants = tuple(data.get("participants", ()))
        if len(participants) != len(subjects):
            raise StudyInputError(f"the loader returned participants {participants} for "
                                  f"--subject {' '.join(subjects)}")
        # one shared voxel selection: the mean noise ceiling over the participants
        ceilings = [data.participant_data[p].noise_ceiling for p in participants]
        noise_ceiling = (None if any(c is None for c in ceilings)
                         else np.mean([np.asarray(c, float) for c in ceilings], axis=0))
    else:
        noise_ceiling = data.noise_ceiling
    if noise_ceiling is None:
        raise StudyInputError("no loaded story has repeats, so there is no noise ceiling to "
                              "select voxels by; load a story heard several times (ds003020: "
                              "wheretheressmoke)")
    noise_ceiling = np.asarray(noise_ceiling, float)
    selected = np.flatnonzero(noise_ceiling > config.min_ceiling)
    if selected.size == 0:
        raise StudyInputError(f"no voxel has a noise ceiling above {config.min_ceiling:g} "
                              f"(highest: {np.nanmax(noise_ceiling):.3f}); lower --min-ceiling")
    # the selected voxels only, before stacking: at full size the stacked responses of every
    # voxel would not fit next to the tuner's copies
    targets = _selected_voxels(data, selected, train + valid)
    if several:
        from ..datasets import participant_windows

        X, y, groups, labels = participant_windows(targets, train + valid, config.window)
        fit_params["participants"] = labels
    else:
        X, y, groups = windows_from_dataset(targets, train + valid, window=config.window)
    params = {"max_epochs": config.epochs, "lr_backbone": config.lr_backbone,
              "lr_head": config.lr_head, "batch_size": config.batch_size,
              "validation": HeldOutStories(valid) if valid else 0.1,
              "device": config.device, "random_state": config.seed,
              "verbose": not config.quiet,
              "checkpoint_dir": job.get("checkpoint_dir") or str(output / "checkpoints")}
    with stages(f"brain-tuning {config.model} on {len(train + valid)} stories, "
                f"{', '.join(subjects)}, {selected.size} voxels"):
        try:
            tuner = BrainTuner(config.model, **params).fit(X, y, groups=groups,
                                                           **fit_params)
        except CheckpointError as exc:
            raise StudyInputError(f"{exc} With sk-braintune tune, --overwrite starts "
                                  "over.") from exc
    tuner.save_pretrained(output / "backbone")
    save_arrays(output / "selected_voxels.npy", selected)
    write_json(output / "history.json", tuner.history_)
    write_csv(_flat_rows(tuner.history_), output / "results.csv")
    from ..analysis import figures as fig

    save_figure(fig.plot_training_curves(tuner.history_, title=", ".join(subjects)),
                output / "training_curves.png", dpi=120, bbox_inches="tight")
    manifest = {
        "seeds": {"tuning": config.seed},
        "split": {k: list(v) for k, v in data.split.items()},
        "voxels": {"tuning_targets": voxel_selection(selected, noise_ceiling.size)},
        "data": dataset_fingerprints(data, train + valid),
        "models": {"pretrained": fingerprint_model(config.model),
                   # named by where it will be once the results folder is in place
                   "tuned": {**fingerprint_model(output / "backbone"),
                             "name": str(Path(config.output) / "backbone")}},
        "extra": {"participants": subjects, "stage_seconds": stages.times,
                  "best_epoch": int(tuner.best_epoch_)},
    }
    return {"output": str(config.output), "best_epoch": int(tuner.best_epoch_),
            "n_voxels": int(selected.size), "participants": subjects, "manifest": manifest}


# -- evaluate ---------------------------------------------------------------------------------

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
    _check_inputs(config, "evaluate")  # every participant, the model and --output, up front
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
        for result in _run(evaluate_job, jobs, config, "evaluate", folder):
            per_participant.update(result)
        results, rows, second_rows, maps = _write_evaluation(config, per_participant,
                                                             subjects, folder, mappers)
        first = per_participant[subjects[0]]
        _finish("evaluate", config, folder, started=started, command_line=command_line,
                title=f"sk-braintune evaluate: {config.model} on {', '.join(subjects)}",
                summary=_evaluate_summary(config, per_participant, first),
                sections=_evaluate_sections(config, per_participant, bool(second_rows),
                                            maps, folder),
                seeds={"seed": config.seed}, split=first["split"],
                voxels={p: r["voxel_selection"] for p, r in per_participant.items()},
                data={p: r["data"] for p, r in per_participant.items()},
                models={"evaluated": fingerprint_model(config.model)},
                extra={"participants": subjects,
                       "stage_seconds": {p: r["stage_seconds"]
                                         for p, r in per_participant.items()}})
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
    text = [f"Evaluated {config.model} on ds003020 participant(s) "
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
        data = _load_real(config, participant)
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
    return out
