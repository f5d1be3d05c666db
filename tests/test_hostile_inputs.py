"""Hostile inputs: every case found silent or misleading by the hostile-input battery gets a
clear error (or a documented, warned handling). Each test here failed before the fix."""

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from sk_braintune.datasets import load_lebel2023
from sk_braintune.datasets.textgrid import read_textgrid
from sk_braintune.encoding import FIRDelayer, RidgeEncoder
from sk_braintune.exceptions import NaNVoxelWarning
from sk_braintune.testing.lebel import make_miniature_lebel2023
from sk_braintune.testing.models import make_tiny_model

SR = 16_000


# -- the ds003020 loader ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds003020_clean")
    make_miniature_lebel2023(root, n_trs=12, n_voxels=8, nan_voxels=0, stereo=False,
                             sample_rate=16000)
    return root


@pytest.fixture
def copy(clean_copy, tmp_path):
    target = tmp_path / "ds003020"
    shutil.copytree(clean_copy, target)
    return target


def _edit(root, story, change, dataset="data"):
    path = root / "derivative" / "preprocessed_data" / "UTS01" / f"{story}.hf5"
    with h5py.File(path, "r+") as f:
        values = f[dataset][...]
        change(values)
        f[dataset][...] = values
    return path


def test_inf_in_responses_is_treated_as_nan(copy):
    reference = load_lebel2023(copy, "UTS01", lazy=False)
    _edit(copy, "storyA", lambda v: v.__setitem__((3, 2), np.inf))
    _edit(copy, "storyB", lambda v: v.__setitem__((0, 5), -np.inf))
    with pytest.warns(NaNVoxelWarning, match=r"NaN or inf.*'storyA': 1.*set to 0") as record:
        data = load_lebel2023(copy, "UTS01", lazy=False)
    assert "'storyB': 1" in str(record[0].message)
    assert data.nan_voxels == {"storyA": 1, "storyB": 1, "wheretheressmoke": 0}
    a = np.asarray(data.responses["storyA"])
    assert np.isfinite(a).all() and a[3, 2] == 0.0  # not +3.4e38
    np.testing.assert_array_equal(np.delete(a, 3, axis=0), np.delete(
        reference.responses["storyA"], 3, axis=0))
    assert np.asarray(data.responses["storyB"])[0, 5] == 0.0
    # the lazy arrays zero-fill the same way
    lazy = load_lebel2023(copy, "UTS01", nan_policy="zero")
    assert lazy.responses["storyA"][3, 2] == 0.0
    with pytest.raises(ValueError, match=r"NaN or inf responses \(UTS01: \{'storyA': 1"):
        load_lebel2023(copy, "UTS01", nan_policy="raise")
    with pytest.warns(NaNVoxelWarning, match="dropped: 2 of 8"):
        dropped = load_lebel2023(copy, "UTS01", nan_policy="drop")
    assert list(dropped.voxel_indices) == [0, 1, 3, 4, 6, 7]


def test_inf_in_repeats_is_found(copy):
    _edit(copy, "wheretheressmoke", lambda v: v.__setitem__((1, 0, 4), np.inf),
          dataset="individual_repeats")
    with pytest.warns(NaNVoxelWarning, match="'wheretheressmoke': 1"):
        data = load_lebel2023(copy, "UTS01")
    assert np.isfinite(data.noise_ceiling).all()


def test_story_whose_every_voxel_is_nan_is_an_error(copy):
    path = _edit(copy, "storyB", lambda v: v.fill(np.nan))
    with pytest.raises(ValueError, match=r"story 'storyB' of UTS01: every one of its 8 voxels "
                                         r"holds NaN or inf") as exc:
        load_lebel2023(copy, "UTS01", nan_policy="zero")
    assert str(path) in str(exc.value)
    # the other stories still load
    data = load_lebel2023(copy, "UTS01", stories=["storyA", "wheretheressmoke"])
    assert data.stories == ["storyA", "wheretheressmoke"]


