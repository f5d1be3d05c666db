"""``sk-braintune evaluate`` goes through the one evaluation API (same as the demo)."""

import warnings

import numpy as np
import pytest

from sk_braintune.testing.lebel import make_miniature_lebel2023
from sk_braintune.testing.models import make_tiny_model


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds003020")
    make_miniature_lebel2023(root, n_trs=40, n_voxels=12, nan_voxels=0, stereo=False,
                             sample_rate=16000)
    return root


@pytest.mark.slow
def test_evaluate_torch_ridge_and_the_demos_four_low_level_kinds(miniature, tmp_path,
                                                                 monkeypatch):
    pytest.importorskip("torch")
    from sk_braintune import evaluation, realdata
    from sk_braintune.encoding import RidgeEncoder
    from sk_braintune.features import lowlevel

    backends, kinds = [], []
    fit, features = RidgeEncoder.fit, lowlevel.lowlevel_features

    def spy_fit(self, X, y, groups=None):
        backends.append(self.backend)
        return fit(self, X, y, groups=groups)

    def spy_features(dataset, kind="phoneme", *args, **kwargs):
        kinds.append(kind)
        return features(dataset, kind, *args, **kwargs)

    monkeypatch.setattr(RidgeEncoder, "fit", spy_fit)
    monkeypatch.setattr(lowlevel, "lowlevel_features", spy_features)
    model = make_tiny_model("wav2vec2", tmp_path / "w2v")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = realdata.run_evaluate({
            "root": str(miniature), "subject": "UTS01", "model": model, "window": 2.0,
            "layers": "0,2", "output": str(tmp_path / "eval"), "quiet": True, "device": "cpu",
            "ridge_backend": "torch"})
    # the ridges of the encoding fits run on torch (the residualiser's own ridge stays numpy)
    assert backends.count("torch") == 2 + 2  # 2 layers + low-level raw and residual fits
    assert kinds == list(evaluation.LOW_LEVEL_KINDS)
    impact = results["low_level_impact"]
    assert impact and all({"A", "A_resid", "impact_percent"} <= set(v) for v in impact.values())
    assert all(np.isfinite(v["A"]) for v in impact.values())
