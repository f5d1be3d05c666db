"""Settings of the brain-tuning study on the built-in dataset, with one set of defaults.

:class:`DemoSettings` (with :class:`StoryDatasetSettings`, :class:`TunerSettings` and
:class:`ProbeSettings`) holds the sizes and hyperparameters :func:`run_braintuning_study` reads;
:meth:`DemoSettings.preset` gives the demo's full or quick preset, which the ``[study]`` table of
a ``sk-braintune demo`` config file overrides key by key.

Every value is checked when it is set: a wrong type, a value outside the allowed ones or an
unknown key raises :class:`~sk_braintune.exceptions.SettingsError` naming the key, the value and
what is allowed (with a "did you mean" hint for misspelt keys).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .._settings import Many, SettingsModel

__all__ = ["CONTROL_MODELS", "DEFAULT_CONTROLS", "RIDGE_BACKENDS", "StoryDatasetSettings",
           "TunerSettings", "ProbeSettings", "DemoSettings"]

# control kind (``DemoSettings.controls``) -> the model's name in the results
CONTROL_MODELS = {"block-permuted": "random-fMRI", "other-story": "other-story fMRI",
                  "phase-randomized": "phase-randomized fMRI"}
"""Random-fMRI controls the study can tune, and the names of their models in the results."""
DEFAULT_CONTROLS = ("block-permuted",)
"""Controls the demo tunes by default."""
RIDGE_BACKENDS = ("numpy", "torch")
"""Backends of the ridge encoding models (``"torch"``: on the GPU when there is one)."""

Control = Literal[tuple(CONTROL_MODELS)]
RidgeBackend = Literal[RIDGE_BACKENDS]

_CONFIG_ONLY = {"command_line": False}


class StoryDatasetSettings(SettingsModel):
    """Keyword arguments of :func:`~sk_braintune.builtin.make_story_dataset` the study sets."""

    n_train_stories: int | None = Field(
        None, ge=1, description="training stories (default: all but the validation and test "
        "stories)")
    max_words: int | None = Field(
        None, ge=1, description="cut each story after this many words (default: whole stories)")
    test_story: str | None = Field(None, description="held-out test story (default: the "
                                   "dataset's)")
    validation_story: str | None = Field(None, description="validation story (default: the "
                                         "dataset's)")
    stories: Literal["default", "library"] = Field(
        "default", description="packaged story collection: 11 short stories, or the 3.7-hour "
        "library")
    minutes: float | None = Field(
        None, gt=0, description="keep the first training stories until their audio reaches "
        "this many minutes (the simulated brain stays the one built over all stories; default: "
        "every training story)")
    context_words: int | None = Field(
        None, ge=1, description="words of context behind the semantic voxels (default: the "
        "dataset's)")
    n_participants: int | None = Field(None, ge=1, description="simulated listeners (default: "
                                       "one)")


class TunerSettings(SettingsModel):
    """:class:`~sk_braintune.BrainTuner` parameters of the study (``model_dump()`` passes them)."""

    # Whisper tiny.en's top block over cached lower layers: the only tuning that fits ~10 minutes
    # on 2 CPU cores; rates above the paper's because 4 epochs of ~18 batches are ~100x fewer
    # steps than the paper's runs.
    trainable_layers: int | None = Field(1, ge=1, description="top transformer blocks that are "
                                         "tuned (all when left out)")
    max_epochs: int = Field(4, ge=1, description="tuning epochs")
    batch_size: int = Field(32, ge=1, description="windows per batch")
    lr_backbone: float = Field(2e-4, gt=0, description="learning rate of the backbone")
    lr_head: float = Field(1e-3, gt=0, description="learning rate of the linear head")
    patience: int | None = Field(2, ge=1, description="early-stopping patience in epochs (no "
                                 "early stopping when left out)")
    pooling: Literal["mean", "last"] = Field("mean", description="pooling of the frames of a "
                                             "window")


class ProbeSettings(SettingsModel):
    """The spoken-intent probe's dataset (:func:`~sk_braintune.builtin.make_intent_dataset`)."""

    voices: Many[str] = Field(("en-us", "en-gb-x-rp"), min_length=1,
                              description="espeak-ng voices")
    rates: Many[Annotated[int, Field(ge=1)]] = Field(
        (175,), min_length=1, description="speaking rates (words per minute)")
    fillers_per_template: int = Field(3, ge=1, description="slot fillers per paraphrase "
                                      "template")

    @property
    def dataset(self):
        """Keyword arguments of ``make_intent_dataset``.

        Returns
        -------
        kwargs : dict
        """
        return self.model_dump()