@pytest.mark.parametrize("text, match", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"storyA": "many"}', "whole number of TRs"),
])
def test_malformed_respdict_names_its_path(copy, text, match):
    path = copy / "derivative" / "respdict.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as exc:
        load_lebel2023(copy, "UTS01")
    assert str(path) in str(exc.value)


# -- TextGrids --------------------------------------------------------------------------------
def _textgrid(path, intervals, xmax=3.0, phones=None):
    """A long-format TextGrid: tier "words" (and first a tier "phones" when given)."""
    tiers = ({} if phones is None else {"phones": phones}) | {"words": intervals}
    text = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\n'
            f"xmax = {xmax}\ntiers? <exists>\nsize = {len(tiers)}\nitem []:\n")
    for number, (name, rows) in enumerate(tiers.items(), 1):
        items = "".join(
            f"        intervals [{i}]:\n            xmin = {a}\n            xmax = {b}\n"
            f'            text = "{label}"\n' for i, (a, b, label) in enumerate(rows, 1))
        text += (f'    item [{number}]:\n        class = "IntervalTier"\n        name = '
                 f'"{name}"\n        xmin = 0\n        xmax = {xmax}\n        intervals: '
                 f"size = {len(rows)}\n{items}")
    path.write_text(text)
    return path


@pytest.mark.parametrize("intervals, match", [
    ([(0, 1, "a"), (0.8, 2, "b")], r"interval 2 \('b', \[0.8, 2\] s\) starts at 0.8 s, before "
                                   r"the previous interval ends \(1 s\)"),
    ([(0, 1, "a"), (2, 1.5, "b")], r"interval 2 \('b', \[2, 1.5\] s\) ends before it starts"),
    ([(0, 1, "a"), (1, 4, "b")], r"interval 2 \('b', \[1, 4\] s\) lies outside the grid's "
                                 r"\[0, 3\] s"),
])
def test_textgrid_intervals_are_checked(tmp_path, intervals, match):
    path = _textgrid(tmp_path / "bad.TextGrid", intervals)
    with pytest.raises(ValueError, match=match) as exc:
        read_textgrid(path)
    assert f"{path}, tier 'words'" in str(exc.value)


def test_textgrid_touching_intervals_are_fine(tmp_path):
    tiers = read_textgrid(_textgrid(tmp_path / "ok.TextGrid", [(0, 1, "a"), (1, 3, "b")]))
    assert tiers["words"]["label"].tolist() == ["a", "b"]


def test_alignment_past_the_end_of_the_audio(copy):
    # a TextGrid whose grid (and last word) runs 20 s past the story's audio
    grid = copy / "derivative" / "TextGrids" / "storyA.TextGrid"
    text = grid.read_text()
    duration = float(text.split("xmax = ")[1].split()[0])
    _textgrid(grid, [(0, 1, "hello"), (1, duration + 20, "late")], xmax=duration + 20,
              phones=[(0, 0.5, "HH"), (0.5, 1, "OW1")])
    with pytest.raises(ValueError, match=r"tier 'words': interval 'late' .* ends after the "
                                         r"audio") as exc:
        load_lebel2023(copy, "UTS01")
    assert "storyA.TextGrid" in str(exc.value) and "storyA.wav" in str(exc.value)


# -- the raw-clip paths: extractor, probe, tuner ------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model("wav2vec2", tmp_path_factory.mktemp("models") / "w2v")


