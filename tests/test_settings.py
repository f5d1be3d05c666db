"""Typed settings: one set of defaults for the library, the command line and TOML files; every
value checked with an error naming the key, the expected type and the allowed values."""

import re
import tomllib

import pytest

from sk_braintune.commands import cli
from sk_braintune import study
from sk_braintune.commands.results import save_config
from sk_braintune.exceptions import SettingsError, StudyInputError
from sk_braintune.commands.settings import (
    DEFAULT_OUTPUT,
    DemoCommandSettings,
    EvaluateSettings,
    TuneSettings,
)
from sk_braintune.study.settings import (
    DemoSettings,
    ProbeSettings,
    StoryDatasetSettings,
    TunerSettings,
)


def test_demo_settings_is_the_preset():
    full = study.demo_settings()
    assert isinstance(full, DemoSettings) and full == DemoSettings()
    # the values the demo has always used
    assert (full.window, full.min_ceiling, full.ridge_cv, full.controls) == (
        8.0, 0.4, 5, ("block-permuted",))
    assert full.tuner.model_dump() == {"trainable_layers": 1, "max_epochs": 4, "batch_size": 32,
                                "lr_backbone": 2e-4, "lr_head": 1e-3, "patience": 2,
                                "pooling": "mean"}
    quick = study.demo_settings(quick=True, epochs=5)
    # the pre-registered semantic study's data: library, 15 minutes, 20 words, 3 listeners
    assert full.dataset == StoryDatasetSettings(stories="library", minutes=15.0,
                                                context_words=20, n_participants=3)
    assert full.model == "whisper-tiny.en" and DemoCommandSettings().models == (
        "ssl", "whisper-tiny.en")
    assert quick.dataset == StoryDatasetSettings(n_train_stories=3, max_words=120,
                                                 n_participants=2)
    assert (quick.window, quick.ridge_cv, quick.tuner.max_epochs, quick.tuner.patience) == (
        4.0, 3, 5, None)
    assert quick.probe.dataset == {"voices": ("en-us",), "rates": (175,),
                                   "fillers_per_template": 2}
    # presets never share mutable parts
    quick.tuner.lr_head = 0.5
    assert study.demo_settings(quick=True).tuner.lr_head == 1e-3
    assert DemoCommandSettings(quick=True, epochs=5).study_settings() == study.demo_settings(
        quick=True, epochs=5)


def test_tuner_settings_are_braintuner_parameters():
    from sk_braintune import BrainTuner

    params = BrainTuner("unused").get_params()
    for key in TunerSettings.model_fields:
        assert key in params, key
    tuner = BrainTuner("unused", **TunerSettings().model_dump())
    assert tuner.get_params()["lr_head"] == 1e-3


def test_attribute_access_and_plain_values():
    """Settings are read as attributes (the dict shim is gone); ``model_dump`` gives plain
    values, the keyword arguments the library functions take."""
    settings = DemoSettings()
    assert settings.window == 8.0 and "tuner" in DemoSettings.model_fields
    with pytest.raises(TypeError):
        settings["window"]
    assert dict(settings.tuner.model_dump(), validation=0.2)["validation"] == 0.2
    settings.dataset.test_story = "lost_dog"
    assert settings.dataset.test_story == "lost_dog"
    assert settings.dataset.model_dump(exclude_none=True) == {
        "test_story": "lost_dog", "stories": "library", "minutes": 15.0, "context_words": 20,
        "n_participants": 3}
    assert settings.probe.dataset["voices"] == ("en-us", "en-gb-x-rp")
    with pytest.raises(AttributeError):
        settings.nothing


