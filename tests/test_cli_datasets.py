"""``tune`` and ``evaluate`` with ``--dataset``: Narratives, BIDS and Le Petit Prince miniatures,
and the transfer test (a model tuned on the LeBel miniature evaluated on Narratives)."""

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from sk_braintune.commands import cli
from sk_braintune.testing import (
    make_miniature_bids,
    make_miniature_narratives,
    make_miniature_petit_prince,
)
from sk_braintune.testing.lebel import make_miniature_lebel2023
from sk_braintune.testing.models import make_tiny_model

FAST = ["--window", "2", "--layers", "0,2", "--quiet", "--device", "cpu",
        "--n-permutations", "20", "--partitioning-n-iter", "2"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model("wav2vec2", tmp_path_factory.mktemp("models") / "w2v")


@pytest.fixture(scope="module")
def narratives(tmp_path_factory):
    return make_miniature_narratives(tmp_path_factory.mktemp("ds002345"))


def _main(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli.main(argv)


def test_bids_needs_a_space(tmp_path, capsys):
    status = cli.main(["evaluate", "--dataset", "bids", "--root", str(tmp_path), "--subject",
                       "01", "--model", "m"])
    assert status == 2 and "--space is required with --dataset bids" in capsys.readouterr().err


def test_narratives_root_named_in_the_error(capsys):
    status = cli.main(["tune", "--dataset", "narratives", "--subject", "001", "--model", "m"])
    assert status == 2 and "Narratives (ds002345)" in capsys.readouterr().err


def test_petit_prince_without_repeats_is_a_clear_error(tmp_path, tiny_model, capsys):
    root = make_miniature_petit_prince(tmp_path / "lpp")
    status = _main(["evaluate", "--dataset", "petit-prince", "--root", str(root), "--subject",
                    "EN057", "--model", str(tiny_model), "--output", str(tmp_path / "out"),
                    *FAST])
    assert status == 2 and "no loaded story has repeats" in capsys.readouterr().err


@pytest.mark.slow
def test_tuned_on_lebel_evaluated_on_narratives(tmp_path, tiny_model, narratives):
    lebel = make_miniature_lebel2023(tmp_path / "ds003020", n_trs=40, n_voxels=12,
                                     nan_voxels=0, stereo=False, sample_rate=16000)
    tuned = tmp_path / "tuned"
    assert _main(["tune", "--root", str(lebel), "--subject", "UTS01", "--model",
                  str(tiny_model), "--output", str(tuned), "--epochs", "1", "--window", "2",
                  "--batch-size", "16", "--min-ceiling", "0", "--quiet", "--device",
                  "cpu"]) == 0
    out = tmp_path / "eval"
    assert _main(["evaluate", "--dataset", "narratives", "--root", str(narratives),
                  "--subject", "sub-001", "--model", str(tuned / "backbone"),
                  "--output", str(out), *FAST]) == 0
    from sk_braintune.datasets import load_narratives

    data = load_narratives(narratives, "sub-001")
    results = json.loads((out / "evaluation.json").read_text())
    assert results["layer_indices"] == [0, 2] and set(results["layers"]) == {"left", "right"}
    per_layer = np.load(out / "normalized_r_per_layer.npy")
    assert per_layer.shape == (2, data.column_index.size)
    # each layer's scores as a GIfTI pair on fsaverage6, NaN on the dropped medial wall
    for k, layer in enumerate((0, 2)):
        pair = [out / "maps" / f"sub-001_layer{layer:02d}_normalized-r_space-fsaverage6_"
                f"hemi-{h}.func.gii" for h in "LR"]
        values = np.concatenate([nib.load(p).darrays[0].data for p in pair])
        assert values.size == sum(data.n_vertices)
        np.testing.assert_allclose(values[data.column_index], per_layer[k], rtol=1e-6)
        assert np.isnan(np.delete(values, data.column_index)).all()
    maps = results["participants"]["sub-001"]["maps"]
    assert len(maps) == 4 and all(m.endswith(".func.gii") for m in maps)
    assert all((out / m).is_file() for m in maps)
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert set(maps) <= set(listed)  # in the results' file list, with their sha256


@pytest.mark.slow
def test_tune_on_narratives_and_evaluate_on_bids_volumes(tmp_path, tiny_model, narratives):
    tuned = tmp_path / "tuned"
    assert _main(["tune", "--dataset", "narratives", "--root", str(narratives), "--subject",
                  "1", "--model", str(tiny_model), "--output", str(tuned), "--epochs", "1",
                  "--window", "2", "--batch-size", "16", "--min-ceiling", "0", "--quiet",
                  "--device", "cpu"]) == 0
    assert json.loads((tuned / "manifest.json").read_text())["split"]["test"] == ["pieman"]
    root = make_miniature_bids(tmp_path / "bids")
    out = tmp_path / "eval"
    assert _main(["evaluate", "--dataset", "bids", "--root", str(root), "--subject", "01",
                  "--space", "MNI152NLin2009cAsym", "--task", "listening", "--model",
                  str(tuned / "backbone"), "--output", str(out), *FAST]) == 0
    from sk_braintune.datasets import load_bids

    data = load_bids(root, "01", space="MNI152NLin2009cAsym")
    per_layer = np.load(out / "normalized_r_per_layer.npy")
    image = nib.load(out / "maps" / "sub-01_layer02_normalized-r_space-MNI152NLin2009cAsym"
                     ".nii.gz")
    assert image.shape == data.mask_img.shape
    np.testing.assert_allclose(image.get_fdata().ravel()[data.column_index], per_layer[1],
                               rtol=1e-6)
    np.testing.assert_allclose(image.affine, data.mask_img.affine)


def test_concatenated_splits_use_one_chunk_grid():
    from sk_braintune.encoding import ChunkedBootstrap
    from sk_braintune.model_selection import ConcatenatedSplits

    X = np.zeros((70, 1))
    groups = np.repeat(["a", "b"], [35, 35])
    reference = ChunkedBootstrap(n_splits=2, chunk_length=20, chunking="reference",
                                 random_state=0)
    plain = [test for _, test in reference.split(X)]
    wrapped = [test for _, test in ConcatenatedSplits(reference).split(X, groups=groups)]
    per_story = [test for _, test in reference.split(X, groups=groups)]
    for a, b in zip(plain, wrapped):
        np.testing.assert_array_equal(a, b)
    # one grid over the 70 TRs: chunks start at 0, 20, 40 (the partial 60-69 never held out),
    # so chunk [20, 40) straddles the two stories; per story they start at 0 and 35
    grid = {0, 20, 40}
    for test in plain:
        assert len(test) == 20  # max(1, int(70 * 0.25 / 20)) chunks
        assert {int(t) for t in test[::20]} <= grid
    for test in per_story:
        assert {int(t) for t in test[::20]} <= {0, 35}
    assert ConcatenatedSplits(reference).get_n_splits() == 2


def test_paper_protocol_errors(tmp_path, tiny_model, narratives, capsys):
    lebel = make_miniature_lebel2023(tmp_path / "ds003020", n_trs=30, n_voxels=6, nan_voxels=0,
                                     stereo=False, sample_rate=16000)
    status = _main(["evaluate", "--root", str(lebel), "--subject", "UTS01", "--model",
                    str(tiny_model), "--output", str(tmp_path / "out"), "--protocol", "paper",
                    *FAST])
    err = capsys.readouterr().err
    assert status == 2 and "needs the paper's 24 training stories" in err and "adollshouse" in err
    status = _main(["evaluate", "--dataset", "narratives", "--root", str(narratives),
                    "--subject", "001", "--model", str(tiny_model), "--output",
                    str(tmp_path / "n"), "--protocol", "paper", *FAST])
    assert status == 2 and "does not apply to --dataset narratives" in capsys.readouterr().err


def test_paper_protocol_pieces(tmp_path):
    from sk_braintune.commands.evaluate import _paper_protocol
    from sk_braintune.commands.settings import EvaluateSettings
    from sk_braintune.datasets import PAPER_TRAIN_STORIES, load_lebel2023

    stories = (*PAPER_TRAIN_STORIES, "wheretheressmoke")
    root = make_miniature_lebel2023(tmp_path / "ds", stories=stories, n_trs=10, n_voxels=4,
                                    nan_voxels=0, stereo=False, sample_rate=16000)
    data = load_lebel2023(root, "UTS01")
    config = EvaluateSettings(root=root, subject=["UTS01"], model="m", protocol="paper")
    out, train, test, encoder = _paper_protocol(data, "UTS01", config)
    assert train == list(PAPER_TRAIN_STORIES) and test == ["wheretheressmoke"]
    np.testing.assert_allclose(out.responses["wheretheressmoke"],
                               np.asarray(data.repeats["wheretheressmoke"]).mean(axis=0),
                               rtol=1e-6)
    assert out.responses["adollshouse"] is data.responses["adollshouse"]
    params = encoder.get_params()
    assert params["alphas"] == "huth" and params["cv_scoring"] == "huth_rsq"
    assert params["cv"].cv.chunking == "reference" and params["cv"].cv.chunk_length == 20
    assert params["cv"].cv.n_splits == 3 and params["cv"].cv.test_size == 0.25


@pytest.mark.slow
def test_paper_protocol_end_to_end(tmp_path, tiny_model):
    from sk_braintune.datasets import PAPER_TRAIN_STORIES

    stories = (*PAPER_TRAIN_STORIES, "wheretheressmoke")
    root = make_miniature_lebel2023(tmp_path / "ds", stories=stories, n_trs=12, n_voxels=4,
                                    nan_voxels=0, stereo=False, sample_rate=16000)
    out = tmp_path / "eval"
    assert _main(["evaluate", "--root", str(root), "--subject", "UTS01", "--model",
                  str(tiny_model), "--output", str(out), "--protocol", "paper", *FAST]) == 0
    results = json.loads((out / "evaluation.json").read_text())
    participant = results["participants"]["UTS01"]
    assert participant["protocol"] == "paper"
    assert participant["split"] == {"train": list(PAPER_TRAIN_STORIES), "validation": [],
                                    "test": ["wheretheressmoke"]}
    assert json.loads((out / "manifest.json").read_text())["split"]["test"] == [
        "wheretheressmoke"]
    assert not (out / "maps").exists()  # ds003020's columns have no template space
