"""Typed settings of the commands: ``sk-braintune demo | dataset | tune | evaluate``.

The command line, ``--config`` TOML files and the library read their defaults from the pydantic
models here and nowhere else: every field is a long option (``--batch-size`` for ``batch_size``;
its ``--help`` line is the field's description) and a TOML key. The study's own settings
(:class:`~sk_braintune.study.settings.DemoSettings` and its tables) live with the study, in
:mod:`sk_braintune.study.settings`; the demo command's ``[study]`` table overrides them.

Every value is checked when it is set: a wrong type, a value outside the allowed ones or an
unknown key raises :class:`~sk_braintune.exceptions.SettingsError` naming the key, the value and
what is allowed (with a "did you mean" hint for misspelt keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from .._settings import Many, SettingsModel
from ..datasets.lebel2023 import NAN_POLICIES
from ..exceptions import SettingsError
from ..study.settings import (
    CONTROL_MODELS,
    DEFAULT_CONTROLS,
    RIDGE_BACKENDS,
    DemoSettings,
)

__all__ = ["DEFAULT_OUTPUT", "DATASETS", "EXECUTORS", "RIDGE_BACKENDS", "RunSettings",
           "DemoCommandSettings", "DatasetCommandSettings", "TuneSettings", "EvaluateSettings",
           "COMMAND_SETTINGS"]

DEFAULT_OUTPUT = "sk_braintune_results"
"""Folder the commands write their results to when ``--output`` is not given."""
DATASETS = ("lebel2023", "narratives", "petit-prince", "bids")
"""Datasets ``tune`` and ``evaluate`` read: LeBel et al. (2023, ds003020), Narratives
(ds002345), Le Petit Prince (ds003643) or any BIDS dataset with preprocessed derivatives."""
EXECUTORS = ("none", "local", "slurm")
"""Where ``tune`` and ``evaluate`` run their jobs: in this process, submitit's local executor,
or Slurm through submitit."""

_CONFIG_ONLY = {"command_line": False}
_RIDGE_BACKEND_HELP = "ridge backend: numpy, or torch (on the GPU with --device cuda)"
# a path option takes a string from a TOML file
_Path = Annotated[Path, Field(strict=False)]


class RunSettings(SettingsModel):
    """Options every command takes."""

    output: _Path = Field(Path(DEFAULT_OUTPUT),
                          description="directory for results, figures, manifest and report",
                          json_schema_extra={"flags": ["-o"]})
    seed: int = Field(0, ge=0, description="random seed")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1, ...")
    threads: int | None = Field(None, ge=1, description="torch/BLAS threads (default: all "
                                "cores)")
    quiet: bool = Field(False, description="no progress bars")


class DemoCommandSettings(RunSettings):
    """Options of ``sk-braintune demo``."""

    quick: bool = Field(False, description="smaller run (a couple of minutes) for smoke tests")
    epochs: int | None = Field(None, ge=1, description="tuning epochs (default: the study's)")
    models: Many[str] = Field(("ssl", "whisper-tiny.en"), min_length=1,
                              description="pretrained models, one study each: ssl "
                              "(self-supervised, made here), whisper-tiny.en or local "
                              "directories")
    controls: Many[Literal[tuple(CONTROL_MODELS)]] = Field(
        DEFAULT_CONTROLS, min_length=1, description="random-fMRI controls to tune; other-story "
        "gives each story another story's responses")
    no_figures: bool = Field(False, description="skip the figures")
    ridge_backend: Literal[RIDGE_BACKENDS] = Field("numpy", description=_RIDGE_BACKEND_HELP)
    study: dict = Field(default_factory=dict,
                        description="overrides of the study's settings (a [study] table of "
                        "DemoSettings keys; nested tables for dataset, tuner and probe)",
                        json_schema_extra=_CONFIG_ONLY)

    def study_settings(self):
        """The :class:`~sk_braintune.study.settings.DemoSettings` these options select.

        The preset (full or ``quick``), then the ``study`` table, then ``epochs``,
        ``controls`` and ``ridge_backend``.

        Returns
        -------
        settings : DemoSettings

        Raises
        ------
        SettingsError
            For a key of ``study`` that :class:`DemoSettings` lacks, a value of the wrong type,
            or a key that is a top-level option of the command.
        """
        for key in ("controls", "ridge_backend", "model"):
            if key in self.study:
                top = "models" if key == "model" else key
                raise SettingsError(f"setting 'study.{key}': {key} is an option of the "
                                    f"command; set the top-level key {top!r} instead")
        settings = DemoSettings.preset(quick=self.quick).with_overrides(self.study,
                                                                        prefix="study.")
        if self.epochs is not None:
            settings.tuner.max_epochs = self.epochs
        settings.controls = self.controls
        settings.ridge_backend = self.ridge_backend
        return settings


class DatasetCommandSettings(RunSettings):
    """Options of ``sk-braintune dataset`` (those of :class:`RunSettings`)."""


class _RealDataSettings(RunSettings):
    """Options of the real-data commands: data, model and where the jobs run."""

    dataset: Literal[DATASETS] = Field("lebel2023", description="the dataset's layout: "
                                       "lebel2023 (ds003020), narratives (ds002345), "
                                       "petit-prince (ds003643) or bids (BIDS with derivatives)")
    root: _Path | None = Field(None, description="local copy of the dataset (ds003020 holds "
                               "derivative/preprocessed_data, stimuli, derivative/TextGrids; a "
                               "BIDS dataset sub-<label>/, stimuli/, derivatives/)")
    subject: Many[str] | None = Field(None, min_length=1, description="participant(s), e.g. "
                                      "UTS03 or UTS01 UTS02 UTS03; BIDS labels with or "
                                      "without sub- (sub-001, 001)")
    space: str | None = Field(None, description="space of the derivatives: fsaverage6, "
                              "MNI152NLin2009cAsym, ... (default: fsaverage6 for narratives, "
                              "MNIColin27 for petit-prince; required for bids)")
    task: Many[str] | None = Field(None, min_length=1, description="BIDS task(s) to load "
                                   "(default: all; petit-prince: lppEN, lppFR or lppCN)")
    derivatives: _Path | None = Field(None, description="folder of the preprocessed runs "
                                      "(bids; default: every pipeline under "
                                      "<root>/derivatives)")
    pipeline: str = Field("afni-nosmooth", description="Narratives derivatives: "
                          "afni-nosmooth, afni-smooth or fmriprep")
    model: str | None = Field(None, description="Hugging Face model name or local directory")
    stories: Many[str] | None = Field(None, min_length=1, description="stories to load "
                                      "(default: all the participants have)")
    nan_policy: Literal[NAN_POLICIES] = Field(
        "zero", description="voxels whose responses hold NaN or inf: zero (set to 0, with a "
        "warning naming the stories and voxel counts), drop (remove them for every story) or "
        "raise (stop with an error)")
    executor: Literal[EXECUTORS] = Field("none", description="where the jobs run: none (this "
                                         "process), local (submitit's local executor) or slurm")
    slurm_partition: str | None = Field(None, description="Slurm partition (--executor slurm)")
    gpus: int | None = Field(None, ge=0, description="GPUs per job (--executor slurm)")
    time: int | None = Field(None, ge=1, description="time limit per job in minutes "
                             "(--executor slurm)")
    mem: int | None = Field(None, ge=1, description="memory per job in GB (--executor slurm)")

    def slurm_options(self):
        """Resources for :func:`sk_braintune.executors.run_jobs`, those given.

        Returns
        -------
        options : dict
            ``slurm_partition``, ``gpus``, ``time_min`` and ``mem_gb`` where set (the
            executor's defaults apply to the others).
        """
        named = {"slurm_partition": self.slurm_partition, "gpus": self.gpus,
                 "time_min": self.time, "mem_gb": self.mem}
        return {k: v for k, v in named.items() if v is not None}


class TuneSettings(_RealDataSettings):
    """Options of ``sk-braintune tune`` (ds003020 data, model, executor, tuning).

    Several ``subject`` values tune one model on all of them (the follow-up's recipe).
    """

    window: float = Field(10.0, gt=0, description="audio window per TR in seconds")
    batch_size: int = Field(128, ge=1, description="windows per batch")
    epochs: int = Field(30, ge=1, description="maximum epochs")
    lr_backbone: float = Field(5e-5, gt=0, description="backbone learning rate")
    lr_head: float = Field(1e-4, gt=0, description="head learning rate")
    min_ceiling: float = Field(0.4, description="keep voxels whose noise ceiling exceeds this")
    overwrite: bool = Field(False, description="start over: delete the checkpoint a previous "
                            "run left in --output instead of resuming from it")


class EvaluateSettings(_RealDataSettings):
    """Options of ``sk-braintune evaluate`` (ds003020 data, model, executor, layers).

    The model is evaluated on each ``subject``, one job per participant.
    """

    window: float = Field(16.0, gt=0, description="audio window per TR in seconds")
    batch_size: int = Field(16, ge=1, description="windows per batch")
    layers: str = Field("all", description='"all" or comma-separated hidden_states indices')
    protocol: Literal["default", "paper"] = Field(
        "default", description="default (the toolkit's: story-grouped CV, correlation "
        "scoring) or paper (ds003020 only: the brain-tuning paper's 24 training stories, "
        "alphas huth, huth_rsq scoring, its global 20-TR chunk grid, scores against the mean "
        "of the test story's repeats)")
    ridge_backend: Literal[RIDGE_BACKENDS] = Field("numpy", description=_RIDGE_BACKEND_HELP)
    ridge_cv: int = Field(5, ge=2, description="inner cross-validation folds of the ridges "
                          "(story-grouped, at most one per training story)")
    significance: bool = Field(True, description="p/q values and ROI intervals of the last "
                               "layer (block-permutation p-values, BH-FDR q-values, "
                               "block-bootstrap intervals of the held-out r)",
                               json_schema_extra=_CONFIG_ONLY)
    n_permutations: int = Field(1000, ge=1, description="block permutations of the "
                                "significance test")
    variance_partitioning: bool = Field(True, description="variance partitioning vs low-level "
                                        "features (unique and shared variance of the last "
                                        "layer)", json_schema_extra=_CONFIG_ONLY)
    partitioning_n_iter: int = Field(10, ge=1, description="band-weight candidates of the "
                                     "partitioning")
    mapper: _Path | None = Field(None, description="brain maps on a subject's flatmap: a .npz "
                                 "from sk-braintune mappers, or a folder of "
                                 "<subject>_mapper.npz files (default: maps only where the "
                                 "data have a space)")

    def layer_indices(self):
        """``"all"`` or the tuple of layer indices ``layers`` names.

        Returns
        -------
        layers : "all" or tuple of int

        Raises
        ------
        SettingsError
            When ``layers`` is neither ``"all"`` nor comma-separated integers.
        """
        text = self.layers.strip()
        if text == "all":
            return "all"
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            raise SettingsError(f'--layers must be "all" or comma-separated integers, got '
                                f'{text!r}') from None


COMMAND_SETTINGS = {"demo": DemoCommandSettings, "dataset": DatasetCommandSettings,
                    "tune": TuneSettings, "evaluate": EvaluateSettings}
"""Settings class of each ``sk-braintune`` command."""
