"""The dataset record's validator: a hand-made record passes, and each broken key is named."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from sk_braintune.datasets import RECORD_KEYS, record_image, resolve_split, validate_record


def _record(space="MNI152NLin2009cAsym"):
    rng = np.random.default_rng(0)
    stories = ["a", "b"]
    words = pd.DataFrame({"onset": [0.5, 1.5], "offset": [1.0, 2.0], "label": ["x", "y"]})
    mask = np.zeros((3, 3, 2), dtype=np.uint8)
    mask.ravel()[[1, 4, 7, 10]] = 1
    return Bunch(
        stories=stories, sample_rate=16000,
        audio={s: np.zeros(16000 * 10, dtype=np.float32) for s in stories}, tr=2.0,
        tr_times={s: np.arange(4, dtype=np.float64) * 2.0 + 1.0 for s in stories},
        responses={s: rng.standard_normal((4, 4)).astype(np.float32) for s in stories},
        repeats={"a": rng.standard_normal((2, 4, 4)).astype(np.float32)},
        noise_ceiling=np.zeros(4), words={s: words for s in stories},
        phones={s: words for s in stories},
        split={"train": ["b"], "validation": [], "test": ["a"]},
        voxel_labels=np.array(["brain"] * 4), participants=("sub-01",), space=space,
        column_index=np.array([1, 4, 7, 10]),
        mask_img=nib.Nifti1Image(mask, np.eye(4)), description="hand-made")


def test_a_valid_record_passes_and_is_returned():
    record = _record()
    assert validate_record(record, check_values=True) is record
    assert set(RECORD_KEYS) <= set(record)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("column_index"), r"missing keys \['column_index'\]"),
    (lambda r: r.tr_times.__setitem__("a", np.arange(3.0)), r"'responses' \['a'\] must have "
                                                             r"shape \(n_trs=3"),
    (lambda r: r.tr_times.__setitem__("a", np.array([1.0, 3.0, 3.0, 5.0])),
     "'tr_times' .* strictly increasing"),
    (lambda r: r.responses.__setitem__("b", r.responses["b"].astype(np.float64)),
     "'responses' .* must be float32"),
    (lambda r: r.words.__setitem__("a", pd.DataFrame({"onset": [1.0], "offset": [12.0],
                                                      "label": ["z"]})),
     r"'words' \['a'\] ends at 12.00 s but the audio lasts 10.00 s"),
    (lambda r: r.__setitem__("column_index", np.array([1, 1, 7, 10])), "unique"),
    (lambda r: r.__setitem__("column_index", np.array([1, 4, 7, 18])),
     "indexes past the mask grid"),
    (lambda r: r.__setitem__("mask_img", None), "'mask_img' must be a 3-D nibabel image"),
    (lambda r: r.split.__setitem__("train", ["c"]), r"names 'c', which is not in stories"),
    (lambda r: r.__setitem__("noise_ceiling", None), "is None although some stories have "
                                                     "repeats"),
    (lambda r: r.repeats.__setitem__("a", r.repeats["a"][:1]), r"n_repeats >= 2"),
])
def test_each_broken_key_is_named(change, message):
    record = _record()
    change(record)
    with pytest.raises(ValueError, match=message):
        validate_record(record)


def test_non_finite_values_only_with_check_values():
    record = _record()
    record.responses["a"][0, 0] = np.nan
    validate_record(record)
    with pytest.raises(ValueError, match=r"'responses' \['a'\] holds NaN"):
        validate_record(record, check_values=True)


def test_record_image_of_a_volume_and_errors():
    record = _record()
    image = record_image(np.array([1.0, 2.0, 3.0, 4.0]), record)
    np.testing.assert_array_equal(image.get_fdata().ravel()[[1, 4, 7, 10]], [1, 2, 3, 4])
    assert np.isnan(image.get_fdata().ravel()[0])
    assert record_image(np.ones((3, 4)), record).shape == (3, 3, 2, 3)
    with pytest.raises(ValueError, match=r"one value per column"):
        record_image(np.ones(5), record)
    record.space, record.mask_img = None, None
    with pytest.raises(ValueError, match="space is None"):
        record_image(np.ones(4), record)


def test_resolve_split():
    assert resolve_split(None, ["a", "b", "c"], repeated=["b"]) == {
        "train": ["a", "c"], "validation": [], "test": ["b"]}
    assert resolve_split(None, ["a", "b"]) == {"train": ["a"], "validation": [], "test": ["b"]}
    with pytest.raises(ValueError, match="in both"):
        resolve_split({"train": ["a"], "test": ["a"]}, ["a", "b"])
    with pytest.raises(ValueError, match="split keys"):
        resolve_split({"dev": ["a"]}, ["a"])
