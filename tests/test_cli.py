"""The command line: the demo's quick run end to end, real-data commands on a miniature
ds003020 copy, and the error messages users see."""

import json
import math
import warnings

import numpy as np
import pytest

from sk_braintune import cli, study
from sk_braintune.testing.lebel import make_miniature_lebel2023
from sk_braintune.testing.models import make_tiny_model


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds003020")
    make_miniature_lebel2023(root, n_trs=40, n_voxels=12, nan_voxels=0, stereo=False,
                             sample_rate=16000)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model("wav2vec2", tmp_path_factory.mktemp("models") / "w2v")


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "tune", "evaluate", "dataset"):
        assert command in out


def test_demo_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--output", "--quick", "--seed", "--config"):
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["tune", "--subject", "UTS01", "--model", "m"], "--root is required"),
    (["tune", "--root", "/nonexistent/ds003020", "--subject", "UTS01", "--model", "m"],
     "does not exist"),
])
def test_cli_input_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_participant(miniature, tiny_model, capsys):
    status = cli.main(["evaluate", "--root", str(miniature), "--subject", "UTS07",
                       "--model", str(tiny_model), "--output", "unused"])
    assert status == 2
    err = capsys.readouterr().err
    assert "UTS07" in err and "UTS01" in err  # names the missing one and the available ones


def test_model_path_that_does_not_exist(miniature, tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    status = cli.main(["tune", "--root", str(miniature), "--subject", "UTS01",
                       "--model", str(missing), "--output", str(tmp_path / "out")])
    assert status == 2
    assert "no_such_model" in capsys.readouterr().err


def test_bad_layers_option(miniature, tiny_model, capsys):
    status = cli.main(["evaluate", "--root", str(miniature), "--subject", "UTS01",
                       "--model", str(tiny_model), "--layers", "last", "--output", "unused"])
    assert status == 2
    assert "--layers" in capsys.readouterr().err


def test_config_file_unknown_key(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('seed = 3\nnot_an_option = 1\n')
    with pytest.raises(SystemExit, match="not_an_option"):
        cli.main(["demo", "--config", str(config)])


def test_config_file_and_flags_merge(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('seed = 3\nwindow = 4.0\n')
    args = cli.build_parser().parse_args(["tune", "--config", str(config), "--seed", "5"])
    resolved = cli.resolve_config(args)
    assert resolved["seed"] == 5 and resolved["window"] == 4.0


@pytest.mark.slow
def test_tune_then_evaluate_on_miniature(miniature, tiny_model, tmp_path):
    from transformers import AutoModel

    out = tmp_path / "tuned"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(["tune", "--root", str(miniature), "--subject", "UTS01",
                           "--model", str(tiny_model), "--output", str(out), "--epochs", "1",
                           "--window", "2", "--batch-size", "16", "--min-ceiling", "0",
                           "--quiet", "--device", "cpu"])
    assert status == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    AutoModel.from_pretrained(out / "backbone")  # loadable by any HF tool
    assert (out / "training_curves.png").stat().st_size > 0
    assert "subject" in (out / "config.toml").read_text()

    evaluation = tmp_path / "eval"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(["evaluate", "--root", str(miniature), "--subject", "UTS01",
                           "--model", str(out / "backbone"), "--output", str(evaluation),
                           "--window", "2", "--layers", "0,2", "--quiet", "--device", "cpu"])
    assert status == 0
    results = json.loads((evaluation / "evaluation.json").read_text())
    assert results["layer_indices"] == [0, 2]
    per_layer = np.load(evaluation / "normalized_r_per_layer.npy")
    n_layers = len(next(iter(results["layers"].values())))
    assert per_layer.shape[0] == n_layers
    # ROI means are the nan-means of the saved per-voxel scores
    roi = next(iter(results["layers"]))
    np.testing.assert_allclose(results["layers"][roi], np.nanmean(per_layer, axis=1),
                               rtol=1e-6)


@pytest.mark.slow
@pytest.mark.demo
def test_demo_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("espeakng_loader")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "brain-tuned" in printed and "random-fMRI" in printed and "sem_last" in printed
    results = json.loads((out / "results.json").read_text())
    rows = {row["model"]: row for row in results["table"]}
    assert set(rows) == set(study.MODEL_NAMES)
    for row in rows.values():
        for key, value in row.items():
            if key == "model":
                continue
            assert math.isfinite(value), key
            if key.startswith(("sem_last", "sem_best", "aud_", "mix_")):
                assert -1.5 <= value <= 1.5, key  # normalised r
            if key.startswith("probe"):
                assert 0.0 <= value <= 1.0, key
            if key.startswith("sem_pref"):
                assert -2.0 <= value <= 2.0, key
    # the pretrained and tuned models share every layer but the last
    layers = results["layers"]
    np.testing.assert_allclose(layers["pretrained"]["semantic"][:-1],
                               layers["brain-tuned"]["semantic"][:-1], atol=1e-5)
    assert (out / "results.csv").read_text().startswith("model,")
    assert len(list(out.glob("*.png"))) >= 5
    assert "quick" in (out / "config.toml").read_text()


# ``evaluate`` goes through the one evaluation API, as the demo does
@pytest.mark.slow
def test_evaluate_torch_ridge_and_the_demos_four_low_level_kinds(miniature, tiny_model,
                                                                 tmp_path, monkeypatch):
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = realdata.run_evaluate({
            "root": str(miniature), "subject": "UTS01", "model": str(tiny_model), "window": 2.0,
            "layers": "0,2", "output": str(tmp_path / "eval"), "quiet": True, "device": "cpu",
            "ridge_backend": "torch"})
    # the ridges of the encoding fits run on torch (the residualiser's own ridge stays numpy)
    assert backends.count("torch") == 2 + 2  # 2 layers + low-level raw and residual fits
    assert kinds == list(evaluation.LOW_LEVEL_KINDS)
    impact = results["low_level_impact"]
    assert impact and all({"A", "A_resid", "impact_percent"} <= set(v) for v in impact.values())
    assert all(np.isfinite(v["A"]) for v in impact.values())
