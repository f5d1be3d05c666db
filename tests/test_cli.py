"""The command line: the demo's quick run end to end, real-data commands on a miniature
ds003020 copy, and the error messages users see."""

import csv
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from sk_braintune import provenance
from sk_braintune.commands import cli, report
from sk_braintune import study
from sk_braintune.builtin import registry
from sk_braintune.commands.results import check_folder, results_folder
from sk_braintune.commands.settings import COMMAND_SETTINGS, TuneSettings
from sk_braintune.testing.browser import check_report, find_chromium
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
    for command in ("demo", "tune", "evaluate", "dataset", "compare"):
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


@pytest.mark.parametrize("command", ["evaluate", "tune"])
def test_bad_output_fails_before_any_work(command, miniature, tiny_model, tmp_path, capsys,
                                          monkeypatch):
    """A --output that cannot be written is one line and exit 2, before any data is loaded
    (``evaluate`` used to create its folder after all the work); a folder that is not a
    results folder is never replaced."""
    from sk_braintune.commands import realdata

    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded before the output folder was checked")

    monkeypatch.setattr(realdata, "load_dataset", no_loading)
    afile = tmp_path / "afile"
    afile.write_text("x")
    others = tmp_path / "others"
    others.mkdir()
    (others / "notes.txt").write_text("keep")
    for output, words in ((afile / "out", "cannot write results next to"),
                          (afile, "exists and is not a folder"),
                          (others, "not a results folder")):
        status = cli.main([command, "--root", str(miniature), "--subject", "UTS01",
                           "--model", str(tiny_model), "--output", str(output), "--quiet"])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(f"sk-braintune {command}: error: ") and words in err, err
    assert (others / "notes.txt").read_text() == "keep" and sorted(os.listdir(tmp_path)) == [
        "afile", "others"]


def test_bad_layers_option(miniature, tiny_model, capsys):
    status = cli.main(["evaluate", "--root", str(miniature), "--subject", "UTS01",
                       "--model", str(tiny_model), "--layers", "last", "--output", "unused"])
    assert status == 2
    assert "--layers" in capsys.readouterr().err


