"""``sk-braintune tune``: brain-tune a model on one or several participants of a dataset.

One participant: a head onto the voxels whose noise ceiling exceeds ``--min-ceiling``; several:
one shared head over their common voxel space (the follow-up paper's recipe). Per-epoch
checkpoints let the same command resume a run that was killed.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from ..exceptions import CheckpointError, StudyInputError
from . import realdata
from .results import StageTimer, results_folder, save_arrays, save_figure, write_csv, write_json
from .settings import TuneSettings
from .terminal import show_library_messages

__all__ = ["run_tune", "tune_job"]


def _checkpoint_folder(output):
    """Where ``tune`` keeps its per-epoch checkpoints: a hidden folder beside ``output``.

    Not part of the results (the tuned backbone is): it outlives a run that is killed, so that
    the same command resumes it, and is deleted once the results are in place.
    """
    output = Path(output).expanduser().absolute()
    return output.parent / f".{output.name}.checkpoints"


def run_tune(config, command_line=None):
    """``sk-braintune tune``: brain-tune a model on one or several participants of a dataset.

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
    realdata.check_inputs(config, "tune")
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
            (summary,) = realdata.run_here_or_as_jobs(
                tune_job, [{"config": config, "folder": str(folder),
                            "checkpoint_dir": str(checkpoints)}], config, "tune", folder)
        except BaseException:
            with contextlib.suppress(OSError):  # kept only when it holds a run to resume
                checkpoints.rmdir()
            raise
        parts = summary.pop("manifest")
        realdata.finish_results(
            "tune", config, folder, started=started, command_line=command_line,
            title=f"sk-braintune tune: {config.model} on {', '.join(config.subject)}",
            summary=_tune_summary(config, summary), sections=_tune_sections(), **parts)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: nothing to resume
    summary["output"] = str(output)
    print(f"tuned backbone in {output / 'backbone'}; best epoch {summary['best_epoch']}; "
          f"history, training curves, manifest and report in {output}")
    return summary


def _tune_summary(config, summary):
    return [f"Brain-tuned {config.model} on {realdata.DATASET_NAMES[config.dataset]} "
            f"participant(s) "
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
    data = realdata.load_dataset(config, subjects if several else subjects[0])
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