def test_extractor_refuses_int16_windows(tiny):
    from sk_braintune.features import SpeechFeatureExtractor

    rng = np.random.default_rng(0)
    windows = (rng.uniform(-0.5, 0.5, (3, SR // 2)) * 32767).astype(np.int16)
    with pytest.raises(TypeError, match=r"Windows given as an array has integer dtype int16; "
                                        r"pass float samples in \[-1, 1\]"):
        SpeechFeatureExtractor(model=tiny, device="cpu").fit(windows)
    with pytest.raises(TypeError, match="window 1 has integer dtype int16"):
        SpeechFeatureExtractor(model=tiny, device="cpu").fit(
            [windows[0].astype(np.float32), windows[1], windows[2].astype(np.float32)])


def test_extractor_refuses_nan_windows(tiny):
    from sk_braintune.features import SpeechFeatureExtractor

    windows = np.zeros((3, SR // 2), dtype=np.float32)
    windows[2, 10:] = np.nan
    with pytest.raises(ValueError, match=r"window 2 holds \d+ NaN or infinite sample"):
        SpeechFeatureExtractor(model=tiny, device="cpu").fit(windows)


def test_probe_refuses_an_all_nan_clip(tiny):
    from sk_braintune.analysis import SemanticProbe

    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, SR // 2).astype(np.float32) for _ in range(6)]
    clips[4][:] = np.nan
    with pytest.raises(ValueError, match=r"clip 4 holds 8000 NaN or infinite sample"):
        SemanticProbe(extractor=tiny, max_epochs=2).fit(clips, [0, 1] * 3)
    int_clips = [(c * 1000).astype(np.int16) for c in clips[:4]]
    with pytest.raises(TypeError, match="clip 0 has integer dtype int16"):
        SemanticProbe(extractor=tiny, max_epochs=2).fit(int_clips, [0, 1] * 2)


@pytest.mark.parametrize("params, match", [
    ({"max_epochs": 0}, r"max_epochs must be an integer >= 1, got 0"),
    ({"alpha": np.nan}, r"alpha must be a finite number >= 0, got nan"),
    ({"alpha": -1.0}, r"alpha must be a finite number >= 0, got -1.0"),
    ({"lr": 0.0}, r"lr must be a finite number > 0, got 0.0"),
    ({"lr": np.inf}, r"lr must be a finite number > 0, got inf"),
    ({"patience": 0}, r"patience must be an integer >= 1, got 0"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1 or None, got 0"),
    ({"max_epochs": 2.5}, r"max_epochs must be an integer >= 1, got 2.5"),
])
def test_probe_parameters_are_validated(params, match):
    from sk_braintune.analysis import SemanticProbe

    X = np.random.default_rng(0).normal(size=(20, 3, 4))
    with pytest.raises(ValueError, match=match):
        SemanticProbe(**params).fit(X, [0, 1] * 10)


def test_tuner_refuses_int16_windows(tiny):
    from sk_braintune.tuning import BrainTuner

    windows = np.ones((4, SR // 2), dtype=np.int16)
    with pytest.raises(TypeError, match="Windows given as an array has integer dtype int16"):
        BrainTuner(tiny, max_epochs=1, device="cpu").fit(windows, np.zeros((4, 2)))


# -- delays -----------------------------------------------------------------------------------
def test_delays_longer_than_every_story_warn():
    X = np.arange(20.0).reshape(10, 2)
    groups = [0] * 6 + [1] * 4
    with pytest.warns(UserWarning, match=r"delay\(s\) \[6, 8\] TRs are at least as long as "
                                         r"every story \(the longest has 6 TRs\)"):
        out = FIRDelayer(delays=(1, 6, 8)).fit_transform(X, groups=groups)
    assert not out[:, 2:].any()  # the warned columns are indeed all zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FIRDelayer(delays=(1, 5)).fit_transform(X, groups=groups)  # delay 5 reaches row 5


# -- cross-validation over stories ------------------------------------------------------------
def _stories(n_stories=4, n_trs=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_stories * n_trs, 5))
    y = X @ rng.normal(size=(5, 3)) + rng.normal(size=(n_stories * n_trs, 3))
    groups = np.repeat([f"s{k}" for k in range(n_stories)], n_trs)
    return X, y, groups


def test_shuffled_kfold_over_stories_warns():
    from sklearn.model_selection import GroupKFold, KFold

    from sk_braintune.model_selection import StoryLeakWarning, check_story_splits

    X, y, groups = _stories()
    with pytest.warns(StoryLeakWarning, match=r"the inner cv KFold\(.*shuffle=True.*\) puts rows "
                                              r"of the same story in the training and the "
                                              r"held-out part of a split \(4 of 4 stories"):
        RidgeEncoder(alphas=[1.0], cv=KFold(3, shuffle=True, random_state=0)).fit(
            X, y, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RidgeEncoder(alphas=[1.0], cv=GroupKFold(2)).fit(X, y, groups=groups)
        RidgeEncoder(alphas=[1.0], cv="bootstrap").fit(X, y, groups=groups)  # by design
    # the public helper for the outer splits of a search
    splits = list(KFold(4, shuffle=True, random_state=0).split(X, y, groups))
    with pytest.warns(StoryLeakWarning, match="GridSearchCV"):
        shared = check_story_splits(splits, groups, what="GridSearchCV(cv=KFold)")
    assert shared == ["s0", "s1", "s2", "s3"]
    assert check_story_splits(list(GroupKFold(4).split(X, y, groups)), groups) == []


def test_tuner_validation_splitter_that_ignores_stories_warns():
    from sklearn.model_selection import ShuffleSplit

    from sk_braintune.model_selection import StoryLeakWarning
    from sk_braintune.tuning import validation_split

    groups = np.repeat(["a", "b", "c"], 10)
    with pytest.warns(StoryLeakWarning, match=r"validation=ShuffleSplit"):
        validation_split(30, groups, ShuffleSplit(1, test_size=0.3, random_state=0),
                         np.random.RandomState(0))


def test_one_story_cv_error_gives_advice_that_works():
    X, y, _ = _stories(n_stories=1)
    groups = np.zeros(len(X))
    with pytest.raises(ValueError, match="need at least 2 stories") as exc:
        RidgeEncoder(alphas=[1.0], cv=5).fit(X, y, groups=groups)
    message = str(exc.value)
    assert "cv=1" not in message and "cv='bootstrap'" in message
    # both pieces of advice work
    RidgeEncoder(alphas=[1.0], cv="bootstrap").fit(X, y, groups=groups)
    RidgeEncoder(alphas=[1.0], cv=5).fit(X, y)
    X3, y3, g3 = _stories(n_stories=3)
    with pytest.raises(ValueError, match=r"use cv=3 or cv='bootstrap'"):
        RidgeEncoder(alphas=[1.0], cv=5).fit(X3, y3, groups=g3)


def test_one_story_validation_warning_says_what_happens():
    from sk_braintune.tuning import validation_split

    rng = np.random.RandomState(0)
    with pytest.warns(UserWarning, match=r"only one story in groups, but its 3 TRs are too few "
                                         r"to hold out 20% of them: training without "
                                         r"validation"):
        train, valid = validation_split(3, np.zeros(3), 0.2, rng)
    assert valid.size == 0 and train.size == 3
    with pytest.warns(UserWarning, match=r"holding out its last 4 of 20 TRs \(20%\)"):
        train, valid = validation_split(20, np.zeros(20), 0.2, rng)
    assert valid.tolist() == [16, 17, 18, 19]


# -- a per-participant-head tuner in a search without routing ---------------------------------
def test_search_over_per_participant_heads_without_routing_is_an_error(tiny):
    from sklearn import config_context
    from sklearn.model_selection import GridSearchCV, GroupKFold

    from sk_braintune.tuning import BrainTuner
    from sk_braintune.windows import make_windows

    rng = np.random.RandomState(0)
    audio = {f"s{k}": (0.1 * rng.randn(SR * 2)).astype(np.float32) for k in range(3)}
    windows = make_windows(audio, {s: np.arange(0.25, 2.0, 0.5) for s in audio}, window=0.5,
                           tr=0.5)
    n = len(windows)
    X = windows[np.concatenate([np.arange(n), np.arange(n)])]
    y = rng.randn(2 * n, 2).astype(np.float32)
    participants = np.repeat(["A", "B"], n)
    groups = np.asarray(X.groups)
    tuner = BrainTuner(tiny, head="per_participant", max_epochs=1, validation=None,
                       batch_size=8, device="cpu", random_state=0)
    search = GridSearchCV(tuner, {"lr_head": [1e-4, 1e-3]}, cv=GroupKFold(3))
    with pytest.raises(ValueError, match="enable_metadata_routing=True"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y, groups=groups, participants=participants)
    # routed, it works
    with config_context(enable_metadata_routing=True):
        routed = BrainTuner(tiny, head="per_participant", max_epochs=1, validation=None,
                            batch_size=8, device="cpu", random_state=0)
        routed.set_fit_request(groups=True, participants=True)
        routed.set_score_request(participants=True)
        search = GridSearchCV(routed, {"lr_head": [1e-4, 1e-3]}, cv=GroupKFold(3))
        search.fit(X, y, groups=groups, participants=participants)
    assert np.isfinite(search.best_score_)
    # called directly (no search), no routing is needed
    BrainTuner(tiny, head="per_participant", max_epochs=1, validation=None, batch_size=8,
               device="cpu").fit(X, y, participants=participants)


# -- the commands: every expected failure is one line and exit status 2 ------------------------
@pytest.fixture(scope="module")
def cli_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds003020_cli")
    make_miniature_lebel2023(root, subjects=("UTS01", "UTS02"), n_trs=40, n_voxels=12,
                             nan_voxels=0, stereo=False, sample_rate=16000)
    return root


@pytest.fixture
def cli_data(cli_copy, tmp_path):
    target = tmp_path / "ds003020"
    shutil.copytree(cli_copy, target)
    return target


def _run(capsys, *argv):
    """``sk-braintune argv`` -> (status, stderr, stdout), warnings silenced."""
    from sk_braintune.commands import cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.err.strip(), captured.out


def _one_line_error(status, err, *words):
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert str(word) in err, (word, err)


def _evaluate(root, model, out, *extra):
    return ("evaluate", "--root", root, "--subject", "UTS01", "--model", model, "--output", out,
            "--window", "2", "--quiet", "--device", "cpu", *extra)


def _tune(root, model, out, *extra):
    return ("tune", "--root", root, "--subject", "UTS01", "--model", model, "--output", out,
            "--epochs", "1", "--window", "2", "--batch-size", "16", "--min-ceiling", "0",
            "--quiet", "--device", "cpu", *extra)


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a command gets past its up-front checks to the data or the work."""
    from sk_braintune.commands import realdata

    def reached(*args, **kwargs):
        raise AssertionError("the command reached the heavy work")

    monkeypatch.setattr(realdata, "load_dataset", reached)


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 40])
def test_cli_truncated_or_empty_hf5(cli_data, tiny, tmp_path, capsys, content, no_work):
    path = cli_data / "derivative" / "preprocessed_data" / "UTS01" / "storyB.hf5"
    path.write_bytes(content)
    status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"))
    _one_line_error(status, err, path, "cannot be read as HDF5", "Download it again")


def test_cli_hf5_with_data_cut_short(cli_data, tiny, tmp_path, capsys):
    path = cli_data / "derivative" / "preprocessed_data" / "UTS01" / "storyA.hf5"
    path.write_bytes(path.read_bytes()[:-1000])
    status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"))
    _one_line_error(status, err, path, "truncated")


def test_cli_corrupt_safetensors_is_named(cli_data, tiny, tmp_path, capsys, no_work):
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    status, err, _ = _run(capsys, *_tune(cli_data, model, tmp_path / "out"))
    _one_line_error(status, err, "could not load model", weights, "damaged or incomplete")


def test_cli_text_model_is_refused(cli_data, tmp_path, capsys, no_work):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, vocab_size=50)).save_pretrained(tmp_path / "bert")
    capsys.readouterr()  # the saving's progress bar
    status, err, _ = _run(capsys, *_evaluate(cli_data, tmp_path / "bert", tmp_path / "out"))
    _one_line_error(status, err, "'bert' model whose input is 'input_ids'", "not audio")


def test_cli_devices_are_validated_up_front(cli_data, tiny, tmp_path, capsys, no_work):
    import torch

    status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"), "--device",
                          "tpu")
    _one_line_error(status, err, "--device", "'tpu' is not a torch device")
    if not torch.cuda.is_available():
        status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"),
                              "--device", "cuda")
        _one_line_error(status, err, "'cuda' asks for a GPU but CUDA is not available")
    else:
        status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"),
                              "--device", f"cuda:{torch.cuda.device_count()}")
        _one_line_error(status, err, "visible GPU(s)")


@pytest.mark.parametrize("stories, words", [
    (["wheretheressmoke"], ["--stories wheretheressmoke: no training story among them"]),
    (["storyA", "storyB"], ["--stories storyA storyB: the test story wheretheressmoke is "
                            "missing"]),
])
def test_cli_stories_the_command_cannot_use(cli_data, tiny, tmp_path, capsys, no_work, stories,
                                            words):
    for command in (_evaluate, _tune):
        status, err, _ = _run(capsys, *command(cli_data, tiny, tmp_path / "out"), "--stories",
                              *stories)
        _one_line_error(status, err, *words)


def test_cli_whisper_window_over_30_s(cli_data, tmp_path, capsys, no_work):
    whisper = make_tiny_model("whisper", tmp_path / "whisper")
    status, err, _ = _run(capsys, *_evaluate(cli_data, whisper, tmp_path / "out"), "--window",
                          "40")
    _one_line_error(status, err, "--window 40 s is longer than the 30 s the whisper encoder")


def test_cli_layers_out_of_range(cli_data, tiny, tmp_path, capsys, no_work):
    status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"), "--layers",
                          "0,99")
    _one_line_error(status, err, "--layers 0,99", "layers [99] out of range", "0..2")


def test_cli_output_folder_that_cannot_be_written(cli_data, tiny, tmp_path, capsys, no_work):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for command in (_evaluate, _tune):
        status, err, _ = _run(capsys, *command(cli_data, tiny, blocker / "out"))
        _one_line_error(status, err, f"cannot write results next to {blocker / 'out'}",
                        "choose another --output")
        assert "could not load model" not in err


def test_cli_every_subject_is_checked_before_the_first_is_evaluated(cli_data, tiny, tmp_path,
                                                                    capsys, no_work):
    status, err, _ = _run(capsys, "evaluate", "--root", cli_data, "--subject", "UTS01", "UTS07",
                          "--model", tiny, "--output", tmp_path / "out", "--device", "cpu")
    _one_line_error(status, err, "UTS07", "available subjects: ['UTS01', 'UTS02']")
    # a damaged file of the second participant, too
    path = cli_data / "derivative" / "preprocessed_data" / "UTS02" / "storyA.hf5"
    path.write_bytes(b"")
    status, err, _ = _run(capsys, "evaluate", "--root", cli_data, "--subject", "UTS01", "UTS02",
                          "--model", tiny, "--output", tmp_path / "out", "--device", "cpu")
    _one_line_error(status, err, path)


def test_cli_model_checked_before_the_data_loads(cli_data, tiny, tmp_path, capsys, monkeypatch,
                                                 no_work):
    # a name that is no local folder and no cached hub model: said before any data loads
    status, err, _ = _run(capsys, *_evaluate(cli_data, "nosuchorg/nosuchmodel",
                                             tmp_path / "out"))
    _one_line_error(status, err, "could not load model 'nosuchorg/nosuchmodel'")
    # a relative path that exists is a path (it reaches the data: the checks passed)
    tiny = Path(tiny)
    monkeypatch.chdir(tiny.parent.parent)
    relative = f"{tiny.parent.name}/{tiny.name}"  # "models0/w2v": shaped like a hub name
    with pytest.raises(AssertionError, match="reached the heavy work"):
        _run(capsys, *_evaluate(cli_data, relative, tmp_path / "out"))


def test_cli_nan_policy(cli_data, tiny, tmp_path, capsys):
    path = cli_data / "derivative" / "preprocessed_data" / "UTS01" / "storyA.hf5"
    with h5py.File(path, "r+") as f:
        values = f["data"][...]
        values[2, 3] = np.inf
        f["data"][...] = values
    status, err, _ = _run(capsys, *_evaluate(cli_data, tiny, tmp_path / "out"), "--nan-policy",
                          "raise")
    _one_line_error(status, err, "voxels with NaN or inf responses (UTS01: {'storyA': 1}",
                    "nan_policy='zero' or 'drop'")
    from sk_braintune.commands.settings import EvaluateSettings, TuneSettings

    assert EvaluateSettings().nan_policy == "zero" and TuneSettings().nan_policy == "zero"


def test_cli_malformed_respdict(cli_data, tiny, tmp_path, capsys, no_work):
    path = cli_data / "derivative" / "respdict.json"
    path.write_text("{'storyA': 12,}")
    status, err, _ = _run(capsys, *_tune(cli_data, tiny, tmp_path / "out"))
    _one_line_error(status, err, path, "is not valid JSON")


def _killed_tune(capsys, monkeypatch, *argv):
    """A tune run that dies after training (its checkpoint is left for the next run)."""
    from sk_braintune.tuning import BrainTuner

    def killed(self, directory):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(BrainTuner, "save_pretrained", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(capsys, *argv)


@pytest.mark.slow
def test_cli_tune_checkpoints_resume_overwrite_and_refusals(cli_data, tiny, tmp_path, capsys,
                                                             monkeypatch):
    out = tmp_path / "tuned"
    checkpoints = tmp_path / ".tuned.checkpoints"
    _killed_tune(capsys, monkeypatch, *_tune(cli_data, tiny, out))
    assert (checkpoints / "checkpoint.pt").exists() and not out.exists()
    # the same command resumes the unfinished run, and says so
    status, err, stdout = _run(capsys, *_tune(cli_data, tiny, out))
    assert status == 0, err
    assert (f"resuming the unfinished run from its checkpoint in {checkpoints} (--overwrite "
            "starts over)") in stdout
    assert not checkpoints.exists()  # complete: nothing left to resume
    # a checkpoint of another configuration: refused, with the way to start over
    _killed_tune(capsys, monkeypatch, *_tune(cli_data, tiny, out))
    status, err, _ = _run(capsys, *_tune(cli_data, tiny, out), "--lr-head", "0.01")
    _one_line_error(status, err, "holds a checkpoint of another configuration",
                    "--overwrite starts over")
    assert (checkpoints / "checkpoint.pt").exists()  # kept for the command that made it
    status, err, stdout = _run(capsys, *_tune(cli_data, tiny, out), "--lr-head", "0.01",
                               "--overwrite")
    assert status == 0, err
    assert f"--overwrite: removed the checkpoint of an unfinished run in {checkpoints}" in stdout
    # a damaged checkpoint
    checkpoints.mkdir()
    (checkpoints / "checkpoint.pt").write_bytes(b"not a torch file")
    status, err, _ = _run(capsys, *_tune(cli_data, tiny, out))
    _one_line_error(status, err, f"checkpoint {checkpoints / 'checkpoint.pt'} cannot be read",
                    "damaged", "--overwrite starts over")