class DemoSettings(SettingsModel):
    """Sizes and hyperparameters of the brain-tuning study on the built-in story dataset.

    See Also
    --------
    DemoSettings.preset : The demo's full and quick presets.
    """

    # the library's first 19 minutes of training stories, 3 listeners, semantic voxels on 20
    # words of context: the design of the pre-registered semantic study (user guide)
    dataset: StoryDatasetSettings = Field(
        default_factory=lambda: StoryDatasetSettings(stories="library", minutes=15.0,
                                                     context_words=20, n_participants=3),
        description="what :func:`~sk_braintune.builtin.make_story_dataset` generates")
    model: str = Field(
        "whisper-tiny.en", description="the pretrained model: ``whisper-tiny.en`` (Whisper "
        "tiny.en's encoder, :func:`~sk_braintune.builtin.load_whisper_tiny_en`), ``ssl`` (the "
        "self-supervised model pretrained on the story library, "
        ":func:`~sk_braintune.builtin.load_ssl_speech_model`) or a local model directory")
    window: float = Field(8.0, gt=0, description="audio window per TR in seconds")
    min_ceiling: float = Field(0.4, description="voxels whose noise ceiling exceeds this are "
                               "the tuning targets")
    tuner: TunerSettings = Field(default_factory=TunerSettings,
                                 description=":class:`~sk_braintune.BrainTuner` parameters")
    probe: ProbeSettings = Field(default_factory=ProbeSettings,
                                 description="the spoken-intent probe's dataset")
    ridge_cv: int = Field(5, ge=2, description="cross-validation folds of the ridge encoding "
                          "models (clamped to the number of stories)")
    controls: Many[Control] = Field(
        DEFAULT_CONTROLS, min_length=1, description="random-fMRI controls to tune (keys of "
        ":data:`CONTROL_MODELS`): ``block-permuted`` (15-TR blocks moved far away), "
        "``other-story`` (each story gets another story's responses) and/or "
        "``phase-randomized`` (each story's responses with random Fourier phases: a "
        "generic-tuning control)")
    ridge_backend: RidgeBackend = Field(
        "numpy", description="backend of the ridge encoding models (``torch`` runs them on the "
        "GPU when there is one)")
    significance: bool = Field(True, description="block-permutation p-values, BH-FDR q-values "
                               "and block-bootstrap ROI intervals of the last layer's held-out r")
    n_permutations: int = Field(1000, ge=1, description="block permutations (and bootstrap "
                                "samples) of the significance analysis")
    variance_partitioning: bool = Field(True, description="unique and shared variance of the "
                                        "last layer vs the low-level features")
    partitioning_n_iter: int = Field(10, ge=1, description="band-weight candidates of the "
                                     "variance partitioning's banded ridge")
    encoding_curve: Many[Annotated[int, Field(ge=1)]] = Field(
        (3, 6, 12, 24), min_length=1, description="the encoding-data curve: the last layer's "
        "encoding model is also fitted on the first ``k`` fitting stories for each ``k`` (and "
        "on all of them) and scored on the held-out story")

    @classmethod
    def preset(cls, quick=False, epochs=None, **overrides):
        """The demo's settings: the full run, or the quick one (a couple of minutes).

        Parameters
        ----------
        quick : bool, default=False
            3 training stories of the default collection cut at 120 words, 2 listeners, 4 s
            windows, 2 epochs without early stopping, one probe voice, 3 ridge folds.
        epochs : int, optional
            Override the number of tuning epochs.
        **overrides
            Any field of :class:`DemoSettings`; a mapping for a nested table changes only the
            keys it holds (``tuner={"lr_head": 0.01}``).

        Returns
        -------
        settings : DemoSettings
        """
        settings = cls()
        if quick:
            settings = cls(dataset=StoryDatasetSettings(n_train_stories=3, max_words=120,
                                                        n_participants=2),
                           window=4.0, tuner=TunerSettings(max_epochs=2, patience=None),
                           probe=ProbeSettings(voices=("en-us",), rates=(175,),
                                               fillers_per_template=2),
                           ridge_cv=3)
        settings = settings.with_overrides(overrides)
        if epochs is not None:
            settings.tuner.max_epochs = epochs
        return settings
