"""What ``sk-braintune tune`` and ``evaluate`` share: input checks, the datasets, jobs, results.

``--dataset`` picks the layout: ``lebel2023`` (OpenNeuro ds003020, the default), ``narratives``
(ds002345), ``petit-prince`` (ds003643) or ``bids`` (any BIDS dataset with preprocessed
derivatives; ``--space`` and ``--task`` select the runs). A model tuned on one dataset can be
evaluated on another (``--model`` a tuned ``backbone/`` folder). Every input is checked before
any heavy work (:func:`check_inputs`); the work runs in this process (``--executor none``) or
as jobs through :func:`sk_braintune.executors.run_jobs` (``local``: submitit's local executor;
``slurm``: a Slurm cluster); every results folder gets ``results.csv``, ``config.toml``,
``manifest.json`` and ``report.html`` (:func:`finish_results`), written as a transaction
(:func:`~sk_braintune.commands.results.results_folder`): into a temporary folder beside
``--output``, checked writable before any work, moved into place when complete; a run that
fails or is killed leaves the previous results as they were.

The commands themselves are :mod:`sk_braintune.commands.tune` and
:mod:`sk_braintune.commands.evaluate`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..exceptions import StudyInputError
from .report import build_manifest, write_manifest, write_report
from .results import save_config

__all__ = ["DATASET_NAMES", "check_inputs", "load_dataset", "run_here_or_as_jobs",
           "finish_results"]


DATASET_NAMES = {"lebel2023": "OpenNeuro ds003020", "narratives": "Narratives (ds002345)",
                 "petit-prince": "Le Petit Prince (ds003643)",
                 "bids": "the BIDS dataset (with derivatives)"}


def check_inputs(config, command):
    """Everything a real-data command needs, checked before any heavy work.

    Options, the data (every participant's files, headers only), the stories each command
    needs, the device and the model (loaded once on the CPU, with the window length and the
    layers checked against it); ``--output`` is checked next, when the results folder is
    prepared (:func:`~sk_braintune.commands.results.results_folder`).

    Parameters
    ----------
    config : TuneSettings or EvaluateSettings
        The command's resolved settings.
    command : {"tune", "evaluate"}

    Raises
    ------
    StudyInputError
        For every problem found (one line, exit status 2).
    """
    if config.root is None:
        raise StudyInputError(f"--root is required: the local copy of "
                              f"{DATASET_NAMES[config.dataset]}")
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


def load_dataset(config, subject):
    """The ``--dataset`` loader's record for one or several participants.

    Parameters
    ----------
    config : TuneSettings or EvaluateSettings
        ``dataset``, ``root``, ``stories``, ``task``, ``space`` and the dataset's options.
    subject : str or list of str
        One participant, or several (loaded into one record over their shared stories).

    Returns
    -------
    data : sklearn.utils.Bunch
        The dataset record (see :mod:`sk_braintune.datasets.record`).

    Raises
    ------
    StudyInputError
        For a missing or malformed dataset (the loader's message, one line).
    """
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


def run_here_or_as_jobs(function, jobs, config, kind, folder):
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


def finish_results(command, config, output, *, started, command_line, title, summary=None,
                   sections=None, **manifest_parts):
    """config.toml, manifest.json and report.html of a results folder."""
    save_config(config, output)
    manifest = build_manifest(command, config, started=started, command_line=command_line,
                              **manifest_parts)
    write_manifest(manifest, output)
    write_report(output, title=title, summary=summary, sections=sections, manifest=manifest)
    return manifest
