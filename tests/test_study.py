"""The study's building blocks: which models it compares and the control targets it tunes on."""

import numpy as np
import pytest

from sk_braintune.commands import cli
from sk_braintune import study
from sk_braintune.builtin import registry
from sk_braintune.exceptions import SettingsError
from sk_braintune.commands.settings import DemoCommandSettings
from sk_braintune.tuning import block_permuted_targets


def _stories(lengths, n_voxels=3):
    """Concatenated responses whose every value names its story, row and voxel."""
    names = [f"story{i}" for i in range(len(lengths))]
    blocks = [np.array([[1000 * s + 10 * row + v for v in range(n_voxels)]
                        for row in range(n)], float) for s, n in enumerate(lengths)]
    groups = np.concatenate([[name] * n for name, n in zip(names, lengths)])
    return np.concatenate(blocks), groups, dict(zip(names, blocks))


def test_model_names_follow_the_controls():
    settings = study.demo_settings()
    assert study.model_names(settings) == study.MODEL_NAMES
    settings.controls = ("other-story", "block-permuted")
    assert study.model_names(settings) == ("pretrained", "brain-tuned", "other-story fMRI",
                                           "random-fMRI")
    # settings objects check the value when it is set; a plain dict is checked here
    with pytest.raises(study.StudyInputError, match="unknown controls"):
        settings.controls = ("shuffled",)
    with pytest.raises(study.StudyInputError, match="unknown controls"):
        study.model_names({"controls": ("shuffled",)})


def test_other_story_control_gives_each_story_another_storys_rows():
    responses, groups, by_story = _stories([40, 55, 47, 60])
    targets, details = study.control_targets("other-story", responses, groups, random_state=3)
    assert targets.shape == responses.shape
    mapping = details["mapping"]
    assert sorted(mapping) == sorted(by_story) and sorted(mapping.values()) == sorted(by_story)
    for story, rows in by_story.items():
        source = by_story[mapping[story]]
        assert mapping[story] != story
        expected = source[np.arange(len(rows)) % len(source)]  # cropped or wrapped
        np.testing.assert_array_equal(targets[groups == story], expected)


def test_block_control_is_the_far_block_permutation():
    rng = np.random.default_rng(0)
    responses = rng.standard_normal((330, 4))
    groups = np.repeat(np.arange(6), 55)
    targets, details = study.control_targets("block-permuted", responses, groups,
                                             random_state=1)
    assert details["min_distance"] == 10  # 22 blocks of 15 TRs
    expected = block_permuted_targets(responses, block_size=15, min_distance=10,
                                      random_state=1)
    np.testing.assert_array_equal(targets, expected)
    np.testing.assert_array_equal(np.sort(targets, axis=0), np.sort(responses, axis=0))
    # a short run lowers the distance to half the number of blocks
    _, short = study.control_targets("block-permuted", responses[:150], groups[:150],
                                     random_state=1)
    assert short["min_distance"] == 5


def test_phase_control_randomizes_each_story_and_keeps_its_spectrum():
    rng = np.random.default_rng(2)
    responses = rng.standard_normal((120, 4)).cumsum(axis=0)  # autocorrelated
    groups = np.repeat(["s0", "s1", "s2"], 40)
    targets, details = study.control_targets("phase-randomized", responses, groups,
                                             random_state=4)
    assert "phases" in details["description"]
    for story in ("s0", "s1", "s2"):
        rows = groups == story
        np.testing.assert_allclose(np.abs(np.fft.rfft(targets[rows], axis=0)),
                                   np.abs(np.fft.rfft(responses[rows], axis=0)),
                                   rtol=1e-9, atol=1e-9)
        assert not np.allclose(targets[rows], responses[rows])
    settings = study.demo_settings()
    settings.controls = ("phase-randomized",)
    assert study.model_names(settings)[-1] == "phase-randomized fMRI"


def test_control_targets_input_errors():
    responses, groups, _ = _stories([20, 20])
    with pytest.raises(study.StudyInputError, match="contiguous"):
        study.control_targets("other-story", responses, np.tile(["a", "b"], 20))
    with pytest.raises(study.StudyInputError, match="unknown control"):
        study.control_targets("shuffled", responses, groups)


def test_demo_rejects_an_unknown_control(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--controls", "shuffled"])
    assert "invalid choice" in capsys.readouterr().err
    config = tmp_path / "run.toml"
    config.write_text('controls = ["shuffled"]\n')
    assert cli.main(["demo", "--config", str(config), "--output", str(tmp_path)]) == 2
    assert "unknown controls" in capsys.readouterr().err


def test_results_table_columns_fit_long_model_names():
    from sk_braintune.commands.results import format_results_table

    rows = [{"model": "pretrained", "sem_last": 0.1},
            {"model": "phase-randomized fMRI", "sem_last": -0.25}]
    lines = format_results_table(rows).splitlines()
    # every value ends where its header does, however long the model name
    assert {len(line) for line in lines} == {len(lines[0])}
    assert lines[3].startswith("phase-randomized fMRI ") and lines[3].endswith("-0.250")
    short = format_results_table([{"model": "pretrained", "sem_last": 0.1}]).splitlines()
    assert short[0] == f"{'model':<13}{'sem_last':>10}"  # the demo's layout is unchanged


def test_mean_of_results_averages_listeners_elementwise():
    first = {"layers": {"brain-tuned": {"semantic": [0.1, 0.3]}}, "n": 4, "name": "a"}
    second = {"layers": {"brain-tuned": {"semantic": [0.3, 0.5]}}, "n": 6, "name": "a"}
    mean = study.mean_of_results([first, second])
    np.testing.assert_allclose(mean["layers"]["brain-tuned"]["semantic"], [0.2, 0.4])
    assert mean["n"] == 5.0 and mean["name"] == "a"
    assert study.mean_of_results([first]) is first  # one listener: its results as they are


def test_pretrained_models_by_name_or_directory(tmp_path):
    assert registry.pretrained_model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(study.StudyInputError, match="neither one of.*'ssl'"):
        registry.pretrained_model_path(str(tmp_path / "missing"))
    assert registry.model_label("ssl") == registry.PRETRAINED_MODELS["ssl"]
    assert registry.model_label(str(tmp_path / "my-wav2vec2")) == "my-wav2vec2"
    # the demo's families are a top-level option, never the study table's
    with pytest.raises(SettingsError, match="'study.model'.*'models'"):
        DemoCommandSettings(study={"model": "ssl"}).study_settings()


def test_library_stages_are_logged_not_printed(caplog, capsys):
    """Without a stage callable the library logs each stage and keeps its time."""
    import logging

    from sk_braintune._stages import LoggedStages, prefixed

    stages = LoggedStages()
    with caplog.at_level(logging.INFO, logger="sk_braintune.stages"):
        with prefixed(stages, "P01: ")("alignment"):
            pass
    assert list(stages.times) == ["P01: alignment"] and stages.times["P01: alignment"] >= 0
    assert [r.getMessage().split(":")[:2] for r in caplog.records] == [
        ["P01", " alignment ..."], ["P01", " alignment"]]
    assert capsys.readouterr().out == ""
    assert prefixed(stages, "") is stages