@pytest.mark.parametrize("make, message", [
    (lambda: DemoSettings(window="8"), "setting 'window' must be a number > 0, got '8' (str)"),
    (lambda: DemoSettings(window=0), "setting 'window' must be a number > 0, got 0.0"),
    (lambda: DemoSettings(ridge_cv=True), "setting 'ridge_cv' must be an integer >= 2, got "
                                          "True (bool)"),
    (lambda: DemoSettings(controls=("block-permuted", "shuffled")),
     "unknown controls 'shuffled': setting 'controls' must be one of 'block-permuted', "
     "'other-story'"),
    (lambda: TunerSettings(pooling="maen"), "did you mean 'mean'?"),
    (lambda: DemoSettings.from_mapping({"tuner": {"max_epoch": 3}}, source="run.toml"),
     "run.toml: unknown setting 'tuner.max_epoch' for TunerSettings; did you mean "
     "'tuner.max_epochs'?"),
    (lambda: DemoSettings.from_mapping({"tuner": {"lr_head": "fast"}}),
     "setting 'tuner.lr_head' must be a number > 0, got 'fast' (str)"),
    (lambda: DemoSettings.from_mapping({"windw": 3}), "did you mean 'window'?"),
    (lambda: ProbeSettings(rates=(175, "fast")), "setting 'rates' must be a list of integers "
                                                 ">= 1, got (175, 'fast') (tuple)"),
    (lambda: TuneSettings(min_ceiling=float("nan")), "setting 'min_ceiling' must be a number"),
    (lambda: TuneSettings(subject=()), "with at least one value"),
    (lambda: EvaluateSettings(layers="0,last").layer_indices(), "--layers must be"),
])
def test_bad_values_name_the_key_type_and_allowed_values(make, message):
    with pytest.raises(SettingsError) as info:
        make()
    assert message in str(info.value)
    assert isinstance(info.value, StudyInputError)  # the CLI turns it into exit status 2


def test_values_are_checked_when_set_too():
    settings = TuneSettings()
    with pytest.raises(SettingsError, match="'epochs' must be an integer >= 1"):
        settings.epochs = 0
    with pytest.raises(SettingsError, match="unknown setting 'epoch'.*did you mean 'epochs'"):
        settings.epoch = 3
    settings.min_ceiling = 0  # an int where a number is expected becomes a float
    assert settings.min_ceiling == 0.0 and isinstance(settings.min_ceiling, float)


def test_output_default_in_one_place():
    assert str(TuneSettings().output) == str(DemoCommandSettings().output) == DEFAULT_OUTPUT
    assert cli.DEFAULT_OUTPUT == DEFAULT_OUTPUT


@pytest.mark.parametrize("settings", [
    TuneSettings(subject=("UTS01", "UTS02"), model="m", min_ceiling=0.0, epochs=3,
                 executor="local", mem=32),
    EvaluateSettings(subject=("UTS03",), layers="0,2", stories=("a", "b")),
    DemoCommandSettings(quick=True, controls=("other-story", "block-permuted"), epochs=2),
    DemoCommandSettings(study={"window": 6.0, "tuner": {"lr_head": 0.01, "patience": 3},
                               "probe": {"voices": ["en-us"]}}),
])
def test_saved_config_round_trips_through_the_command_line(settings, tmp_path):
    """``--config <output>/config.toml`` repeats the run with the same settings."""
    path = save_config(settings, tmp_path)
    with open(path, "rb") as f:
        assert type(settings).from_mapping(tomllib.load(f)).model_dump(mode="json") == (
            settings.model_dump(mode="json") | {"output": str(settings.output)})
    command = {TuneSettings: "tune", EvaluateSettings: "evaluate",
               DemoCommandSettings: "demo"}[type(settings)]
    resolved = cli.resolve_config(cli.build_parser().parse_args([command, "--config",
                                                                 str(path)]))
    assert resolved == settings


def test_model_dump_round_trips():
    settings = study.demo_settings(quick=True)
    again = DemoSettings.from_mapping(settings.model_dump(mode="json"))
    assert again == settings
    assert again.model_dump() == settings.model_dump()


