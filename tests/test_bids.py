"""load_bids, load_narratives and load_petit_prince on miniatures written in the real formats.

Numbers are checked against independent reads of the files (nibabel arrays indexed by hand,
nilearn maskers, the sidecar TR, the metrics' noise ceiling formula).
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sk_braintune.datasets import (
    load_bids,
    load_narratives,
    load_petit_prince,
    read_gentle,
    read_textgrid,
    validate_record,
    words_and_phones,
)
from sk_braintune.datasets.bids import parse_bids_name
from sk_braintune.metrics import noise_ceiling
from sk_braintune.testing import (
    make_miniature_bids,
    make_miniature_narratives,
    make_miniature_petit_prince,
)

MNI = "MNI152NLin2009cAsym"


@pytest.fixture(scope="module")
def volume_root(tmp_path_factory):
    return make_miniature_bids(tmp_path_factory.mktemp("vol"))


@pytest.fixture(scope="module")
def surface_root(tmp_path_factory):
    return make_miniature_bids(tmp_path_factory.mktemp("surf"), space="fsaverage5",
                               confounds_naming="regressors")


@pytest.fixture(scope="module")
def narratives_root(tmp_path_factory):
    return make_miniature_narratives(tmp_path_factory.mktemp("narratives"))


@pytest.fixture(scope="module")
def volume(volume_root):
    return load_bids(volume_root, "sub-01", space=MNI)


def _run(root, name, space=MNI, subject="01", session="1"):
    folder = root / "derivatives" / "fmriprep" / f"sub-{subject}" / f"ses-{session}" / "func"
    base = f"sub-{subject}_ses-{session}_task-listening_{name}"
    return folder / f"{base}_space-{space}_desc-preproc_bold.nii.gz", \
        folder / f"{base}_space-{space}_desc-brain_mask.nii.gz"


def test_parse_bids_name():
    assert parse_bids_name("sub-01_task-x_hemi-L_space-fsaverage5_bold.func.gii") == (
        {"sub": "01", "task": "x", "hemi": "L", "space": "fsaverage5"}, "bold", ".func.gii")
    assert parse_bids_name("sub-001_task-pieman_space-fsaverage6_hemi-R_desc-clean.func.gii")[
        1:] == (None, ".func.gii")


def test_volume_record_against_nibabel(volume, volume_root):
    validate_record(volume, check_values=True)
    assert volume.stories == ["alpha", "beta", "gamma"] and volume.space == MNI
    assert volume.tr == 2.0  # inherited from the top-level task-listening_bold.json
    bold, mask_path = _run(volume_root, "run-1")
    mask = nib.load(bold.with_name(mask_path.name)).get_fdata().astype(bool)
    data = nib.load(bold).get_fdata()
    # alpha: the story row at 4 s, 40 s long -> volumes 2..21, audio starting at 4 s
    expected_run1 = data[mask][:, 2:22].T
    run3, _ = _run(volume_root, "run-3", session="2")
    expected_run3 = nib.load(run3).get_fdata()[mask][:, 2:22].T
    np.testing.assert_allclose(volume.repeats["alpha"][0], expected_run1, rtol=1e-6)
    np.testing.assert_allclose(volume.repeats["alpha"][1], expected_run3, rtol=1e-6)
    np.testing.assert_allclose(volume.responses["alpha"], (expected_run1 + expected_run3) / 2,
                               rtol=1e-5)
    np.testing.assert_allclose(volume.tr_times["alpha"], (np.arange(2, 22) + 0.5) * 2.0 - 4.0)
    # beta: a music row at 2 s starts beta.wav; the story row at 8 s for 30 s -> volumes 4..18
    np.testing.assert_allclose(volume.tr_times["beta"], (np.arange(4, 19) + 0.5) * 2.0 - 2.0)
    # columns: the mask's voxels in C order, and the fitted NiftiMasker agrees
    np.testing.assert_array_equal(volume.column_index, np.flatnonzero(mask.ravel()))
    np.testing.assert_allclose(volume.masker.transform(str(bold))[2:22], expected_run1,
                               rtol=1e-5)
    back = volume.masker.inverse_transform(volume.responses["alpha"][0]).get_fdata()
    np.testing.assert_allclose(back.ravel()[volume.column_index],
                               volume.responses["alpha"][0], rtol=1e-6)
    np.testing.assert_allclose(volume.noise_ceiling,
                               noise_ceiling(np.stack([expected_run1, expected_run3])),
                               rtol=1e-5)
    assert volume.split == {"train": ["beta", "gamma"], "validation": [], "test": ["alpha"]}
    # gamma: story row at 6 s for 44 s -> volumes 3..24 of 30, its audio starting at 6 s
    np.testing.assert_allclose(volume.tr_times["gamma"], (np.arange(3, 25) + 0.5) * 2.0 - 6.0)


def test_volume_words_from_textgrid_and_gentle(volume, volume_root):
    words, phones = words_and_phones(read_textgrid(volume_root / "stimuli" / "alpha.TextGrid"),
                                     phone_tier="phones", word_tier="words")
    pd.testing.assert_frame_equal(volume.words["alpha"], words)
    pd.testing.assert_frame_equal(volume.phones["alpha"], phones)
    gentle = json.loads((volume_root / "stimuli" / "beta_align.json").read_text())["words"]
    found = [w for w in gentle if w["case"] == "success"]
    assert list(volume.words["beta"]["label"]) == [w["word"] for w in found]
    np.testing.assert_allclose(volume.words["beta"]["onset"], [w["start"] for w in found])
    assert volume.words_not_found == {"alpha": 0, "beta": 1, "gamma": 0}
    gamma = json.loads((volume_root / "stimuli" / "gentle" / "gamma" / "align.json"
                        ).read_text())["words"]
    np.testing.assert_allclose(volume.words["gamma"]["offset"], [w["end"] for w in gamma])
    first = found[0]
    labels = [p["phone"].split("_")[0].upper() for p in first["phones"]]
    assert list(volume.phones["beta"]["label"][:len(labels)]) == labels
    # the audio: 16 kHz mono, its length the file's
    assert volume.audio["alpha"].size == 40 * 16000


def test_read_gentle_phone_times(tmp_path, volume_root):
    words, phones, missing = read_gentle(volume_root / "stimuli" / "beta_align.json")
    assert missing == 1
    # phones tile each word from its start
    first = words.iloc[0]
    inside = phones[(phones.onset >= first.onset - 1e-9) & (phones.offset <= first.offset + 1e-6)]
    assert inside.onset.iloc[0] == first.onset
    np.testing.assert_allclose(inside.offset.iloc[-1], first.offset, atol=1e-3)


def test_surface_two_subjects_and_cleaning(surface_root):
    from nilearn.signal import clean

    data = load_bids(surface_root, ["01", "sub-02"], space="fsaverage5",
                     confounds=["trans_x", "csf"])
    validate_record(data, check_values=True)
    assert data.participants == ("sub-01", "sub-02") and data.n_vertices == (14, 12)
    # the medial wall (zeros) is dropped: left 0, 1 and right 0, 1 (columns 14, 15)
    expected_columns = np.setdiff1d(np.arange(26), [0, 1, 14, 15])
    np.testing.assert_array_equal(data.column_index, expected_columns)
    assert list(data.voxel_labels[:12]) == ["left"] * 12
    # independent: read sub-02's run 2 with nibabel, clean with nilearn, cut beta's volumes
    folder = surface_root / "derivatives" / "fmriprep" / "sub-02" / "ses-1" / "func"
    base = "sub-02_ses-1_task-listening_run-2"
    hemis = [np.stack([d.data for d in nib.load(folder / f"{base}_hemi-{h}_space-fsaverage5"
                                                          f"_bold.func.gii").darrays])
             for h in "LR"]
    run = np.concatenate(hemis, axis=1)[:, expected_columns]
    table = pd.read_csv(folder / f"{base}_desc-confounds_regressors.tsv", sep="\t",
                        na_values="n/a")
    cleaned = clean(run, confounds=table[["trans_x", "csf"]].to_numpy(), t_r=2.0,
                    detrend=True, standardize=None)
    np.testing.assert_allclose(data.participant_data["sub-02"].responses["beta"],
                               cleaned[4:19], rtol=1e-4, atol=1e-4)


def test_surface_masker_path(surface_root):
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    rng = np.random.default_rng(0)

    def mesh(n):
        return InMemoryMesh(rng.standard_normal((n, 3)),
                            np.array([[i, (i + 1) % n, (i + 2) % n] for i in range(n)]))

    polymesh = PolyMesh(left=mesh(14), right=mesh(12))
    keep_left, keep_right = np.arange(14) >= 5, np.arange(12) % 2 == 1
    mask = SurfaceImage(polymesh, {"left": keep_left, "right": keep_right})
    data = load_bids(surface_root, "01", space="fsaverage5", mask_img=mask)
    np.testing.assert_array_equal(data.column_index,
                                  np.flatnonzero(np.concatenate([keep_left, keep_right])))
    folder = surface_root / "derivatives" / "fmriprep" / "sub-01" / "ses-1" / "func"
    base = "sub-01_ses-1_task-listening_run-2"
    run = {h: np.stack([d.data for d in nib.load(
        folder / f"{base}_hemi-{h[0].upper()}_space-fsaverage5_bold.func.gii").darrays]).T
        for h in ("left", "right")}
    through = data.masker.transform(SurfaceImage(polymesh, run))
    np.testing.assert_allclose(data.responses["beta"], through[4:19], rtol=1e-6)


def test_header_tr_disagreement_warns(volume_root, tmp_path):
    root = shutil.copytree(volume_root, tmp_path / "copy")
    bold, _ = _run(root, "run-2")
    img = nib.load(bold)
    img.header["pixdim"][4] = 2.5
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), bold)
    with pytest.warns(UserWarning, match=r"RepetitionTime \(2.0 s.*header's \(2.5 s\)"):
        data = load_bids(root, "01", space=MNI)
    assert data.tr == 2.0


def test_narratives(narratives_root):
    data = load_narratives(narratives_root, 1)
    validate_record(data, check_values=True)
    assert data.stories == ["pieman", "slumlord", "reach"] and data.space == "fsaverage6"
    assert data.tr == 1.5 and data.repeats["pieman"].shape[0] == 2  # run-1 and run-2
    # pieman_audio.wav starts with the music row at 0 s; event_meta: volumes 3..20
    np.testing.assert_allclose(data.tr_times["pieman"], (np.arange(3, 21) + 0.5) * 1.5)
    # slumlordreach's file starts at 1.5 s; reach is event_meta's volumes 20..33
    np.testing.assert_allclose(data.tr_times["reach"], (np.arange(20, 34) + 0.5) * 1.5 - 1.5)
    folder = narratives_root / "derivatives" / "afni-nosmooth" / "sub-001" / "func"
    hemis = [np.stack([d.data for d in nib.load(
        folder / f"sub-001_task-pieman_run-2_space-fsaverage6_hemi-{h}_desc-clean.func.gii"
    ).darrays]) for h in "LR"]
    run2 = np.concatenate(hemis, axis=1)[:, data.column_index]
    np.testing.assert_allclose(data.repeats["pieman"][1], run2[3:21], rtol=1e-6)
    np.testing.assert_allclose(data.noise_ceiling, noise_ceiling(data.repeats["pieman"]),
                               rtol=1e-5)
    # Gentle: not-found words dropped and counted, phones upper-case without suffixes
    assert data.words_not_found["pieman"] == 1
    assert data.phones["pieman"]["label"].str.fullmatch(r"[A-Z]+").all()
    # the clock: every word inside its story's span of the audio, the audio inside the scan
    for story in data.stories:
        clock = data.clock[story]
        assert clock["story_in_audio"][0] <= clock["words"][0]
        assert clock["words"][1] <= clock["audio_seconds"]
        assert clock["audio_onset_in_run"] + clock["audio_seconds"] <= clock["scan_seconds"]


def test_narratives_exclusion_and_volume_space(narratives_root):
    data = load_narratives(narratives_root, ["sub-002", "sub-003"], space=MNI,
                           confounds={"strategy": ("motion",), "motion": "basic"})
    validate_record(data)
    # sub-003's pieman is in code/scan_exclude.json, so only the stories both heard remain
    assert data.stories == ["slumlord", "reach"]
    assert data.excluded_runs["sub-003"] == ["sub-003_task-pieman_bold.nii.gz"]
    assert data.mask_img.shape == (5, 4, 3) and "fmriprep" not in data.description
    kept = load_narratives(narratives_root, "sub-003", exclude=False, task="pieman")
    assert kept.stories == ["pieman"]


def test_petit_prince_runs_sorted_and_lead_in(tmp_path):
    root = make_miniature_petit_prince(tmp_path / "lpp")
    data = load_petit_prince(root, "EN057")
    validate_record(data, check_values=True)
    assert data.stories == ["section1", "section2", "section3"] and data.space == "MNIColin27"
    runs = [p["run"].split("_run-")[1].split("_")[0] for p in data.presentations["sub-EN057"]]
    assert runs == ["9", "10", "11"]  # section k is the k-th run by number, not by name
    # the audio starts 8 s (4 volumes) into the run
    np.testing.assert_allclose(data.tr_times["section2"][:2], [(4 + 0.5) * 2 - 8,
                                                              (5 + 0.5) * 2 - 8])
    words, _ = words_and_phones(read_textgrid(root / "annotation" / "EN" /
                                              "lppEN_section2.TextGrid"),
                                phone_tier="phones", word_tier="words")
    pd.testing.assert_frame_equal(data.words["section2"], words)


# -- bad input: each error names the file and what to do --------------------------------


@pytest.fixture()
def copy(volume_root, tmp_path):
    return shutil.copytree(volume_root, tmp_path / "copy")


def test_missing_stimulus(copy):
    (copy / "stimuli" / "beta.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"beta\.wav.*events\.tsv.*stimuli/"):
        load_bids(copy, "01", space=MNI)


def test_onset_beyond_run(copy):
    events = copy / "sub-01" / "ses-1" / "func" / "sub-01_ses-1_task-listening_run-1_events.tsv"
    events.write_text("onset\tduration\ttrial_type\tstim_file\n100.0\t40.0\tstory\talpha.wav\n")
    with pytest.raises(ValueError, match=r"run-1_events\.tsv.*starts at 100.0 s, after the "
                                         r"run ends \(30 volumes"):
        load_bids(copy, "01", space=MNI)


def test_sidecar_tr_missing(copy):
    (copy / "task-listening_bold.json").unlink()
    for sidecar in (copy / "derivatives").rglob("*.json"):
        sidecar.unlink()
    with pytest.raises(ValueError, match=r"no RepetitionTime for sub-01_ses-1_task-listening_"
                                         r"run-1_bold\.nii\.gz.*or pass tr="):
        load_bids(copy, "01", space=MNI)
    assert load_bids(copy, "01", space=MNI, tr=2.0).tr == 2.0


def test_runs_in_different_spaces(copy):
    bold, mask = _run(copy, "run-2")
    for path in (bold, mask):
        path.rename(path.with_name(path.name.replace(MNI, "T1w")))
    with pytest.raises(ValueError, match=r"run-2_bold\.nii\.gz \(spaces \['T1w'\]\).*one "
                                         "space"):
        load_bids(copy, "01", space=MNI)


def test_hemisphere_missing(surface_root, tmp_path):
    root = shutil.copytree(surface_root, tmp_path / "copy")
    next((root / "derivatives").rglob("sub-01_ses-1_*run-2_hemi-R_*.func.gii")).unlink()
    with pytest.raises(FileNotFoundError, match=r"hemi-R file of space fsaverage5 is missing"
                                                r".*restore the right hemisphere"):
        load_bids(root, "01", space="fsaverage5")


def test_gifti_arrays_of_different_lengths(surface_root, tmp_path):
    root = shutil.copytree(surface_root, tmp_path / "copy")
    path = next((root / "derivatives").rglob("sub-01_ses-1_*run-1_hemi-L_*.func.gii"))
    img = nib.load(path)
    arrays = list(img.darrays)
    arrays[3] = nib.gifti.GiftiDataArray(np.zeros(13, dtype=np.float32))
    nib.save(nib.GiftiImage(darrays=arrays), path)
    with pytest.raises(ValueError, match=r"hemi-L_space-fsaverage5_bold\.func\.gii: the GIfTI "
                                         r"data arrays differ in length.*array 3"):
        load_bids(root, "01", space="fsaverage5")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(copy, bad):
    bold, mask_path = _run(copy, "run-2")
    img = nib.load(bold)
    values = np.asarray(img.dataobj).copy()
    mask = nib.load(mask_path).get_fdata().astype(bool)
    column = np.flatnonzero(mask.ravel())[5]
    values.reshape(-1, values.shape[-1])[column, 7] = bad
    nib.save(nib.Nifti1Image(values, img.affine, img.header), bold)
    with pytest.raises(ValueError, match=r"run-2_space-.*1 column\(s\).*NaN or infinite.*"
                                         "nan_policy='drop'"):
        load_bids(copy, "01", space=MNI)
    with pytest.warns(UserWarning, match="dropped"):
        data = load_bids(copy, "01", space=MNI, nan_policy="drop")
    assert column not in data.column_index and data.column_index.size == 17
    for story in data.stories:  # never turned into huge numbers
        assert np.all(np.isfinite(data.responses[story]))
        assert np.abs(data.responses[story]).max() < 1e3


def test_words_file_ends_after_audio(copy):
    from sk_braintune.testing.lebel import _textgrid_text

    rows = [(0.0, 1.0, ""), (1.0, 1.4, "story"), (1.4, 44.0, ""), (44.0, 45.0, "town")]
    (copy / "stimuli" / "alpha.TextGrid").write_text(
        _textgrid_text({"phones": rows, "words": rows}, 45.0, "long"))
    with pytest.raises(ValueError, match=r"alpha\.TextGrid ends at 45.00 s but .*alpha\.wav "
                                         r"lasts 40.00 s.*realign"):
        load_bids(copy, "01", space=MNI)


def test_volume_mask_on_a_surface_space(surface_root, volume_root):
    bold, mask = _run(volume_root, "run-1")
    with pytest.raises(ValueError, match="must be a nilearn SurfaceImage"):
        load_bids(surface_root, "01", space="fsaverage5", mask_img=str(mask))


def test_subject_not_found_and_bad_space(volume_root):
    with pytest.raises(FileNotFoundError, match=r"subject 'sub-09' not found.*sub-01"):
        load_bids(volume_root, "sub-09", space=MNI)
    with pytest.raises(FileNotFoundError, match=r"no run .*in space 'fsaverage6'; spaces found"):
        load_bids(volume_root, "01", space="fsaverage6")


def test_story_selection_reads_only_its_runs(volume_root):
    data = load_bids(volume_root, "01", space=MNI, stories=["beta"])
    assert data.stories == ["beta"] and not data.repeats and data.noise_ceiling is None
    assert [p["run"].split("_run-")[1][0] for p in data.presentations["sub-01"]] == ["2"]
    with pytest.raises(ValueError, match=r"no run presenting the stories \['delta'\]"):
        load_bids(volume_root, "01", space=MNI, stories=["delta"])


def test_scores_back_to_images(volume, surface_root, tmp_path):
    from sk_braintune.datasets import save_record_image

    scores = np.arange(volume.column_index.size, dtype=np.float32)
    (path,) = save_record_image(scores, volume, tmp_path / "scores")
    assert path.name == f"scores_space-{MNI}.nii.gz"
    image = nib.load(path).get_fdata()
    np.testing.assert_array_equal(image.ravel()[volume.column_index], scores)
    assert np.isnan(np.delete(image.ravel(), volume.column_index)).all()
    np.testing.assert_allclose(np.ravel(volume.masker.transform(nib.load(path))), scores)
    surface = load_bids(surface_root, "01", space="fsaverage5")
    values = np.stack([np.arange(22.0), -np.arange(22.0)])
    left, right = save_record_image(values, surface, tmp_path / "surf")
    assert right.name == "surf_space-fsaverage5_hemi-R.func.gii"
    both = np.concatenate([np.stack([d.data for d in nib.load(p).darrays]) for p in (left, right)],
                          axis=1)
    np.testing.assert_array_equal(both[:, surface.column_index], values)
    assert np.isnan(both[:, [0, 1, 14, 15]]).all() and len(nib.load(left).darrays) == 2


def test_nilearn_confound_strategy_and_session(volume_root):
    from nilearn.signal import clean

    strategy = {"strategy": ("motion",), "motion": "basic"}
    data = load_bids(volume_root, "01", space=MNI, session="2", confounds=strategy)
    assert data.stories == ["alpha", "gamma"] and not data.repeats  # ses-2 only: runs 3, 4
    bold, mask_path = _run(volume_root, "run-4", session="2")
    mask = nib.load(mask_path).get_fdata()
    run = nib.load(bold).get_fdata()[mask.astype(bool)].T
    table = pd.read_csv(bold.parent / "sub-01_ses-2_task-listening_run-4_desc-confounds_"
                                      "timeseries.tsv", sep="\t", na_values="n/a")
    motion = table[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    expected = clean(run, confounds=motion, t_r=2.0, detrend=True, standardize=None)
    np.testing.assert_allclose(data.responses["gamma"], expected[3:25], rtol=1e-4, atol=1e-4)
