"""The LeBel et al. (2023) loader on a miniature copy written in the real file formats."""

import json
import math
import shutil
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from sk_braintune.datasets import (
    NaNVoxelWarning,
    lebel2023_tr_times,
    load_lebel2023,
    read_textgrid,
    validate_record,
    windows_from_dataset,
)
from sk_braintune.metrics import noise_ceiling
from sk_braintune.testing import make_miniature_lebel2023

STORIES = ["storyA", "storyB", "wheretheressmoke"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_miniature_lebel2023(tmp_path_factory.mktemp("ds003020"),
                                    subjects=("UTS01", "UTS02"))


@pytest.fixture(scope="module")
def dataset(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        return load_lebel2023(root, "UTS01")


def _copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "copy")


def _respdict(root):
    return json.loads((root / "derivative" / "respdict.json").read_text())


def test_contract_fields_and_shapes(dataset, root):
    assert validate_record(dataset, check_values=True) is dataset
    assert dataset.space is None and dataset.mask_img is None
    np.testing.assert_array_equal(dataset.column_index, dataset.voxel_indices)
    assert dataset.stories == STORIES
    assert dataset.sample_rate == 16000 and dataset.tr == 2.0045 and dataset.trigger_tr == 2.0
    assert dataset.phone_set == "arpabet" and dataset.subject == "UTS01"
    for index, story in enumerate(STORIES):
        n_rows = 12 + index
        assert dataset.responses[story].shape == (n_rows, 16)
        assert dataset.responses[story].dtype == np.float32
        assert dataset.tr_times[story].shape == (n_rows,)
        assert dataset.tr_times[story].dtype == np.float64
        assert dataset.audio[story].dtype == np.float32 and dataset.audio[story].ndim == 1
        assert set(dataset.words[story].columns) == {"onset", "offset", "label"}
    assert set(dataset.repeats) == {"wheretheressmoke"}
    assert dataset.voxel_labels.shape == (16,)
    assert set(dataset.voxel_labels) == {"unlabelled"}
    assert "UTS01" in dataset.description


def test_tr_times_follow_the_convention_exactly(dataset, root):
    respdict = _respdict(root)
    for story in STORIES:
        n = respdict[story]
        extra = 40 if story == "wheretheressmoke" else 0
        # hand computation: n - 5 triggers every 2 s from -10 s, +1 s to mid-volume,
        # trimmed [10:-5] (and 40 more TRs at the start of the test story)
        grid = np.array([k * 2.0 - 10.0 + 1.0 for k in range(n - 5)])
        expected = grid[10 + extra:len(grid) - 5]
        np.testing.assert_array_equal(dataset.tr_times[story], expected)
        assert len(expected) == dataset.responses[story].shape[0]
    np.testing.assert_array_equal(dataset.tr_times["storyA"], 11.0 + 2.0 * np.arange(12))
    np.testing.assert_array_equal(lebel2023_tr_times(25), [11.0, 13.0, 15.0, 17.0, 19.0])
    np.testing.assert_array_equal(lebel2023_tr_times(25, trim=(0, 0))[:2], [-9.0, -7.0])
    np.testing.assert_allclose(lebel2023_tr_times(25, trigger_tr=2.0045)[0],
                               10 * 2.0045 - 10 + 2.0045 / 2)


def test_responses_are_the_file_data(dataset, root):
    folder = root / "derivative" / "preprocessed_data" / "UTS01"
    for story in STORIES:
        with h5py.File(folder / f"{story}.hf5") as f:
            data = f["data"][...]
        np.testing.assert_array_equal(dataset.responses[story], np.nan_to_num(data))
    with h5py.File(folder / "wheretheressmoke.hf5") as f:
        np.testing.assert_array_equal(dataset.repeats["wheretheressmoke"],
                                      f["individual_repeats"][...])


def test_audio_is_resampled_to_16k_mono_with_the_right_duration(dataset, root):
    respdict = _respdict(root)
    for story in STORIES:
        rate, stereo = wavfile.read(root / "stimuli" / f"{story}.wav")
        assert rate == 44100 and stereo.ndim == 2 and stereo.shape[1] == 2
        duration = (respdict[story] - 5) * 2.0 - 10.0
        assert stereo.shape[0] == round(duration * 44100)
        audio = dataset.audio[story]
        assert audio.shape == (math.ceil(stereo.shape[0] * 160 / 441),)
        assert audio.size == round(duration * 16000)
        independent = resample_poly(stereo.astype(np.float64).mean(axis=1) / 32768, 160, 441)
        np.testing.assert_allclose(audio, independent, atol=1e-5)
        # the responses end inside the audio (the convention's last volume ends 10 s early)
        assert dataset.tr_times[story][-1] + dataset.tr / 2 < audio.size / 16000


def test_alignments_are_read_without_silences(dataset, root):
    for story in STORIES:
        tiers = read_textgrid(root / "derivative" / "TextGrids" / f"{story}.TextGrid")
        word_tier = list(tiers.values())[1]
        spoken = word_tier[~word_tier["label"].isin(["", "sp"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(dataset.words[story], spoken)
        assert not dataset.phones[story]["label"].isin(["", "sp"]).any()
        assert dataset.phones[story]["label"].str.match(r"^[A-Z]{1,2}[012]?$").all()
        # every phone lies inside a word, every word inside the audio
        words = dataset.words[story]
        assert words["offset"].max() <= dataset.audio[story].size / 16000
        assert words["onset"].min() >= 0.0
        inside = [((words["onset"] <= p.onset) & (p.offset <= words["offset"])).any()
                  for p in dataset.phones[story].itertuples()]
        assert all(inside)


def test_short_and_mixed_textgrids_give_the_same_tables(root, dataset, tmp_path):
    for fmt in ("short", "mixed"):
        other = make_miniature_lebel2023(tmp_path / fmt, textgrid_format=fmt, nan_voxels=0,
                                         sample_rate=16000, stereo=False)
        loaded = load_lebel2023(other, "UTS01")
        for story in STORIES:
            pd.testing.assert_frame_equal(loaded.words[story], dataset.words[story])
            pd.testing.assert_frame_equal(loaded.phones[story], dataset.phones[story])
    raw = (tmp_path / "mixed" / "derivative" / "TextGrids" / "storyB.TextGrid").read_bytes()
    assert raw.startswith(b"\xff\xfe")  # the mixed copy has a UTF-16 short-format file


def test_noise_ceiling_from_repeats(dataset):
    repeats = dataset.repeats["wheretheressmoke"].astype(np.float64)
    assert repeats.shape == (3, 14, 16)
    assert dataset.noise_ceiling_story == "wheretheressmoke"
    np.testing.assert_allclose(dataset.noise_ceiling, noise_ceiling(repeats))
    # Schoppe et al. (2016) by hand
    n = repeats.shape[0]
    z = (repeats - repeats.mean(1, keepdims=True)) / repeats.std(1, keepdims=True)
    signal_power = (n * z.mean(0).var(0, ddof=1) - 1) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.nan_to_num(1 / np.sqrt(1 + (1 / signal_power - 1) / n))
    np.testing.assert_allclose(dataset.noise_ceiling, expected, rtol=1e-10)
    # noise grows with the voxel index in the miniature: ceilings fall
    assert dataset.noise_ceiling[:4].mean() > dataset.noise_ceiling[-4:].mean()


def test_no_repeats_means_no_noise_ceiling(root):
    loaded = load_lebel2023(root, "UTS01", ["storyA"])
    assert loaded.noise_ceiling is None and loaded.repeats == {}
    assert loaded.split == {"train": ["storyA"], "validation": [], "test": []}


def test_nan_policies(root):
    with pytest.warns(NaNVoxelWarning, match="storyB"):
        zero = load_lebel2023(root, "UTS01", nan_policy="zero")
    assert zero.nan_voxels == {"storyA": 0, "storyB": 1, "wheretheressmoke": 0}
    assert np.all(zero.responses["storyB"][:, -1] == 0)
    assert not any(np.isnan(r).any() for r in zero.responses.values())

    with pytest.warns(NaNVoxelWarning, match="1 of 16 voxels removed"):
        drop = load_lebel2023(root, "UTS01", nan_policy="drop",
                              voxel_labels=[f"roi{i}" for i in range(16)])
    np.testing.assert_array_equal(drop.voxel_indices, np.arange(15))
    for story in STORIES:  # the same voxel is dropped from every story, NaN-free or not
        assert drop.responses[story].shape[1] == 15
        np.testing.assert_array_equal(drop.responses[story], zero.responses[story][:, :15])
    assert drop.repeats["wheretheressmoke"].shape == (3, 14, 15)
    assert drop.noise_ceiling.shape == (15,)
    np.testing.assert_allclose(drop.noise_ceiling, zero.noise_ceiling[:15])
    assert drop.voxel_labels.tolist() == [f"roi{i}" for i in range(15)]

    with pytest.raises(ValueError, match="storyB"):
        load_lebel2023(root, "UTS01", nan_policy="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN in these stories: no warning, nothing dropped
        clean = load_lebel2023(root, "UTS01", ["storyA"], nan_policy="raise")
    assert clean.responses["storyA"].shape == (12, 16)
    with pytest.raises(ValueError, match="nan_policy"):
        load_lebel2023(root, "UTS01", nan_policy="ignore")


def test_untrimmed_test_story_is_trimmed_by_the_loader(tmp_path, dataset):
    root = make_miniature_lebel2023(tmp_path, pretrimmed_test=False, nan_voxels=0,
                                    sample_rate=16000)
    with h5py.File(root / "derivative/preprocessed_data/UTS01/wheretheressmoke.hf5") as f:
        data, repeats = f["data"][...], f["individual_repeats"][...]
    assert data.shape == (54, 16)
    loaded = load_lebel2023(root, "UTS01", ["wheretheressmoke"])
    np.testing.assert_array_equal(loaded.responses["wheretheressmoke"], data[40:])
    np.testing.assert_array_equal(loaded.repeats["wheretheressmoke"], repeats[:, 40:])
    np.testing.assert_array_equal(loaded.tr_times["wheretheressmoke"],
                                  dataset.tr_times["wheretheressmoke"])
    # without the extra trim, the whole convention grid [10:-5] is used
    full = load_lebel2023(root, "UTS01", ["wheretheressmoke"], extra_trim={})
    assert full.responses["wheretheressmoke"].shape == (54, 16)
    np.testing.assert_array_equal(full.tr_times["wheretheressmoke"], 11.0 + 2 * np.arange(54))
    # an end trim too
    both = load_lebel2023(root, "UTS01", ["wheretheressmoke"],
                          extra_trim={"wheretheressmoke": (4, 6)})
    np.testing.assert_array_equal(both.responses["wheretheressmoke"], data[4:48])
    np.testing.assert_array_equal(both.tr_times["wheretheressmoke"], 19.0 + 2 * np.arange(44))


def test_default_and_custom_splits(root, dataset):
    assert dataset.split == {"train": ["storyA", "storyB"], "validation": [],
                             "test": ["wheretheressmoke"]}
    copy = make_miniature_lebel2023(root.parent / "splits", nan_voxels=0, sample_rate=16000,
                                    stories=("life", "storyA", "stagefright",
                                             "wheretheressmoke"))
    loaded = load_lebel2023(copy, "UTS01")
    assert loaded.split == {"train": ["storyA"], "validation": ["life", "stagefright"],
                            "test": ["wheretheressmoke"]}
    custom = load_lebel2023(copy, "UTS01", ["storyA", "life"],
                            split={"train": ["life"], "test": ["storyA"]})
    assert custom.split == {"train": ["life"], "validation": [], "test": ["storyA"]}
    with pytest.raises(ValueError, match="not loaded"):
        load_lebel2023(copy, "UTS01", ["storyA"], split={"test": ["life"]})
    with pytest.raises(ValueError, match="both"):
        load_lebel2023(copy, "UTS01", ["storyA"], split={"test": ["storyA"],
                                                         "train": ["storyA"]})
    with pytest.raises(ValueError, match="split keys"):
        load_lebel2023(copy, "UTS01", ["storyA"], split={"valid": ["storyA"]})


def test_story_subset_order_subjects_and_root_forms(root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        a = load_lebel2023(root, 1, ["wheretheressmoke", "storyA"])
        (tmp_path / "ds003020").symlink_to(root)
        b = load_lebel2023(tmp_path, "uts01", ["wheretheressmoke", "storyA"])  # parent dir
        other = load_lebel2023(root, "2", "storyA")
    assert a.stories == ["wheretheressmoke", "storyA"]
    assert list(a.responses) == a.stories
    np.testing.assert_array_equal(a.responses["storyA"], b.responses["storyA"])
    assert other.subject == "UTS02" and other.stories == ["storyA"]
    assert not np.array_equal(other.responses["storyA"], a.responses["storyA"])


def test_voxel_labels_from_a_file(root, tmp_path):
    labels = np.array(["auditory"] * 8 + ["semantic"] * 8)
    np.save(tmp_path / "labels.npy", labels)
    (tmp_path / "labels.txt").write_text("\n".join(labels))
    for path in (tmp_path / "labels.npy", tmp_path / "labels.txt"):
        loaded = load_lebel2023(root, "UTS01", ["storyA"], voxel_labels=path)
        np.testing.assert_array_equal(loaded.voxel_labels, labels)
    with pytest.raises(ValueError, match="one label per voxel"):
        load_lebel2023(root, "UTS01", ["storyA"], voxel_labels=["a", "b"])
    with pytest.raises(FileNotFoundError, match="nolabels.npy"):
        load_lebel2023(root, "UTS01", ["storyA"], voxel_labels=tmp_path / "nolabels.npy")


def test_windows_from_the_loaded_dataset(dataset):
    X, y, groups = windows_from_dataset(dataset, "train", window=4.0)
    assert X.shape == (25, 64000) and y.shape == (25, 16)
    assert groups.tolist() == ["storyA"] * 12 + ["storyB"] * 13
    times = dataset.tr_times["storyB"]
    ends = np.rint((times + dataset.tr / 2) * 16000).astype(int)
    np.testing.assert_array_equal(X.ends[12:], ends)
    np.testing.assert_array_equal(X[12 + 3], dataset.audio["storyB"][ends[3] - 64000:ends[3]])
    np.testing.assert_array_equal(y[12:], dataset.responses["storyB"])


# -- errors ---------------------------------------------------------------------------------
def test_missing_root_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*ds003020"):
        load_lebel2023(tmp_path / "nowhere", "UTS01")
    with pytest.raises(FileNotFoundError, match="preprocessed_data"):
        load_lebel2023(tmp_path, "UTS01")


def test_missing_subject_lists_available(root):
    with pytest.raises(FileNotFoundError, match=r"UTS05.*\['UTS01', 'UTS02'\]"):
        load_lebel2023(root, "UTS05")


def test_missing_story_files(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nostory.hf5"):
        load_lebel2023(root, "UTS01", ["nostory"])
    copy = _copy(root, tmp_path)
    (copy / "stimuli" / "storyA.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"audio of story 'storyA'.*storyA\.wav"):
        load_lebel2023(copy, "UTS01", ["storyA"])
    (copy / "derivative" / "TextGrids" / "storyB.TextGrid").unlink()
    with pytest.raises(FileNotFoundError, match=r"storyB\.TextGrid"):
        load_lebel2023(copy, "UTS01", ["storyB"], nan_policy="zero")
    (copy / "derivative" / "respdict.json").unlink()
    with pytest.raises(FileNotFoundError, match="respdict.json"):
        load_lebel2023(copy, "UTS01", ["storyB"])


def test_counts_that_disagree_with_respdict(root, tmp_path):
    copy = _copy(root, tmp_path)
    respdict = _respdict(copy)
    respdict["storyA"] += 1
    del respdict["storyB"]
    (copy / "derivative" / "respdict.json").write_text(json.dumps(respdict))
    with pytest.raises(ValueError, match=r"12 rows.*33 TRs.*expects 13 rows"):
        load_lebel2023(copy, "UTS01", ["storyA"])
    with pytest.raises(ValueError, match="'storyB' is not in"):
        load_lebel2023(copy, "UTS01", ["storyB"])
    # the pre-trimmed test story without the extra trim
    with pytest.raises(ValueError, match="expects 54 rows"):
        load_lebel2023(root, "UTS01", ["wheretheressmoke"], extra_trim={})


def test_responses_longer_than_audio_and_empty_story(root, tmp_path):
    copy = _copy(root, tmp_path)
    wavfile.write(copy / "stimuli" / "storyA.wav", 16000, np.zeros(16000 * 20, np.int16))
    with pytest.raises(ValueError, match="longer than the audio"):
        load_lebel2023(copy, "UTS01", ["storyA"])
    with h5py.File(copy / "derivative/preprocessed_data/UTS01/storyA.hf5", "w") as f:
        f.create_dataset("data", data=np.zeros((0, 16), np.float32))
    with pytest.raises(ValueError, match="'storyA' is empty"):
        load_lebel2023(copy, "UTS01", ["storyA"])
    with h5py.File(copy / "derivative/preprocessed_data/UTS01/storyA.hf5", "w") as f:
        f.create_dataset("responses", data=np.zeros((12, 16), np.float32))
    with pytest.raises(ValueError, match="no dataset 'data'"):
        load_lebel2023(copy, "UTS01", ["storyA"])


def test_voxel_counts_must_agree(root, tmp_path):
    copy = _copy(root, tmp_path)
    with h5py.File(copy / "derivative/preprocessed_data/UTS01/storyA.hf5", "w") as f:
        f.create_dataset("data", data=np.zeros((12, 9), np.float32))
    with pytest.raises(ValueError, match="different numbers of voxels"):
        load_lebel2023(copy, "UTS01", ["storyA", "wheretheressmoke"])


def test_miniature_is_fast_and_deterministic(tmp_path):
    import time

    start = time.perf_counter()
    first = make_miniature_lebel2023(tmp_path / "a")
    elapsed = time.perf_counter() - start
    second = make_miniature_lebel2023(tmp_path / "b")
    for story in STORIES:
        name = f"derivative/preprocessed_data/UTS01/{story}.hf5"
        with h5py.File(first / name) as f, h5py.File(second / name) as g:
            np.testing.assert_array_equal(f["data"][...], g["data"][...])
        assert ((first / "stimuli" / f"{story}.wav").read_bytes()
                == (second / "stimuli" / f"{story}.wav").read_bytes())
    assert elapsed < 5.0  # generous: the machine is shared; typically ~0.2 s


def test_subpackages_import_cheaply_and_exports_resolve():
    import importlib.util
    import subprocess
    import sys

    code = ("import sys, sk_braintune.datasets, sk_braintune.testing; print(','.join(m for m in "
            "('scipy', 'sklearn', 'h5py', 'pandas', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    import sk_braintune.datasets as datasets

    for name in datasets.__all__:
        module = datasets._LAZY_EXPORTS[name]
        if module.startswith(".") and importlib.util.find_spec(
                "sk_braintune.datasets" + module) is None:
            continue  # written by another part of the project
        assert getattr(datasets, name) is not None
    assert "load_lebel2023" in dir(datasets)
    with pytest.raises(AttributeError):
        datasets.no_such_loader


# -- several participants, lazy responses, common voxel space ----------------------------------
def _file(root, subject, story, name="data"):
    with h5py.File(root / f"derivative/preprocessed_data/{subject}/{story}.hf5") as f:
        return f[name][...]


@pytest.fixture(scope="module")
def uneven_root(tmp_path_factory):
    """Three participants in their own voxel spaces (16, 12 and 20 voxels)."""
    return make_miniature_lebel2023(tmp_path_factory.mktemp("uneven"),
                                    subjects=("UTS01", "UTS02", "UTS03"),
                                    n_voxels={"UTS01": 16, "UTS02": 12, "UTS03": 20})


def test_several_participants_follow_the_contract(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        data = load_lebel2023(root, ["UTS02", 1])
    assert data.participants == ("UTS02", "UTS01")
    assert set(data.participant_data) == {"UTS01", "UTS02"}
    assert data.subject == "UTS02"
    for participant in data.participants:
        own = data.participant_data[participant]
        for story in STORIES:
            np.testing.assert_array_equal(own.responses[story],
                                          np.nan_to_num(_file(root, participant, story)))
        repeats = _file(root, participant, "wheretheressmoke", "individual_repeats")
        np.testing.assert_array_equal(own.repeats["wheretheressmoke"], repeats)
        np.testing.assert_allclose(own.noise_ceiling, noise_ceiling(repeats), rtol=1e-6)
    # the top level is the first participant's; the stimuli are shared
    first = data.participant_data["UTS02"]
    assert data.responses is first.responses and data.noise_ceiling is first.noise_ceiling
    assert not np.array_equal(data.participant_data["UTS01"].noise_ceiling,
                              data.noise_ceiling)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        single = load_lebel2023(root, "UTS02")
    assert single.participants == ("UTS02",) and list(single.participant_data) == ["UTS02"]
    np.testing.assert_array_equal(single.audio["storyA"], data.audio["storyA"])
    np.testing.assert_array_equal(single.noise_ceiling, data.noise_ceiling)


def test_drop_removes_the_voxels_nan_in_any_participant(tmp_path):
    root = make_miniature_lebel2023(tmp_path, subjects=("UTS01", "UTS02"), nan_voxels=2)
    with h5py.File(root / "derivative/preprocessed_data/UTS02/storyA.hf5", "r+") as f:
        values = f["data"][...]
        values[3, 5] = np.nan  # one more NaN voxel, in the second participant only
        f["data"][...] = values
    with pytest.warns(NaNVoxelWarning, match="3 of 16 voxels removed"):
        data = load_lebel2023(root, ["UTS01", "UTS02"], nan_policy="drop")
    kept = np.array([v for v in range(16) if v not in (5, 14, 15)])
    np.testing.assert_array_equal(data.voxel_indices, kept)
    for participant in data.participants:
        np.testing.assert_array_equal(data.participant_data[participant].responses["storyB"],
                                      _file(root, participant, "storyB")[:, kept])
    assert data.participant_data["UTS02"].nan_voxels == {"storyA": 1, "storyB": 2,
                                                         "wheretheressmoke": 0}


def test_different_voxel_counts_need_a_common_space(uneven_root):
    with pytest.raises(ValueError, match=r"different numbers of voxels.*'UTS02': 12.*"
                                         r"common_space"):
        load_lebel2023(uneven_root, ["UTS01", "UTS02"])


def test_common_space_from_index_arrays_and_files(uneven_root, tmp_path):
    index = {"UTS01": np.arange(4, 14), "UTS02": np.arange(10)[::-1],
             "UTS03": np.array([0, 2, 4, 6, 8, 10, 12, 14, 16, 18])}
    np.save(tmp_path / "uts02.npy", index["UTS02"])
    (tmp_path / "uts03.txt").write_text(" ".join(map(str, index["UTS03"])))
    spec = {"UTS01": index["UTS01"], "UTS02": tmp_path / "uts02.npy",
            "UTS03": str(tmp_path / "uts03.txt")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        data = load_lebel2023(uneven_root, ["UTS01", "UTS02", "UTS03"], common_space=spec)
    for participant, columns in index.items():
        own = data.participant_data[participant]
        for story in STORIES:
            expected = np.nan_to_num(_file(uneven_root, participant, story))[:, columns]
            np.testing.assert_array_equal(own.responses[story], expected)
            assert own.responses[story].shape == (expected.shape[0], 10)
        repeats = _file(uneven_root, participant, "wheretheressmoke",
                        "individual_repeats")[:, :, columns]
        np.testing.assert_allclose(own.noise_ceiling, noise_ceiling(repeats), rtol=1e-6)
    assert data.voxel_labels.shape == (10,)


def test_common_space_from_projection_matrices(uneven_root, tmp_path):
    import scipy.sparse

    rng = np.random.default_rng(0)
    dense = {"UTS01": rng.random((16, 5)), "UTS02": rng.random((12, 5))}
    scipy.sparse.save_npz(tmp_path / "uts02.npz", scipy.sparse.csr_matrix(dense["UTS02"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        data = load_lebel2023(uneven_root, ["UTS01", "UTS02"],
                              common_space={"UTS01": dense["UTS01"],
                                            "UTS02": tmp_path / "uts02.npz"})
        # NaN voxels touch every common voxel of a dense projection: "drop" would leave none
        with pytest.raises(ValueError, match="every voxel has NaN"):
            load_lebel2023(uneven_root, ["UTS01", "UTS02"], nan_policy="drop",
                           common_space=dense)
    for participant, matrix in dense.items():
        for story in STORIES:
            expected = np.nan_to_num(_file(uneven_root, participant, story)).astype(
                np.float64) @ matrix
            np.testing.assert_allclose(data.participant_data[participant].responses[story],
                                       expected, rtol=1e-5, atol=1e-5)
    # a sparse matrix touching only NaN-free voxels: drop keeps every common voxel
    sparse = {p: scipy.sparse.eye(n, 8, format="csr") for p, n in (("UTS01", 16),
                                                                    ("UTS02", 12))}
    clean = load_lebel2023(uneven_root, ["UTS01", "UTS02"], nan_policy="drop",
                           common_space=sparse)
    np.testing.assert_array_equal(clean.voxel_indices, np.arange(8))
    np.testing.assert_allclose(clean.participant_data["UTS02"].responses["storyB"],
                               _file(uneven_root, "UTS02", "storyB")[:, :8])


def test_common_space_errors(uneven_root):
    ok = {"UTS01": np.arange(5), "UTS02": np.arange(5)}
    with pytest.raises(ValueError, match=r"no mapping for \['UTS02'\]"):
        load_lebel2023(uneven_root, ["UTS01", "UTS02"], common_space={"UTS01": np.arange(5)})
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 12\)"):
        load_lebel2023(uneven_root, ["UTS01", "UTS02"],
                       common_space={**ok, "UTS02": np.arange(13)})
    with pytest.raises(ValueError, match="different numbers of voxels"):
        load_lebel2023(uneven_root, ["UTS01", "UTS02"],
                       common_space={**ok, "UTS02": np.arange(4)})
    with pytest.raises(ValueError, match=r"one row per voxel of the participant \(12\)"):
        load_lebel2023(uneven_root, ["UTS01", "UTS02"],
                       common_space={**ok, "UTS02": np.ones((16, 5))})
    with pytest.raises(ValueError, match="integer voxel indices"):
        load_lebel2023(uneven_root, ["UTS01", "UTS02"],
                       common_space={**ok, "UTS02": np.linspace(0, 1, 5)})
    with pytest.raises(ValueError, match="twice"):
        load_lebel2023(uneven_root, ["UTS01", "uts01"])


def test_responses_are_read_lazily_and_behave_like_arrays(root):
    import pickle

    from sk_braintune.datasets import LazyStoryArray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        lazy = load_lebel2023(root, ["UTS01", "UTS02"])
        eager = load_lebel2023(root, ["UTS01", "UTS02"], lazy=False)
    array = lazy.responses["storyB"]
    assert isinstance(array, LazyStoryArray)
    assert isinstance(eager.responses["storyB"], np.ndarray)
    full = eager.responses["storyB"]
    assert array.shape == full.shape == (13, 16) and array.dtype == np.float32
    assert len(array) == 13 and array.ndim == 2 and array.nbytes == full.nbytes
    np.testing.assert_array_equal(np.asarray(array), full)
    for key in (3, -1, slice(2, 9), slice(None, None, -2), np.array([7, 1, 7]),
                full[:, 0] > 0, (slice(1, 4), [0, 5]), (Ellipsis, 2), (5, slice(2, 4))):
        np.testing.assert_array_equal(array[key], full[key])
    with pytest.raises(IndexError):
        array[13]
    np.testing.assert_array_equal(array * 2 - 1, full * 2 - 1)
    np.testing.assert_allclose(array.mean(0), full.mean(0))
    np.testing.assert_array_equal(np.isnan(array), np.zeros_like(full, dtype=bool))
    np.testing.assert_array_equal(np.asarray(array, dtype=np.float64), full.astype(np.float64))
    # the repeats too, and the object pickles as a path and a few numbers
    np.testing.assert_array_equal(lazy.repeats["wheretheressmoke"][1],
                                  eager.repeats["wheretheressmoke"][1])
    assert len(pickle.dumps(array)) < 1000
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(array)), full)
    X, y, groups = windows_from_dataset(lazy, "train", window=4.0)
    _, y_eager, _ = windows_from_dataset(eager, "train", window=4.0)
    np.testing.assert_array_equal(y, y_eager)
    # a subset of voxels stays lazy and composes with earlier selections
    subset = array.take_columns([5, 2, 9])
    assert isinstance(subset, LazyStoryArray) and subset.shape == (13, 3)
    np.testing.assert_array_equal(subset, full[:, [5, 2, 9]])
    np.testing.assert_array_equal(subset.take_columns(np.array([False, True, True])),
                                  full[:, [2, 9]])
    np.testing.assert_array_equal(lazy.repeats["wheretheressmoke"].take_columns([0, 3]),
                                  eager.repeats["wheretheressmoke"][..., [0, 3]])


def test_concatenating_lazy_stories_reads_one_story_at_a_time(root, monkeypatch):
    from sk_braintune.datasets import LazyStoryArray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        lazy = load_lebel2023(root, "UTS01")
        eager = load_lebel2023(root, "UTS01", lazy=False)
    live, peak = [0], [0]
    read = LazyStoryArray._read

    def counting_read(self, row_index=None):
        block = read(self, row_index)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return _Released(block, live)

    monkeypatch.setattr(LazyStoryArray, "_read", counting_read)
    stacked = np.concatenate([lazy.responses[s] for s in STORIES])
    np.testing.assert_array_equal(stacked,
                                  np.concatenate([eager.responses[s] for s in STORIES]))
    assert stacked.dtype == np.float32 and peak[0] == 1  # never two stories alive at once
    mixed = np.concatenate([lazy.responses["storyA"], eager.responses["storyB"].astype(float)])
    assert mixed.dtype == np.float64
    np.testing.assert_array_equal(np.vstack([lazy.responses["storyA"]] * 2),
                                  np.concatenate([eager.responses["storyA"]] * 2))


class _Released(np.ndarray):
    """An ndarray that counts itself out of ``live`` when garbage-collected."""

    def __new__(cls, array, live):
        obj = np.asarray(array).view(cls)
        obj._live = live
        return obj

    def __array_finalize__(self, obj):
        self._live = None

    def __del__(self):
        if getattr(self, "_live", None) is not None:
            self._live[0] -= 1


def test_several_participants_work_with_the_participant_helpers(root):
    from sk_braintune.datasets import participant_windows, select_participant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NaNVoxelWarning)
        data = load_lebel2023(root, ["UTS01", "UTS02"])
    second = select_participant(data, "UTS02")
    np.testing.assert_array_equal(second.responses["storyA"],
                                  _file(root, "UTS02", "storyA"))
    np.testing.assert_array_equal(second.noise_ceiling,
                                  data.participant_data["UTS02"].noise_ceiling)
    X, y, groups, labels = participant_windows(data, ["storyA", "storyB"], window=4.0)
    assert len(X) == len(y) == 2 * (12 + 13)
    for participant in data.participants:
        for story in ("storyA", "storyB"):
            rows = (labels == participant) & (groups == story)
            np.testing.assert_array_equal(y[rows],
                                          np.nan_to_num(_file(root, participant, story)))


def test_miniature_sizes_per_story_and_participant(tmp_path):
    root = make_miniature_lebel2023(tmp_path, subjects=("UTS01", "UTS02"), stories=STORIES,
                                    n_trs=[20, 15, 18], n_voxels={"UTS01": 7, "UTS02": 9},
                                    nan_voxels=0, sample_rate=16000, stereo=False)
    assert _file(root, "UTS01", "storyA").shape == (20, 7)
    assert _file(root, "UTS02", "storyB").shape == (15, 9)
    assert _file(root, "UTS02", "wheretheressmoke", "individual_repeats").shape == (3, 18, 9)
    assert _respdict(root)["storyB"] == 15 + 5 + 15
    with pytest.raises(ValueError, match="3 stories"):
        make_miniature_lebel2023(tmp_path / "x", n_trs=[20, 15])
    with pytest.raises(ValueError, match="UTS02"):
        make_miniature_lebel2023(tmp_path / "y", subjects=("UTS01", "UTS02"),
                                 n_voxels={"UTS01": 4})
