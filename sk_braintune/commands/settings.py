"""Typed settings of the commands and of the study, with one set of defaults.

The command line (``sk-braintune``), ``--config`` TOML files and the library read their defaults
from the dataclasses here and nowhere else:

- :class:`DemoSettings` (with :class:`StoryDatasetSettings`, :class:`TunerSettings`,
  :class:`ProbeSettings`): sizes and hyperparameters of the study on the built-in dataset;
  :meth:`DemoSettings.preset` gives the demo's full or quick preset.
- :class:`DemoCommandSettings`, :class:`DatasetCommandSettings`, :class:`TuneSettings`,
  :class:`EvaluateSettings`: the options of ``sk-braintune demo | dataset | tune | evaluate``
  (every field is a long option, ``--batch-size`` for ``batch_size``, and a TOML key).

Every value is checked when it is set: a wrong type, a value outside the allowed ones or an
unknown key raises :class:`~sk_braintune.exceptions.SettingsError` naming the key, the expected
type and the allowed values (with a "did you mean" hint for misspelt keys). Settings objects also
answer mapping access (``settings["window"]``, ``settings.get("seed")``, ``dict(settings.tuner)``)
so that code written against the former dict settings keeps working.

This module imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

from .._docs import fill_doc
from ..exceptions import SettingsError

__all__ = [
    "DEFAULT_OUTPUT",
    "CONTROL_MODELS",
    "DEFAULT_CONTROLS",
    "EXECUTORS",
    "RIDGE_BACKENDS",
    "Option",
    "StoryDatasetSettings",
    "TunerSettings",
    "ProbeSettings",
    "DemoSettings",
    "RunSettings",
    "DemoCommandSettings",
    "DatasetCommandSettings",
    "TuneSettings",
    "EvaluateSettings",
    "COMMAND_SETTINGS",
    "settings_from_mapping",
    "settings_to_dict",
    "apply_overrides",
]

DEFAULT_OUTPUT = "sk_braintune_results"
"""Folder the commands write their results to when ``--output`` is not given."""

# control kind (``DemoSettings.controls``) -> the model's name in the results
CONTROL_MODELS = {"block-permuted": "random-fMRI", "other-story": "other-story fMRI",
                  "phase-randomized": "phase-randomized fMRI"}
"""Random-fMRI controls the study can tune, and the names of their models in the results."""
DEFAULT_CONTROLS = ("block-permuted",)
"""Controls the demo tunes by default."""
RIDGE_BACKENDS = ("numpy", "torch")
"""Backends of the ridge encoding models (``"torch"``: on the GPU when there is one)."""
EXECUTORS = ("none", "local", "slurm")
"""Where ``tune`` and ``evaluate`` run their jobs: in this process, submitit's local executor,
or Slurm through submitit."""

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               Path: "a path (string)", dict: "a table"}


@dataclass(frozen=True)
class Option:
    """How one settings field is typed, checked and shown on the command line.

    Parameters
    ----------
    kind : type
        ``int``, ``float``, ``str``, ``bool``, ``pathlib.Path`` or a settings dataclass (a
        nested table).
    help : str
        One line for ``--help`` and the documentation.
    many : bool
        A list of ``kind`` values (``nargs="+"`` on the command line; a TOML array, or a
        single value taken as a list of one).
    optional : bool
        ``None`` (TOML: the key left out) is allowed.
    choices : tuple, optional
        Allowed values.
    minimum : float, optional
        Smallest allowed value (inclusive, or exclusive when ``exclusive_minimum``).
    exclusive_minimum : bool
        Whether ``minimum`` itself is excluded.
    flags : tuple of str, optional
        Extra short flags (``("-o",)``).
    command_line : bool
        Whether the field is a command-line option (nested tables are not).
    """

    kind: type
    help: str = ""
    many: bool = False
    optional: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    flags: tuple = ()
    command_line: bool = True

    def describe(self):
        """Words for the expected type, e.g. ``"a list of strings"`` or ``"an integer >= 1"``.

        Returns
        -------
        text : str
        """
        if dataclasses.is_dataclass(self.kind):
            text = f"a table of {self.kind.__name__} keys"
        else:
            text = _KIND_NAMES[self.kind]
            if self.many:
                text = "a list of " + {"an integer": "integers", "a number": "numbers",
                                       "a string": "strings", "a path (string)": "paths",
                                       "true or false": "booleans"}[text]
        if self.minimum is not None:
            text += f" {'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        if self.optional:
            text += " (or left out)"
        return text

    def check(self, key, value):
        """Return ``value`` converted to this option's type, or raise a SettingsError.

        Parameters
        ----------
        key : str
            The setting's name, quoted in the error.
        value : object
            The value to check (from a TOML file, the command line or a keyword argument).

        Returns
        -------
        value : object
            ``int`` -> ``float`` where a number is expected, lists -> tuples, strings ->
            ``Path`` for paths, mappings -> the nested settings class.

        Raises
        ------
        SettingsError
            When the value has the wrong type or is not allowed.
        """
        if value is None:
            if self.optional:
                return None
            raise SettingsError(f"setting {key!r} must be {self.describe()}, got nothing "
                                "(None)")
        if dataclasses.is_dataclass(self.kind):
            if isinstance(value, self.kind):
                return value
            if isinstance(value, dict) or hasattr(value, "keys"):
                return settings_from_mapping(self.kind, dict(value), prefix=f"{key}.")
            self._fail(key, value)
        if self.kind is dict:
            if not isinstance(value, dict):
                self._fail(key, value)
            return dict(value)
        if self.many:
            if isinstance(value, (str, Path)) or not hasattr(value, "__iter__"):
                value = [value]
            values = tuple(self._check_one(key, item, whole=value) for item in value)
            if not values:
                raise SettingsError(f"setting {key!r} must be {self.describe()} with at least "
                                    "one value, got an empty list")
            return values
        return self._check_one(key, value)

    def _check_one(self, key, value, whole=None):
        kind = self.kind
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
                ok = math.isfinite(value)
        elif kind is Path:
            ok = isinstance(value, (str, Path))
            value = Path(value) if ok else value
        else:
            ok = isinstance(value, kind)
        if not ok:
            self._fail(key, value if whole is None else whole)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            hint = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            raise SettingsError(f"unknown {key} {value!r}: setting {key!r} must be one of "
                                f"{allowed} ({self.describe()})"
                                + (f"; did you mean {hint[0]!r}?" if hint else ""))
        if self.minimum is not None and (value < self.minimum or (
                self.exclusive_minimum and value == self.minimum)):
            raise SettingsError(f"setting {key!r} must be {self.describe()}, got {value!r}")
        return value

    def _fail(self, key, value):
        allowed = (" (allowed values: " + ", ".join(repr(c) for c in self.choices) + ")"
                   if self.choices else "")
        raise SettingsError(f"setting {key!r} must be {self.describe()}{allowed}, got "
                            f"{value!r} ({type(value).__name__})")


def option(default, kind, help="", **spec):
    """A dataclass field whose metadata holds its :class:`Option` (mutable defaults copied)."""
    spec = Option(kind, help, **spec)
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata={"option": spec})
    return field(default=default, metadata={"option": spec})


def _copy(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return type(value)(value)


class _SettingsBase:
    """Validation on every assignment, and mapping access for dict-era code."""

    def __setattr__(self, name, value):
        spec = self.options().get(name)
        if spec is None:
            raise _unknown_key_error(type(self), name)
        super().__setattr__(name, spec.check(name, value))

    @classmethod
    def options(cls):
        """The :class:`Option` of each field.

        Returns
        -------
        options : dict of str to Option
        """
        return {f.name: f.metadata["option"] for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, mapping, *, source=None):
        """Build the settings from a mapping (a TOML table, keyword arguments), all checked.

        Parameters
        ----------
        mapping : mapping of str to object or instance of this class
            Keys are field names; missing ones take the defaults. An instance is returned as
            it is.
        source : str, optional
            Where the mapping came from (a file name), quoted in errors.

        Returns
        -------
        settings : instance of this class

        Raises
        ------
        SettingsError
            For an unknown key or a value of the wrong type.
        """
        if isinstance(mapping, cls):
            return mapping
        return settings_from_mapping(cls, mapping, source=source)

    def to_dict(self):
        """The settings as plain JSON/TOML types (nested tables as dicts, tuples as lists).

        Returns
        -------
        values : dict
        """
        return settings_to_dict(self)

    # mapping access, kept for code written against the former dict settings
    def keys(self):
        """Field names, so that ``dict(settings)`` and ``**settings`` work.

        Returns
        -------
        keys : list of str
        """
        return [f.name for f in dataclasses.fields(self)]

    def items(self):
        """``(name, value)`` pairs of the fields.

        Returns
        -------
        items : list of tuple
        """
        return [(key, getattr(self, key)) for key in self.keys()]

    def __getitem__(self, key):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)

    def __contains__(self, key):
        return key in self.keys()

    def get(self, key, default=None):
        """The value of field ``key``, or ``default`` when there is no such field.

        Parameters
        ----------
        key : str
        default : object, optional

        Returns
        -------
        value : object
        """
        return getattr(self, key) if key in self.keys() else default

    def update(self, values=(), **kwargs):
        """Set several fields, each checked.

        Parameters
        ----------
        values : mapping, optional
        **kwargs
            Field values.
        """
        for key, value in dict(values, **kwargs).items():
            setattr(self, key, value)


def _unknown_key_error(cls, key, source=None, prefix=""):
    valid = [f.name for f in dataclasses.fields(cls)]
    hint = difflib.get_close_matches(str(key), valid, n=1)
    where = f"{source}: " if source else ""
    return SettingsError(
        f"{where}unknown setting {prefix + str(key)!r} for {cls.__name__}"
        + (f"; did you mean {prefix + hint[0]!r}?" if hint else "")
        + f" (valid keys: {', '.join(valid)})")


def settings_from_mapping(cls, mapping, *, source=None, prefix=""):
    """Build a settings dataclass from a mapping, checking keys and values.

    Parameters
    ----------
    cls : type
        A settings dataclass of this module.
    mapping : mapping of str to object
    source : str, optional
        Where the mapping came from (a file name), quoted in errors.
    prefix : str, default=""
        Prefix of the keys in errors (``"tuner."`` for a nested table).

    Returns
    -------
    settings : cls

    Raises
    ------
    SettingsError
    """
    mapping = dict(mapping)
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in mapping:
        if key not in valid:
            raise _unknown_key_error(cls, key, source, prefix)
    try:
        return cls(**mapping)
    except SettingsError as exc:
        message = str(exc)
        if prefix:
            message = message.replace("setting '", f"setting '{prefix}", 1)
        if source and not message.startswith(f"{source}:"):
            message = f"{source}: {message}"
        raise SettingsError(message) from None


def settings_to_dict(settings):
    """Plain-type copy of a settings object (nested tables as dicts, tuples as lists).

    Parameters
    ----------
    settings : settings dataclass

    Returns
    -------
    values : dict
    """
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(settings)


def apply_overrides(settings, overrides, *, prefix=""):
    """Set fields of ``settings`` from a mapping; nested tables update nested settings in place.

    Unlike assigning a mapping to a nested field (which builds it afresh from the defaults),
    ``{"tuner": {"lr_head": 0.01}}`` changes only ``settings.tuner.lr_head``.

    Parameters
    ----------
    settings : settings dataclass
    overrides : mapping of str to object
    prefix : str, default=""
        Prefix of the keys in errors (``"study."`` for a ``[study]`` table).

    Returns
    -------
    settings : settings dataclass
        The same object, changed.

    Raises
    ------
    SettingsError
        For an unknown key or a value of the wrong type, named with ``prefix``.
    """
    for key, value in dict(overrides).items():
        if key not in settings.keys():
            raise _unknown_key_error(type(settings), key, prefix=prefix)
        current = getattr(settings, key)
        if isinstance(current, _SettingsBase) and isinstance(value, dict):
            apply_overrides(current, value, prefix=f"{prefix}{key}.")
            continue
        try:
            setattr(settings, key, value)
        except SettingsError as exc:
            raise SettingsError(str(exc).replace("setting '", f"setting '{prefix}", 1)
                                if prefix else str(exc)) from None
    return settings


# -- the study on the built-in dataset ------------------------------------------------------

@dataclass
class StoryDatasetSettings(_SettingsBase):
    """Keyword arguments of :func:`~sk_braintune.builtin.make_story_dataset` the study sets.

    Parameters
    ----------
    n_train_stories : int, optional
        Training stories (default: all but the validation and test stories).
    max_words : int, optional
        Cut each story after this many words (default: whole stories).
    test_story, validation_story : str, optional
        Held-out stories (default: the dataset's).
    stories : {"default", "library"}
        Packaged story collection: 11 short stories, or the 3.7-hour library.
    minutes : float, optional
        Keep the first training stories until their audio reaches this many minutes (the
        simulated brain stays the one built over all stories; default: every training story).
    context_words : int, optional
        Words of context behind the semantic voxels (default: the dataset's).
    n_participants : int, optional
        Simulated listeners (default: one).
    """

    n_train_stories: int | None = option(None, int, "training stories (default: all)",
                                         optional=True, minimum=1)
    max_words: int | None = option(None, int, "words per story (default: whole stories)",
                                   optional=True, minimum=1)
    test_story: str | None = option(None, str, "held-out test story", optional=True)
    validation_story: str | None = option(None, str, "validation story", optional=True)
    stories: str = option("default", str, "packaged story collection",
                          choices=("default", "library"))
    minutes: float | None = option(None, float, "minutes of training audio (default: all)",
                                   optional=True, minimum=0, exclusive_minimum=True)
    context_words: int | None = option(None, int, "words of context of the semantic voxels",
                                       optional=True, minimum=1)
    n_participants: int | None = option(None, int, "simulated listeners (default: one)",
                                        optional=True, minimum=1)


@dataclass
class TunerSettings(_SettingsBase):
    """:class:`~sk_braintune.BrainTuner` parameters of the study (``dict(settings)`` passes them).

    Parameters
    ----------
    trainable_layers : int, optional
        Top transformer blocks that are tuned (all when None).
    max_epochs : int
    batch_size : int
    lr_backbone, lr_head : float
        Learning rates of the backbone and of the linear head.
    patience : int, optional
        Early-stopping patience in epochs (no early stopping when None).
    pooling : {"mean", "last"}
    """

    # Whisper tiny.en's top block over cached lower layers: the only tuning that fits ~10 minutes
    # on 2 CPU cores; rates above the paper's because 4 epochs of ~18 batches are ~100x fewer
    # steps than the paper's runs.
    trainable_layers: int | None = option(1, int, "top blocks tuned (all when left out)",
                                          optional=True, minimum=1)
    max_epochs: int = option(4, int, "tuning epochs", minimum=1)
    batch_size: int = option(32, int, "windows per batch", minimum=1)
    lr_backbone: float = option(2e-4, float, "backbone learning rate", minimum=0,
                                exclusive_minimum=True)
    lr_head: float = option(1e-3, float, "head learning rate", minimum=0,
                            exclusive_minimum=True)
    patience: int | None = option(2, int, "early-stopping patience (none when left out)",
                                  optional=True, minimum=1)
    pooling: str = option("mean", str, "pooling of the frames of a window",
                          choices=("mean", "last"))


@dataclass
class ProbeSettings(_SettingsBase):
    """The spoken-intent probe's dataset (:func:`~sk_braintune.builtin.make_intent_dataset`).

    Parameters
    ----------
    voices : tuple of str
        espeak-ng voices.
    rates : tuple of int
        Speaking rates (words per minute).
    fillers_per_template : int
        Slot fillers per paraphrase template.
    """

    voices: tuple = option(("en-us", "en-gb-x-rp"), str, "espeak-ng voices", many=True)
    rates: tuple = option((175,), int, "speaking rates (words per minute)", many=True,
                          minimum=1)
    fillers_per_template: int = option(3, int, "slot fillers per template", minimum=1)

    @property
    def dataset(self):
        """Keyword arguments of ``make_intent_dataset``.

        Returns
        -------
        kwargs : dict
        """
        return {"voices": self.voices, "rates": self.rates,
                "fillers_per_template": self.fillers_per_template}

    def __getitem__(self, key):
        if key == "dataset":  # the former ``settings["probe"]["dataset"]``
            return self.dataset
        return super().__getitem__(key)


@dataclass
class DemoSettings(_SettingsBase):
    """Sizes and hyperparameters of the brain-tuning study on the built-in story dataset.

    Parameters
    ----------
    dataset : StoryDatasetSettings
        What :func:`~sk_braintune.builtin.make_story_dataset` generates.
    model : str
        The pretrained model: ``"whisper-tiny.en"`` (Whisper tiny.en's encoder,
        :func:`~sk_braintune.builtin.load_whisper_tiny_en`), ``"ssl"`` (the self-supervised
        model pretrained on the story library, :func:`~sk_braintune.builtin.load_ssl_speech_model`)
        or a local model directory.
    window : float
        Audio window per TR (s).
    min_ceiling : float
        Voxels whose noise ceiling exceeds this are the tuning targets.
    tuner : TunerSettings
        :class:`~sk_braintune.BrainTuner` parameters.
    probe : ProbeSettings
        The spoken-intent probe's dataset.
    ridge_cv : int
        Cross-validation folds of the ridge encoding models (clamped to the number of stories).
    controls : tuple of str
        Random-fMRI controls to tune (keys of :data:`CONTROL_MODELS`): ``"block-permuted"``
        (15-TR blocks moved far away), ``"other-story"`` (each story gets another story's
        responses) and/or ``"phase-randomized"`` (each story's responses with random Fourier
        phases: a generic-tuning control).
    ridge_backend : {"numpy", "torch"}
        Backend of the ridge encoding models (``"torch"`` runs them on the GPU when there is
        one).
    significance : bool
        Block-permutation p-values, BH-FDR q-values and block-bootstrap ROI intervals of the
        last layer's held-out r.
    n_permutations : int
        Block permutations (and bootstrap samples) of the significance analysis.
    variance_partitioning : bool
        Unique and shared variance of the last layer vs the low-level features.
    partitioning_n_iter : int
        Band-weight candidates of the variance partitioning's banded ridge.
    encoding_curve : tuple of int
        The encoding-data curve: the last layer's encoding model is also fitted on the first
        ``k`` fitting stories for each ``k`` (and on all of them) and scored on the held-out
        story; empty for none.

    See Also
    --------
    DemoSettings.preset : The demo's full and quick presets.
    """

    # the library's first 19 minutes of training stories, 3 listeners, semantic voxels on 20
    # words of context: the design of the pre-registered semantic study (user guide)
    dataset: StoryDatasetSettings = option(
        StoryDatasetSettings(stories="library", minutes=15.0, context_words=20,
                             n_participants=3),
        StoryDatasetSettings, "the built-in dataset", command_line=False)
    model: str = option("whisper-tiny.en", str, "pretrained model: whisper-tiny.en, ssl (the "
                        "self-supervised model made here) or a local model directory")
    window: float = option(8.0, float, "audio window per TR in seconds", minimum=0,
                           exclusive_minimum=True)
    min_ceiling: float = option(0.4, float, "tuning targets: noise ceiling above this")
    tuner: TunerSettings = option(TunerSettings(), TunerSettings, "BrainTuner parameters",
                                  command_line=False)
    probe: ProbeSettings = option(ProbeSettings(), ProbeSettings, "the probe's dataset",
                                  command_line=False)
    ridge_cv: int = option(5, int, "ridge cross-validation folds", minimum=2)
    controls: tuple = option(DEFAULT_CONTROLS, str, "random-fMRI controls", many=True,
                             choices=tuple(CONTROL_MODELS))
    ridge_backend: str = option("numpy", str, "backend of the ridge encoding models",
                                choices=RIDGE_BACKENDS)
    significance: bool = option(True, bool, "p/q values and ROI intervals of the last layer",
                                command_line=False)
    n_permutations: int = option(1000, int, "block permutations of the significance test",
                                 minimum=1, command_line=False)
    variance_partitioning: bool = option(True, bool, "variance partitioning vs low-level "
                                         "features", command_line=False)
    partitioning_n_iter: int = option(10, int, "band-weight candidates of the partitioning",
                                      minimum=1, command_line=False)
    encoding_curve: tuple = option((3, 6, 12, 24), int, "encoding-data curve: stories the "
                                   "ridge is fitted on", many=True, minimum=1,
                                   command_line=False)

    @classmethod
    def preset(cls, quick=False, epochs=None, **overrides):
        """The demo's settings: the full run, or the quick one (a couple of minutes).

        Parameters
        ----------
        quick : bool, default=False
            3 training stories of the default collection cut at 120 words, 2 listeners, 4 s
            windows, 2 epochs without early
            stopping, one probe voice, 3 ridge folds.
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
            settings.dataset = StoryDatasetSettings(n_train_stories=3, max_words=120,
                                                    n_participants=2)
            settings.window = 4.0
            settings.tuner.update(max_epochs=2, patience=None)
            settings.probe = ProbeSettings(voices=("en-us",), rates=(175,),
                                           fillers_per_template=2)
            settings.ridge_cv = 3
        apply_overrides(settings, overrides)
        if epochs is not None:
            settings.tuner.max_epochs = epochs
        return settings


# -- the commands ---------------------------------------------------------------------------

@fill_doc
@dataclass
class RunSettings(_SettingsBase):
    """Options every command takes.

    Parameters
    ----------
    %(run_options)s
    """

    output: Path = option(Path(DEFAULT_OUTPUT), Path,
                          "directory for results, figures, manifest and report", flags=("-o",))
    seed: int = option(0, int, "random seed", minimum=0)
    device: str = option("auto", str, "torch device: auto, cpu, cuda, cuda:1, ...")
    threads: int | None = option(None, int, "torch/BLAS threads (default: all cores)",
                                 optional=True, minimum=1)
    quiet: bool = option(False, bool, "no progress bars")


@fill_doc
@dataclass
class DemoCommandSettings(RunSettings):
    """Options of ``sk-braintune demo``.

    Parameters
    ----------
    %(run_options)s
    quick : bool
        The quick preset of :meth:`DemoSettings.preset`.
    epochs : int, optional
        Tuning epochs (default: the preset's).
    models : tuple of str
        Pretrained models, each brain-tuned and compared in a study of its own on the same
        data: ``"ssl"`` (the self-supervised model made here), ``"whisper-tiny.en"`` or local
        model directories.
    controls : tuple of str
        Random-fMRI controls to tune.
    no_figures : bool
        Skip the figures.
    ridge_backend : {"numpy", "torch"}
        Backend of the ridge encoding models.
    study : dict
        Overrides of the study's settings (keys of :class:`DemoSettings`, nested tables for
        ``dataset``, ``tuner`` and ``probe``), from a ``[study]`` table of the TOML file.
    """

    quick: bool = option(False, bool, "smaller run (a couple of minutes) for smoke tests")
    epochs: int | None = option(None, int, "tuning epochs (default: the study's)",
                                optional=True, minimum=1)
    models: tuple = option(("ssl", "whisper-tiny.en"), str, "pretrained models, one study "
                           "each: ssl (self-supervised, made here), whisper-tiny.en or local "
                           "directories", many=True)
    controls: tuple = option(DEFAULT_CONTROLS, str,
                             "random-fMRI controls to tune; other-story gives each story "
                             "another story's responses", many=True,
                             choices=tuple(CONTROL_MODELS))
    no_figures: bool = option(False, bool, "skip the figures")
    ridge_backend: str = option("numpy", str, "ridge backend: numpy, or torch (on the GPU "
                                "with --device cuda)", choices=RIDGE_BACKENDS)
    study: dict = option({}, dict, "overrides of the study's settings (a [study] table of "
                         "DemoSettings keys)", command_line=False)

    def study_settings(self):
        """The :class:`DemoSettings` these options select.

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
        settings = DemoSettings.preset(quick=self.quick)
        apply_overrides(settings, self.study, prefix="study.")
        if self.epochs is not None:
            settings.tuner.max_epochs = self.epochs
        settings.controls = self.controls
        settings.ridge_backend = self.ridge_backend
        return settings


@fill_doc
@dataclass
class DatasetCommandSettings(RunSettings):
    """Options of ``sk-braintune dataset`` (those of :class:`RunSettings`).

    Parameters
    ----------
    %(run_options)s
    """


@dataclass
class _RealDataSettings(RunSettings):
    root: Path | None = option(None, Path, "local copy of OpenNeuro ds003020 (holds "
                               "derivative/preprocessed_data, stimuli, derivative/TextGrids)",
                               optional=True)
    subject: tuple | None = option(None, str, "participant(s), e.g. UTS03 or UTS01 UTS02 UTS03",
                                   many=True, optional=True)
    model: str | None = option(None, str, "Hugging Face model name or local directory",
                               optional=True)
    stories: tuple | None = option(None, str, "stories to load (default: all the participants "
                                   "have)", many=True, optional=True)
    executor: str = option("none", str, "where the jobs run: none (this process), local "
                           "(submitit's local executor) or slurm", choices=EXECUTORS)
    slurm_partition: str | None = option(None, str, "Slurm partition (--executor slurm)",
                                         optional=True)
    gpus: int | None = option(None, int, "GPUs per job (--executor slurm)", optional=True,
                              minimum=0)
    time: int | None = option(None, int, "time limit per job in minutes (--executor slurm)",
                              optional=True, minimum=1)
    mem: int | None = option(None, int, "memory per job in GB (--executor slurm)",
                             optional=True, minimum=1)

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


@fill_doc
@dataclass
class TuneSettings(_RealDataSettings):
    """Options of ``sk-braintune tune`` (ds003020 data, model, executor, tuning).

    Parameters
    ----------
    %(run_options)s
    root : pathlib.Path
        Local copy of OpenNeuro ds003020.
    subject : tuple of str
        Participants; several tune one model on all of them (the follow-up's recipe).
    model : str
        Hugging Face model name or local directory.
    stories : tuple of str, optional
        Stories to load (default: all the participants have).
    executor : {"none", "local", "slurm"}
        Where the job runs.
    slurm_partition, gpus, time, mem
        Slurm resources (partition, GPUs per job, minutes, GB).
    window : float
        Audio window per TR (s).
    batch_size : int
        Windows per batch.
    epochs : int
        Maximum epochs.
    lr_backbone, lr_head : float
        Learning rates.
    min_ceiling : float
        Tuning targets: voxels whose noise ceiling exceeds this (0 keeps every voxel with a
        positive ceiling).
    """

    window: float = option(10.0, float, "audio window per TR in seconds", minimum=0,
                           exclusive_minimum=True)
    batch_size: int = option(128, int, "windows per batch", minimum=1)
    epochs: int = option(30, int, "maximum epochs", minimum=1)
    lr_backbone: float = option(5e-5, float, "backbone learning rate", minimum=0,
                                exclusive_minimum=True)
    lr_head: float = option(1e-4, float, "head learning rate", minimum=0,
                            exclusive_minimum=True)
    min_ceiling: float = option(0.4, float, "keep voxels whose noise ceiling exceeds this")


@fill_doc
@dataclass
class EvaluateSettings(_RealDataSettings):
    """Options of ``sk-braintune evaluate`` (ds003020 data, model, executor, layers).

    Parameters
    ----------
    %(run_options)s
    root : pathlib.Path
        Local copy of OpenNeuro ds003020.
    subject : tuple of str
        Participants; the model is evaluated on each.
    model : str
        Hugging Face model name or local directory.
    stories : tuple of str, optional
        Stories to load.
    executor : {"none", "local", "slurm"}
        Where the jobs (one per participant) run.
    slurm_partition, gpus, time, mem
        Slurm resources (partition, GPUs per job, minutes, GB).
    window : float
        Audio window per TR (s).
    batch_size : int
        Windows per batch.
    layers : str
        ``"all"`` or comma-separated ``hidden_states`` indices.
    ridge_backend : {"numpy", "torch"}
        Backend of the ridge encoding models.
    ridge_cv : int
        Inner cross-validation folds of the ridges (story-grouped, at most one per training
        story).
    significance : bool
        Block-permutation p-values, BH-FDR q-values and block-bootstrap ROI intervals of the
        last layer's held-out r (config file only).
    n_permutations : int
        Block permutations (and bootstrap samples) of the significance analysis.
    variance_partitioning : bool
        Unique and shared variance of the last layer vs the low-level features (config file
        only).
    partitioning_n_iter : int
        Band-weight candidates of the variance partitioning's banded ridge.
    """

    window: float = option(16.0, float, "audio window per TR in seconds", minimum=0,
                           exclusive_minimum=True)
    batch_size: int = option(16, int, "windows per batch", minimum=1)
    layers: str = option("all", str, '"all" or comma-separated hidden_states indices')
    ridge_backend: str = option("numpy", str, "ridge backend: numpy, or torch (on the GPU "
                                "with --device cuda)", choices=RIDGE_BACKENDS)
    ridge_cv: int = option(5, int, "ridge cross-validation folds", minimum=2)
    significance: bool = option(True, bool, "p/q values and ROI intervals of the last layer",
                                command_line=False)
    n_permutations: int = option(1000, int, "block permutations of the significance test",
                                 minimum=1)
    variance_partitioning: bool = option(True, bool, "variance partitioning vs low-level "
                                         "features", command_line=False)
    partitioning_n_iter: int = option(10, int, "band-weight candidates of the partitioning",
                                      minimum=1)

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