def test_config_file_unknown_key(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('seed = 3\nnot_an_option = 1\n')
    assert cli.main(["demo", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "not_an_option" in err and "Traceback" not in err


def test_config_file_misspelt_key_gets_a_hint(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('min_celing = 0.2\n')
    assert cli.main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'min_celing'" in err and "did you mean 'min_ceiling'?" in err
    assert len(err.splitlines()) == 1 and str(config) in err


@pytest.mark.parametrize("command, line, words", [
    ("demo", 'seed = "three"', ["'seed'", "an integer", "'three'", "(str)"]),
    ("tune", 'min_ceiling = "0"', ["'min_ceiling'", "a number", "'0'", "(str)"]),
    ("tune", "epochs = 2.5", ["'epochs'", "an integer >= 1", "2.5", "(float)"]),
    ("tune", "epochs = 0", ["'epochs'", "an integer >= 1", "got 0"]),
    ("demo", "quick = 1", ["'quick'", "true or false", "(int)"]),
    ("demo", 'controls = ["shuffled"]', ["'controls'", "'block-permuted', 'other-story'",
                                         "'shuffled'"]),
    ("evaluate", 'executor = "cluster"', ["'executor'", "'none', 'local', 'slurm'",
                                          "'cluster'"]),
    ("evaluate", "subject = [1, 2]", ["'subject'", "a list of strings", "(list)"]),
])
def test_config_file_value_of_the_wrong_type(tmp_path, capsys, command, line, words):
    config = tmp_path / "run.toml"
    config.write_text(line + "\n")
    assert cli.main([command, "--config", str(config), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


def test_config_file_that_is_missing_or_not_toml(tmp_path, capsys):
    assert cli.main(["demo", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("seed = \n")
    assert cli.main(["demo", "--config", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_config_file_and_flags_merge(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('seed = 3\nwindow = 4.0\n')
    args = cli.build_parser().parse_args(["tune", "--config", str(config), "--seed", "5"])
    resolved = cli.resolve_config(args)
    assert resolved.seed == 5 and resolved.window == 4.0
    assert isinstance(resolved, TuneSettings) and resolved.window == 4.0
    # what neither gives comes from the settings' defaults
    assert resolved.min_ceiling == TuneSettings().min_ceiling == 0.4


@pytest.mark.parametrize("command", ["demo", "tune", "evaluate", "dataset"])
def test_parser_defaults_are_the_settings_defaults(command, capsys):
    """No flag, no file: exactly the settings' defaults; --help shows them."""
    settings_cls = COMMAND_SETTINGS[command]
    resolved = cli.resolve_config(cli.build_parser().parse_args([command]))
    assert resolved == settings_cls()
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # wrapped at "-"
    defaults = settings_cls()
    for name, field in settings_cls.model_fields.items():
        value = getattr(defaults, name)
        if (value is None or isinstance(value, bool)
                or (field.json_schema_extra or {}).get("command_line") is False):
            continue
        text = (" ".join(map(str, value)) if isinstance(value, tuple)
                else f"{value:g}" if isinstance(value, float) else str(value))
        assert f"(default: {text})" in help_text, name


def test_min_ceiling_zero_is_kept(tmp_path):
    """--min-ceiling 0 used to become 0.4 (``config.get(...) or 0.4``)."""
    args = cli.build_parser().parse_args(["tune", "--min-ceiling", "0"])
    assert cli.resolve_config(args).min_ceiling == 0.0
    config = tmp_path / "run.toml"
    config.write_text("min_ceiling = 0\n")
    args = cli.build_parser().parse_args(["tune", "--config", str(config)])
    assert cli.resolve_config(args).min_ceiling == 0.0


def test_several_subjects_and_executor_options():
    args = cli.build_parser().parse_args([
        "tune", "--subject", "UTS01", "UTS02", "UTS03", "--executor", "slurm",
        "--slurm-partition", "gpu", "--gpus", "1", "--time", "240", "--mem", "64"])
    settings = cli.resolve_config(args)
    assert settings.subject == ("UTS01", "UTS02", "UTS03")
    assert settings.executor == "slurm"
    assert settings.slurm_options() == {"slurm_partition": "gpu", "gpus": 1, "time_min": 240,
                                        "mem_gb": 64}
    # one subject from a config file is a list of one
    single = TuneSettings.from_mapping({"subject": "UTS02"})
    assert single.subject == ("UTS02",)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["evaluate", "--executor", "cluster"])


@pytest.mark.slow
def test_tune_min_ceiling_zero_keeps_low_ceiling_voxels(tiny_model, tmp_path):
    """``--min-ceiling 0`` used to select like 0.4 (``config.get(...) or 0.4``)."""
    from sk_braintune.datasets import load_lebel2023

    root = make_miniature_lebel2023(tmp_path / "ds", n_trs=40, n_voxels=24, nan_voxels=0,
                                    stereo=False, sample_rate=16000, noise_sd=(0.3, 6.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nc = np.asarray(load_lebel2023(root, "UTS01").noise_ceiling)
    assert np.any((nc > 0) & (nc <= 0.4))  # the two thresholds select differently here
    for threshold in ("0", "0.4"):
        out = tmp_path / f"tuned_{threshold}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert cli.main(["tune", "--root", str(root), "--subject", "UTS01", "--model",
                             str(tiny_model), "--output", str(out), "--epochs", "1",
                             "--window", "2", "--batch-size", "16", "--min-ceiling", threshold,
                             "--quiet", "--device", "cpu"]) == 0
        np.testing.assert_array_equal(np.load(out / "selected_voxels.npy"),
                                      np.flatnonzero(nc > float(threshold)))


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
    # --min-ceiling 0 keeps every voxel with a positive noise ceiling (it used to mean 0.4)
    from sk_braintune.datasets import load_lebel2023

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_lebel2023(miniature, "UTS01")
    nc = np.asarray(data.noise_ceiling)
    np.testing.assert_array_equal(np.load(out / "selected_voxels.npy"), np.flatnonzero(nc > 0))
    _check_manifest(out, "tune", data, model=tiny_model)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["voxels"]["tuning_targets"]["count"] == int(np.sum(nc > 0))
    assert manifest["models"]["tuned"] == provenance.fingerprint_model(out / "backbone")
    assert manifest["settings"]["min_ceiling"] == 0.0
    assert manifest["command_line"][:2] == ["sk-braintune", "tune"]

    evaluation = tmp_path / "eval"
    mapper = _toy_mapper(len(nc), "UTS01").save(tmp_path / "UTS01_mapper.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(["evaluate", "--root", str(miniature), "--subject", "UTS01",
                           "--model", str(out / "backbone"), "--output", str(evaluation),
                           "--window", "2", "--layers", "0,2", "--quiet", "--device", "cpu",
                           "--mapper", str(mapper)])
    assert status == 0
    # the last layer on the subject's flatmap (the mapper given), listed in the manifest
    assert "brainmap_UTS01.png" in json.loads((evaluation / "manifest.json").read_text())[
        "files"]
    results = json.loads((evaluation / "evaluation.json").read_text())
    assert results["layer_indices"] == [0, 2]
    per_layer = np.load(evaluation / "normalized_r_per_layer.npy")
    n_layers = len(next(iter(results["layers"].values())))
    assert per_layer.shape[0] == n_layers
    # ROI means are the nan-means of the saved per-voxel scores
    roi = next(iter(results["layers"]))
    np.testing.assert_allclose(results["layers"][roi], np.nanmean(per_layer, axis=1),
                               rtol=1e-6)
    _check_manifest(evaluation, "evaluate", data)
    rows = list(csv.DictReader(open(evaluation / "results.csv")))
    assert [row["participant"] for row in rows] == ["UTS01"] * len(results["layers"])
    for row in rows:
        np.testing.assert_allclose([float(row["layer_0"]), float(row["layer_2"])],
                                   results["layers"][row["roi"]], rtol=1e-6)
    summary = list(csv.DictReader(open(evaluation / "roi_summary.csv")))
    assert {row["roi"] for row in summary} == set(results["layers"])
    # the second low-level estimate and the significance of the last layer
    partitions = results["variance_partitioning"]
    assert set(partitions) == set(results["layers"])
    for entry in partitions.values():
        assert entry["unique_model"] >= 0 and entry["unique_lowlevel"] >= 0
        assert entry["shared"] >= 0
        assert math.isnan(entry["shared_fraction"]) or 0 <= entry["shared_fraction"] <= 1
    assert results["participants"]["UTS01"]["variance_partitioning"] == partitions
    scores = np.load(evaluation / "voxel_scores.npz")
    p_values, q_values = scores["UTS01_p_values"], scores["UTS01_q_values"]
    assert p_values.shape == q_values.shape == (per_layer.shape[1],)
    assert np.all((p_values >= 1 / 1001) & (p_values <= 1)) and np.all(q_values >= p_values)
    labels = np.asarray(data.voxel_labels)
    for roi, entry in results["significance"].items():
        assert entry["n_voxels"] == np.sum(labels == roi)
        assert entry["n_significant"] == np.sum((q_values <= 0.05) & (labels == roi))
        # the interval's centre is the ROI mean of the last layer's saved normalised r
        np.testing.assert_allclose(entry["mean"], results["layers"][roi][-1], rtol=1e-5)
        assert entry["low"] <= entry["mean"] <= entry["high"]


def _toy_mapper(n_voxels, subject):
    """A 6 x 5 flatmap whose 24 inside pixels each see one voxel."""
    from scipy import sparse

    from sk_braintune.plotting import Mapper

    mask = np.zeros((6, 5), dtype=bool)
    mask[1:5, :] = True
    dense = np.zeros((int(mask.sum()), n_voxels))
    dense[np.arange(len(dense)), np.arange(len(dense)) % n_voxels] = 1.0
    return Mapper(voxel_to_flatmap=sparse.csr_matrix(dense), flatmap_mask=mask,
                  extents=np.array([0.0, 6.0, 0.0, 5.0]), subject=subject)


def _check_manifest(folder, command, data, model=None):
    """manifest.json names versions, settings, split and fingerprints; report.html renders."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"] == command
    for key in ("sk_braintune", "torch", "transformers", "numpy", "scikit-learn", "python"):
        assert manifest["versions"][key]
    assert manifest["started"] <= manifest["finished"]
    assert manifest["split"]["test"] == list(data.split["test"])
    fingerprints = (manifest["data"] if command == "tune" else manifest["data"]["UTS01"])
    assert fingerprints["responses"] == provenance.fingerprint_arrays(
        {s: data.responses[s] for s in _fingerprinted_stories(command, data)})
    if model is not None:
        assert manifest["models"]["pretrained"] == provenance.fingerprint_model(model)
    assert (folder / "report.html").stat().st_size > 0
    check_folder(folder)
    assert not list(folder.parent.glob(f".{folder.name}.partial-*"))
    if find_chromium() is not None:
        rendered = check_report(folder)
        assert rendered["summary"] and all(image["caption"] for image in rendered["images"])
        if command == "evaluate":
            assert {"results", "table-roi-summary-across-participants",
                    "table-last-layer-variance-partitioning-and-significance"} <= set(
                rendered["tables"])
            maps = [image for image in rendered["images"]
                    if image["section"] == "Brain maps (last layer)"]
            assert [image["file"] for image in maps] == ["brainmap_UTS01.png"]
            assert "UTS01's flatmap" in maps[0]["caption"]


def _fingerprinted_stories(command, data):
    split = data.split
    if command == "tune":
        return list(split["train"]) + list(split["validation"])
    return list(split["train"]) + list(split["validation"]) + list(split["test"])


@pytest.mark.slow
@pytest.mark.demo
def test_demo_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("espeakng_loader")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "brain-tuned" in printed and "random-fMRI" in printed and "sem_last" in printed
    results = json.loads((out / "results.json").read_text())
    # both model families, each a study of its own on the same data, two listeners
    labels = [registry.model_label(m) for m in ("ssl", "whisper-tiny.en")]
    assert results["models"] == ["ssl", "whisper-tiny.en"] and f"\n{labels[0]}\n" in printed
    rows = {(row["family"], row["model"]): row for row in results["table"]}
    assert set(rows) == {(f, m) for f in labels for m in study.MODEL_NAMES}
    families = results["families"]
    for family in families.values():
        assert family["participants"] == ["P01", "P02"]
        per = family["per_participant"]
        # the table is the listeners' mean, each listener fitted on its own responses
        for roi in ("semantic", "auditory"):
            np.testing.assert_allclose(
                family["layers"]["brain-tuned"][roi],
                np.mean([per[p]["layers"]["brain-tuned"][roi] for p in per], axis=0))
        assert (per["P01"]["layers"]["pretrained"]["semantic"]
                != per["P02"]["layers"]["pretrained"]["semantic"])
    for row in rows.values():
        for key, value in row.items():
            if key in ("model", "family"):
                continue
            assert math.isfinite(value), key
            if key.startswith(("sem_last", "sem_best", "aud_", "mix_")):
                assert -1.5 <= value <= 1.5, key  # normalised r
            if key.startswith("probe"):
                assert 0.0 <= value <= 1.0, key
            if key.startswith("sem_pref"):
                assert -2.0 <= value <= 2.0, key
    # the pretrained and tuned models share every layer but the last
    for family in families.values():
        layers = family["layers"]
        np.testing.assert_allclose(layers["pretrained"]["semantic"][:-1],
                                   layers["brain-tuned"]["semantic"][:-1], atol=1e-5)
    assert (out / "results.csv").read_text().startswith("family,model,")
    for family in families.values():
        folders = {Path(f).parent for f in family["figures"]}
        assert len(folders) == 1 and folders.pop().parent == out
        assert len(family["figures"]) >= 5 and all(Path(f).exists() for f in family["figures"])
    assert "quick" in (out / "config.toml").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["study"]["window"] == study.demo_settings(quick=True).window
    assert (manifest["voxels"]["tuning_targets"]["count"]
            == families["ssl"]["n_tuning_targets"])
    assert set(manifest["models"]) == {f"{f}/{m}" for f in results["models"]
                                       for m in ("pretrained", *study.MODEL_NAMES[1:])}
    # every stage timed, per family
    assert all(k.startswith(tuple(f"{label}: " for label in labels))
               for k in results["stage_seconds"])
    check_folder(out)  # sealed: every file listed in the manifest with its hash
    assert (out / "significance.csv").read_text().startswith("family,model,")
    # each family's brain maps of the last layer (listener P01 on fsaverage5), in the folder
    # and in the manifest's file list; one interactive page each
    listed = set(json.loads((out / "manifest.json").read_text())["files"])
    scores = np.load(out / "voxel_scores.npz")
    for label, family in zip(labels, families.values()):
        maps = family["brain_maps"]
        assert [Path(m["figure"]).name for m in maps] == [
            "brainmap_pretrained.png", "brainmap_brain_tuned_minus_pretrained.png",
            "brainmap_brain_tuned_minus_random_fmri.png"]
        assert [m["interactive"] is not None for m in maps] == [False, True, False]
        for m in maps:
            assert m["figure"] in family["figures"] and "Listener P01" in m["caption"]
            for path in filter(None, (m["figure"], m["interactive"])):
                assert Path(path).relative_to(out).as_posix() in listed
        # the arrays the maps draw are saved: P01's last layer at P01's places
        prefix = Path(family["figures"][0]).parent.name  # the family's folder name
        assert scores[f"{prefix}__P01_column_index"].shape == (len(family["voxel_labels"]),)
        for name in study.MODEL_NAMES:
            key = f"{prefix}__P01_{name.replace('-', '_')}_last_layer"
            assert scores[key].shape == scores[f"{prefix}__P01_column_index"].shape
    if find_chromium() is not None:
        rendered = check_report(out)
        assert len(rendered["images"]) == len(results["figures"])
        assert sum(image["link"] is not None for image in rendered["images"]) == len(labels)
        # the page is grouped by model family: a heading each, its figures captioned with it
        assert [s["heading"] for s in rendered["sections"]] == ["Results", *labels]
        for image in rendered["images"]:
            assert image["section"] in labels
            assert image["caption"].startswith(f"{image['section']}: ")
        assert {"results", "table-second-estimate-and-significance-last-layer"} <= set(
            rendered["tables"])  # every table the demo prints
        assert labels[0] in rendered["summary"] and labels[1] in rendered["summary"]


def test_compare_two_results(tmp_path, capsys):
    first = report.build_manifest("tune", TuneSettings(seed=0), started="t0",
                                  data={"responses": "blake2b:aa"})
    second = json.loads(json.dumps(first))
    second["data"]["responses"] = "blake2b:bb"
    second["finished"] = "later"  # times never count
    for name, manifest in (("a", first), ("b", second), ("c", first)):
        with results_folder(tmp_path / name) as folder:  # sealed: its files listed
            report.write_manifest(manifest, folder)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 0
    assert "agree" in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "manifest.json")]) == 1
    out = capsys.readouterr().out
    assert "data.responses: 'blake2b:aa' != 'blake2b:bb'" in out and "1 difference" in out
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_participants(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds003020_two")
    make_miniature_lebel2023(root, subjects=("UTS01", "UTS02"), n_trs=40, n_voxels=12,
                             nan_voxels=0, stereo=False, sample_rate=16000)
    return root


def _evaluate(root, model, out, *subjects, extra=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli.main(["evaluate", "--root", str(root), "--subject", *subjects,
                         "--model", str(model), "--output", str(out), "--window", "2",
                         "--layers", "0,2", "--quiet", "--device", "cpu", *extra])


@pytest.mark.slow
def test_evaluate_each_participant(two_participants, tiny_model, tmp_path):
    """One model, two participants: a row per participant and ROI, each as if run alone."""
    assert _evaluate(two_participants, tiny_model, tmp_path / "both", "UTS01", "UTS02") == 0
    assert _evaluate(two_participants, tiny_model, tmp_path / "alone", "UTS02") == 0
    both = list(csv.DictReader(open(tmp_path / "both" / "results.csv")))
    alone = list(csv.DictReader(open(tmp_path / "alone" / "results.csv")))
    assert {row["participant"] for row in both} == {"UTS01", "UTS02"}
    assert [row for row in both if row["participant"] == "UTS02"] == alone
    # the two participants' responses differ, so their scores do
    first = [row for row in both if row["participant"] == "UTS01"]
    assert [row["layer_0"] for row in first] != [row["layer_0"] for row in alone]
    # ROI summary: mean and s.e.m. over participants of each row's best layer score
    summary = {row["roi"]: row for row in csv.DictReader(open(tmp_path / "both" /
                                                             "roi_summary.csv"))}
    for roi, row in summary.items():
        best = np.array([float(r["best"]) for r in both if r["roi"] == roi])
        assert int(row["n_participants"]) == 2
        np.testing.assert_allclose(float(row["best_mean"]), best.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(row["best_sem"]), best.std(ddof=1) / np.sqrt(2),
                                   rtol=1e-12)
        layers = np.array([[float(r["layer_0"]), float(r["layer_2"])] for r in both
                           if r["roi"] == roi])
        np.testing.assert_allclose(best, layers.max(axis=1), rtol=1e-12)
    manifest = json.loads((tmp_path / "both" / "manifest.json").read_text())
    assert manifest["participants"] == ["UTS01", "UTS02"]
    assert manifest["data"]["UTS01"]["responses"] != manifest["data"]["UTS02"]["responses"]
    assert manifest["data"]["UTS01"]["audio"] == manifest["data"]["UTS02"]["audio"]
    assert sorted(p.name for p in (tmp_path / "both").glob("alignment_*.png")) == [
        "alignment_UTS01.png", "alignment_UTS02.png"]
    if find_chromium() is not None:
        check_report(tmp_path / "both")


@pytest.mark.slow
def test_tune_on_several_participants(two_participants, tiny_model, tmp_path, capsys):
    out = tmp_path / "multi"
    argv = ["tune", "--root", str(two_participants), "--subject", "UTS01", "UTS02",
            "--model", str(tiny_model), "--output", str(out), "--epochs", "1", "--window", "2",
            "--batch-size", "16", "--min-ceiling", "0.5", "--quiet", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(argv)
    assert status == 0
    from sk_braintune.datasets import load_lebel2023

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_lebel2023(two_participants, ["UTS01", "UTS02"])
    mean_ceiling = np.mean([data.participant_data[p].noise_ceiling for p in ("UTS01", "UTS02")],
                           axis=0)
    np.testing.assert_array_equal(np.load(out / "selected_voxels.npy"),
                                  np.flatnonzero(mean_ceiling > 0.5))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["participants"] == ["UTS01", "UTS02"]
    assert {"responses/UTS01", "responses/UTS02"} <= set(manifest["data"])


@pytest.mark.slow
def test_executor_local_gives_the_in_process_results(two_participants, tiny_model, tmp_path,
                                                     monkeypatch):
    pytest.importorskip("submitit")
    try:
        from sk_braintune import executors  # noqa: F401
    except ImportError:
        # without sk_braintune.executors: a clear error, no traceback
        assert _evaluate(two_participants, tiny_model, tmp_path / "x", "UTS01",
                         extra=("--executor", "local")) == 2
        return
    from pathlib import Path

    # the job subprocesses import this copy of the package
    monkeypatch.setenv("PYTHONPATH", str(Path(cli.__file__).resolve().parent.parent))
    assert _evaluate(two_participants, tiny_model, tmp_path / "here", "UTS01", "UTS02") == 0
    assert _evaluate(two_participants, tiny_model, tmp_path / "jobs", "UTS01", "UTS02",
                     extra=("--executor", "local")) == 0
    here = (tmp_path / "here" / "results.csv").read_text()
    assert (tmp_path / "jobs" / "results.csv").read_text() == here
    assert (tmp_path / "jobs" / "jobs" / "evaluate").is_dir()  # submitit's logs and pickles


def test_demo_config_with_a_study_table(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("quick = true\n\n[study]\nwindow = 6.0\n\n[study.tuner]\nlr_head = 0.01\n")
    settings = cli.resolve_config(cli.build_parser().parse_args(["demo", "--config",
                                                                 str(config)]))
    assert settings.study_settings().tuner.lr_head == 0.01
    assert settings.study_settings().window == 6.0
    config.write_text("[study.tuner]\nlr_head = \"fast\"\n")
    assert cli.main(["demo", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{config}: setting 'study.tuner.lr_head' must be a number > 0, got "
                        "'fast' (str)")


# ``evaluate`` goes through the one evaluation API, as the demo does
@pytest.mark.slow
def test_evaluate_torch_ridge_and_the_demos_four_low_level_kinds(miniature, tiny_model,
                                                                 tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from sk_braintune.evaluation import lowlevel as evaluation
    from sk_braintune.commands import evaluate
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
        results = evaluate.run_evaluate({
            "root": str(miniature), "subject": "UTS01", "model": str(tiny_model), "window": 2.0,
            "layers": "0,2", "output": str(tmp_path / "eval"), "quiet": True, "device": "cpu",
            "ridge_backend": "torch"})
    # the ridges of the encoding fits run on torch (the residualiser's own ridge stays numpy)
    # 2 layers + low-level raw and residual fits + the partitioning's two single-space ridges
    assert backends.count("torch") == 2 + 2 + 2
    assert kinds == list(evaluation.LOW_LEVEL_KINDS)
    impact = results["low_level_impact"]
    assert impact and all({"A", "A_resid", "impact_percent"} <= set(v) for v in impact.values())
    assert all(np.isfinite(v["A"]) for v in impact.values())