def test_study_table_changes_only_its_keys():
    """A [study] table overrides the preset key by key, nested tables included."""
    command = DemoCommandSettings(quick=True, epochs=3, controls=("other-story",),
                                  study={"window": 6, "tuner": {"lr_head": 0.01},
                                         "dataset": {"test_story": "lost_dog"}})
    settings = command.study_settings()
    expected = study.demo_settings(quick=True)
    expected.window = 6.0
    expected.tuner.lr_head = 0.01
    expected.tuner.max_epochs = 3  # --epochs wins over the preset and the table
    expected.dataset.test_story = "lost_dog"
    expected.controls = ("other-story",)
    assert settings == expected
    assert settings.dataset.max_words == 120  # the quick preset's, kept


@pytest.mark.parametrize("table, message", [
    ({"windw": 3}, "unknown setting 'study.windw' for DemoSettings; did you mean "
                   "'study.window'?"),
    ({"tuner": {"lr_hed": 1}}, "did you mean 'study.tuner.lr_head'?"),
    ({"tuner": {"patience": 0}}, "setting 'study.tuner.patience' must be an integer >= 1"),
    ({"tuner": 3}, "setting 'study.tuner' must be a table of TunerSettings keys, got 3 (int)"),
    ({"controls": ["other-story"]}, "set the top-level key 'controls' instead"),
])
def test_study_table_errors(table, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        DemoCommandSettings(study=table).study_settings()


def test_error_and_warning_classes_live_in_one_module():
    """Defined once in sk_braintune.exceptions; the old import paths give the same classes."""
    import importlib
    import pkgutil

    import sk_braintune
    from sk_braintune import exceptions
    from sk_braintune.datasets import NaNVoxelWarning

    assert NaNVoxelWarning is exceptions.NaNVoxelWarning
    assert study.StudyInputError is exceptions.StudyInputError
    assert issubclass(exceptions.SettingsError, exceptions.StudyInputError)
    # no other module of the package defines its own Exception or Warning class
    for info in pkgutil.walk_packages(sk_braintune.__path__, "sk_braintune."):
        if info.name.startswith("sk_braintune.testing") or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                assert module is exceptions, f"{info.name}.{name} belongs in exceptions"


def test_each_option_is_documented_once_from_its_field():
    """The field's description is the --help line and the docstring's Parameters entry."""
    from numpydoc.docscrape import NumpyDocString

    from sk_braintune.commands.settings import COMMAND_SETTINGS

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command, settings_cls in COMMAND_SETTINGS.items():
        helps = {a.dest: a.help for a in subparsers[command]._actions}
        documented = {p.name: " ".join(p.desc) for p in
                      NumpyDocString(settings_cls.__doc__)["Parameters"]}
        assert list(documented) == list(settings_cls.model_fields)
        for name, field in settings_cls.model_fields.items():
            assert field.description, name
            words = field.description[1:].rstrip(".")
            assert words in documented[name], name
            if name in helps:  # flags: the description, then the default
                assert helps[name].startswith(field.description), name
    # config-file-only keys are not flags, and say so in the docs
    assert "study" not in {a.dest for a in subparsers["demo"]._actions}
    assert "significance" not in {a.dest for a in subparsers["evaluate"]._actions}
    significance = next(p for p in NumpyDocString(EvaluateSettings.__doc__)["Parameters"]
                        if p.name == "significance")
    assert "Config-file key only" in " ".join(significance.desc)


def test_with_overrides_is_a_checked_copy():
    settings = study.demo_settings()
    changed = settings.with_overrides({"tuner": {"lr_head": 0.01}, "window": 6})
    assert (changed.tuner.lr_head, changed.window, changed.tuner.max_epochs) == (0.01, 6.0, 4)
    assert settings == study.demo_settings()  # the original is left as it is
    assert changed.tuner is not settings.tuner
    with pytest.raises(SettingsError, match=re.escape("setting 'x.window' must be a number > 0, "
                                                      "got -1.0")):
        settings.with_overrides({"window": -1}, prefix="x.")
