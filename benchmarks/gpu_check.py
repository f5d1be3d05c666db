"""One-call GPU check of sk_braintune, with the paper-dose brain-tuning study.

A GPU machine is lent for a few minutes, with no network, its own Python and packages, and at
most 64 MiB carried from here. So the work is split in two:

``--bundle DIR`` (here, with the ``demo`` extra and pip's index) writes everything the GPU
machine needs beside the source tree, at most 60 MiB: the self-supervised model made here and
Whisper tiny.en's encoder (float16 where that is exact: every Whisper weight and every SSL
weight but its float32 position table), the espeak-ng wheel for the device's Python (the story
audio is rebuilt there exactly), the simulated listeners' semantic inputs in compact form (the
rank-``n_semantic_dims`` part of the MiniLM context embeddings, the only part the simulator
reads), and per seed a checksum of the simulated responses (exact SHA-256s and a random-projection
sketch compared to 1e-3).

``--run DIR --out OUT`` (there) runs five stages; each writes ``OUT/gpu_<stage>.json`` as soon as
it ends, so a run that is cut off keeps what it did:

a. ``environment``: versions, GPU, the bundle's integrity, a bf16 matrix product and a
   device-to-device copy (the ceilings the other figures are read against);
b. ``tuner``: :class:`~sk_braintune.BrainTuner` on CUDA: bf16 autocast (seen in the dtype of a
   block's output), gradient checkpointing (each block runs twice per training batch), pinned
   host buffers (cached top-block path), and one ``torchrun`` DDP step over two processes equal to
   the one-process step;
c. ``throughput``: a base-size wav2vec2 configuration (random weights), 10 s windows, batch 128,
   bf16 and fp32: windows/s, peak memory, MFU against the chip's bf16 peak, and the same step
   written bare in PyTorch (the overhead ratio);
d. ``ridge``: :class:`~sk_braintune.encoding.RidgeEncoder` at 90,000 voxels on the GPU and on the
   machine's CPUs, with their agreement;
e. ``study``: the paper-dose study of ``docs/semantic_design.rst`` ("Paper-dose study (GPU)"):
   whole encoder tuned (CNN frozen), up to 30 epochs with early stopping, all 207 training minutes,
   for the self-supervised model and Whisper tiny.en, seeds in turn while the budget lasts, each
   seed's rows written as they finish; the paired tests once two seeds are in.

``--smoke`` runs every stage at tiny size on the CPU (tiny random models, 40-word stories); the
test suite runs it (``tests/test_gpu_check.py``).

Usage::

    python benchmarks/gpu_check.py --bundle .gpu_bundle     # here; --seeds 0 1 2 3 4 5 by default
    # (git ignores .gpu_bundle: name it among the paths carried to the GPU machine)
    # on the GPU machine, from the repository root, carrying .gpu_bundle (time limit ~420 s):
    PYTHONUNBUFFERED=1 PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --run .gpu_bundle \\
        --out $OUT --budget-s 330 --cache /tmp/skbt_cache
    # a second call on the warm machine goes on with the next seeds (same --cache):
    ... --run .gpu_bundle --out $OUT --stages study --seeds 1 2 --budget-s 240 --cache ...
    python benchmarks/gpu_check.py --merge-study a/gpu_study.json b/gpu_study.json \\
        --out gpu_study.json

    python benchmarks/gpu_check.py --bundle /tmp/b --smoke && \\
        python benchmarks/gpu_check.py --run /tmp/b --out /tmp/o --smoke

``--stages`` runs a subset; ``--seeds`` the study's seeds (in the design's order); ``--cache``
the folder the run writes models, speech and datasets to (a fresh temporary one by default).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # study_braintuning, bench_tuner, bench_ridge (this folder)

SR = 16_000
STAGES = ("environment", "tuner", "throughput", "ridge", "study")
FAMILIES = ("ssl", "whisper-tiny.en")  # the primary hypothesis's family first
BUNDLE_LIMIT_BYTES = 60 * 2 ** 20
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64", "manylinux1_x86_64")
# Packages the GPU machines' image already holds (the device notes' package list; those the
# toolkit uses): no wheel is carried for them. nilearn is missing there but only the brain maps
# import it, which the check never draws. typing-extensions is there too, but pydantic needs a
# recent one, so it travels with pydantic.
DEVICE_IMAGE = {
    "numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl", "torch", "transformers",
    "safetensors", "tokenizers", "huggingface-hub", "h5py", "filelock", "tqdm", "matplotlib",
    "pandas", "packaging", "pyyaml", "regex", "requests", "fsspec", "jinja2", "networkx", "sympy",
    "pillow", "psutil", "six", "python-dateutil", "pyparsing", "contourpy",
    "cycler", "fonttools", "kiwisolver", "nilearn"}
DEMO_WHEELS = ("espeakng-loader",)  # the demo extra's part the study needs on the device
SKETCH_SIZE = 4
SKETCH_SEED = 20261206
SKETCH_TOLERANCE = 1e-3
# dense bf16 matrix rate of the datasheets (TFLOP/s), by a substring of the device name
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0))

# The paper-dose design (docs/semantic_design.rst, "Paper-dose study (GPU)") and its tiny CPU
# version. The dataset, the held-out stories per seed, the ridge protocol and the endpoint are
# the pre-registered study's (benchmarks/study_braintuning.py); what changes is the dose.
DOSES = {
    "paper": dict(
        seeds=(0, 1, 2, 3, 4, 5), minutes=None, max_words=None, context_words=20, window=8.0,
        controls=("block-permuted", "phase-randomized"),
        tuner=dict(trainable_layers=None, max_epochs=30, batch_size=128, lr_backbone=5e-5,
                   lr_head=1e-4, patience=2),
        ridge_cv=5, min_seconds_left=60),
    "smoke": dict(
        seeds=(0, 1), minutes=1.0, max_words=40, context_words=3, window=2.0,
        controls=("block-permuted", "phase-randomized"),
        tuner=dict(trainable_layers=None, max_epochs=2, batch_size=8, lr_backbone=1e-3,
                   lr_head=1e-2, patience=1),
        ridge_cv=2, min_seconds_left=0),
}


def log(message):
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_json(path, data):
    """Write ``data`` as JSON atomically (a file cut off mid-write is never left behind)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return str(value)


def sha256_file(path, block=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise(name):
    return name.lower().replace("_", "-")


# ------------------------------------------------------------------------------------------
# The study's settings at each dose (shared by the bundle and the run)
# ------------------------------------------------------------------------------------------

def dose_settings(seed, model, dose):
    """The study's settings for one seed and model: the pre-registered design at ``dose``.

    Built by ``study_braintuning.study_settings`` (the pre-registered study's held-out stories
    by seed, library stories, the controls), then the dose: one listener, all training minutes,
    the whole encoder tuned with the CNN frozen, the ridge on the GPU.

    Parameters
    ----------
    seed : int
    model : str
        ``"ssl"``, ``"whisper-tiny.en"`` or a model directory.
    dose : dict
        An entry of :data:`DOSES`.

    Returns
    -------
    settings : DemoSettings
    """
    from study_braintuning import study_settings

    args = argparse.Namespace(epochs=dose["tuner"]["max_epochs"], window=dose["window"],
                              controls=list(dose["controls"]), fixed_stories=False, model=model,
                              stories="library", minutes=dose["minutes"],
                              context_words=dose["context_words"])
    return study_settings(args, seed).with_overrides({
        "dataset": {"n_participants": 1, "max_words": dose["max_words"]},
        "tuner": dose["tuner"], "ridge_backend": "torch", "ridge_cv": dose["ridge_cv"]})


def dataset_kwargs(settings):
    """Keyword arguments of ``make_story_dataset`` exactly as the study passes them."""
    return settings.dataset.model_dump(exclude_none=True)


def build_dataset(settings, seed):
    from sk_braintune.builtin import make_story_dataset

    return make_story_dataset(random_state=seed, **dataset_kwargs(settings))


# ------------------------------------------------------------------------------------------
# Fingerprints of the simulated responses
# ------------------------------------------------------------------------------------------

def dataset_fingerprint(data):
    """Exact hashes and a random-projection sketch of a dataset's audio and responses.

    The SHA-256s change with any bit (another BLAS can move the last bits of the simulator's
    SVD and matrix products); the sketch (``G_t.T @ responses @ G_v`` per story, fixed Gaussian
    ``G``) moves with the data only by as much as the data moved, so a relative difference below
    :data:`SKETCH_TOLERANCE` means the same responses.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        From ``make_story_dataset``.

    Returns
    -------
    fingerprint : dict
    """
    stories = sorted(data.stories)
    n_voxels = len(data.noise_ceiling)
    g_voxels = np.random.default_rng([SKETCH_SEED, n_voxels]).standard_normal(
        (n_voxels, SKETCH_SIZE))
    audio, responses, sketch = hashlib.sha256(), hashlib.sha256(), {}
    for name in stories:
        samples = np.round(np.asarray(data.audio[name], dtype=np.float64) * 32767.0)
        audio.update(samples.astype(np.int16).tobytes())
        r = np.ascontiguousarray(data.responses[name], dtype=np.float32)
        responses.update(r.tobytes())
        g_time = np.random.default_rng([SKETCH_SEED, len(r)]).standard_normal(
            (len(r), SKETCH_SIZE))
        sketch[name] = (g_time.T @ r.astype(np.float64) @ g_voxels).tolist()
    ceiling = np.asarray(data.noise_ceiling, dtype=np.float64)
    responses.update(ceiling.astype(np.float32).tobytes())
    sketch["noise_ceiling"] = [(ceiling @ g_voxels).tolist()]
    return {"stories": stories, "n_trs": {n: int(len(data.responses[n])) for n in stories},
            "audio_sha256": audio.hexdigest(), "responses_sha256": responses.hexdigest(),
            "sketch": sketch}


def compare_fingerprints(reference, fingerprint):
    """Whether a rebuilt dataset equals the reference (see :func:`dataset_fingerprint`).

    Returns
    -------
    comparison : dict
        ``match`` (same stories and sizes, sketch within tolerance), ``max_relative_difference``
        and ``audio_identical`` (the espeak-ng audio, bit for bit). The responses are not
        compared bit for bit: built from the compact semantic inputs they agree with the
        reference to float rounding (about 1e-7 here), not in every bit.
    """
    same_layout = (reference["stories"] == fingerprint["stories"]
                   and reference["n_trs"] == fingerprint["n_trs"])
    worst = math.inf
    if same_layout:
        worst = 0.0
        for key, ref in reference["sketch"].items():
            a, b = np.asarray(fingerprint["sketch"][key]), np.asarray(ref)
            worst = max(worst, float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)))
    return {"match": bool(same_layout and worst <= SKETCH_TOLERANCE),
            "same_stories_and_sizes": bool(same_layout),
            "max_relative_difference": worst, "tolerance": SKETCH_TOLERANCE,
            "audio_identical": reference["audio_sha256"] == fingerprint["audio_sha256"],
            "responses_sha256": fingerprint["responses_sha256"]}


# ------------------------------------------------------------------------------------------
# The listeners' semantic inputs in compact form
# ------------------------------------------------------------------------------------------

def context_cache_name(contexts):
    """File name under which ``make_story_dataset`` caches a story's MiniLM context embeddings.

    The simulator's own key (``sk_braintune.builtin.story``); the run blocks MiniLM, so a
    change of that key stops the run with a clear error instead of going unnoticed.
    """
    from sk_braintune._hashing import digest_bytes

    return f"contexts_{digest_bytes(chr(10).join(contexts), length=24)}.npy"


def semantic_inputs(data, context_words):
    """Per story, the cache file name and the latent semantic values at each word.

    The simulator reads the MiniLM embeddings ``E`` of a story's word contexts only through
    ``(E - mean) @ P`` (``P``: the top ``k`` principal axes over all stories, which it finds by
    an SVD, and their singular values). The rank-``k`` embeddings ``word_semantics @ P.T`` have
    the same top ``k`` axes and singular values and the same projections, so cached in place of
    ``E`` they give the same dataset (to float rounding) from ``k / 384`` of the data.
    """
    from sk_braintune.builtin.story_features import recent_word_contexts

    truth = data.ground_truth
    names = list(data.stories)
    latent = {n: np.asarray(truth["word_semantics"][n], dtype=np.float32) for n in names}
    files = [context_cache_name(recent_word_contexts(data.words[n]["label"], context_words))
             for n in names]
    for name, file in zip(names, files):
        if len(data.words[name]) != len(latent[name]):
            raise RuntimeError(f"story {name}: {len(data.words[name])} words but "
                               f"{len(latent[name])} latent rows")
    return {"names": np.array(names), "files": np.array(files),
            "projection": np.asarray(truth["semantic_projection"], dtype=np.float32),
            **{f"latent_{i}": latent[n] for i, n in enumerate(names)}}


def seed_embedding_cache(listeners_file, cache_root):
    """Write the rank-k context embeddings where ``make_story_dataset`` looks for them.

    Returns
    -------
    n_files : int
    """
    store = np.load(listeners_file)
    folder = Path(cache_root, "datasets", "minilm")
    folder.mkdir(parents=True, exist_ok=True)
    projection = store["projection"].astype(np.float64)
    for i, file in enumerate(store["files"]):
        embeddings = (store[f"latent_{i}"].astype(np.float64) @ projection.T).astype(np.float32)
        np.save(folder / str(file), embeddings)
    return len(store["files"])


@contextlib.contextmanager
def minilm_blocked():
    """Make any MiniLM call an error: the bundle's embeddings must cover every story."""
    from sk_braintune.builtin import minilm

    def refuse(texts, *args, **kwargs):
        raise RuntimeError(
            f"the bundle's semantic inputs do not cover these {len(texts)} word contexts "
            "(their cache key differs: other story texts, or a changed simulator cache "
            "format); rebuild the bundle with this source tree")

    original = minilm.embed_texts
    minilm.embed_texts = refuse
    try:
        yield
    finally:
        minilm.embed_texts = original


@contextlib.contextmanager
def scratch_cache():
    """A temporary cache root sharing the real one's speech and MiniLM caches.

    The reference datasets (one per seed, ~60 MB each for the library) are then not left in the
    user's cache, while synthesised speech and embeddings are reused.
    """
    from sk_braintune._utils import cache_dir

    real = cache_dir("datasets")
    previous = os.environ.get("SK_BRAINTUNE_CACHE")
    with tempfile.TemporaryDirectory(prefix="skbt_bundle_cache_") as root:
        Path(root, "datasets").mkdir()
        for part in ("speech", "minilm"):
            (real / part).mkdir(exist_ok=True)
            os.symlink(real / part, Path(root, "datasets", part))
        os.environ["SK_BRAINTUNE_CACHE"] = root
        try:
            yield root
        finally:
            if previous is None:
                os.environ.pop("SK_BRAINTUNE_CACHE", None)
            else:
                os.environ["SK_BRAINTUNE_CACHE"] = previous


# ------------------------------------------------------------------------------------------
# Models in the bundle
# ------------------------------------------------------------------------------------------

def weights_digest(state):
    """SHA-256 of a state dict's tensors as float32, by sorted name."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to("cpu", copy=True).float().contiguous()
                      .numpy().tobytes())
    return digest.hexdigest()


def export_encoder(model_dir, out_dir):
    """Write a Whisper-architecture model's encoder compactly and exactly.

    Tensors whose values float16 holds exactly are stored in float16, the others in float32, so
    the device reloads the very same float32 weights.

    Returns
    -------
    record : dict
    """
    import torch
    from safetensors.torch import load_file, save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for key, tensor in load_file(str(file)).items():
            for prefix in ("model.encoder.", "encoder."):
                if key.startswith(prefix):
                    state[key[len(prefix):]] = tensor.float()
    if not state:
        raise ValueError(f"no encoder weights in {model_dir}")
    stored, float32 = {}, []
    for key, tensor in state.items():
        half = tensor.half()
        if torch.equal(half.float(), tensor):
            stored[key] = half.contiguous()
        else:
            stored[key] = tensor.contiguous()
            float32.append(key)
    save_file(stored, str(out_dir / "encoder.safetensors"))
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(model_dir / name, out_dir / name)
    record = {"source": model_dir.name, "weights_sha256": weights_digest(state),
              "n_parameters": int(sum(t.numel() for t in state.values())),
              "float32_tensors": float32}
    write_json(out_dir / "record.json", record)
    return record


def unpack_encoder(bundle_dir, target):
    """A ``WhisperModel`` directory (float32) from :func:`export_encoder`'s output.

    The decoder, which no part of the study uses, is initialised from seed 0.

    Returns
    -------
    path : str
    """
    import torch
    from safetensors.torch import load_file
    from transformers import WhisperConfig, WhisperModel

    from sk_braintune.models.backbone import quiet_transformers

    bundle_dir, target = Path(bundle_dir), Path(target)
    record = json.loads((bundle_dir / "record.json").read_text())
    state = {k: v.float() for k, v in load_file(str(bundle_dir / "encoder.safetensors")).items()}
    if weights_digest(state) != record["weights_sha256"]:
        raise OSError(f"{bundle_dir}: the encoder weights do not match their recorded SHA-256")
    with quiet_transformers():
        config = WhisperConfig.from_pretrained(bundle_dir)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = WhisperModel(config)
        model.encoder.load_state_dict(state, strict=True)
        model.save_pretrained(target)
    shutil.copyfile(bundle_dir / "preprocessor_config.json", target / "preprocessor_config.json")
    return str(target)


def bundle_models(out_dir, smoke, scratch):
    """The self-supervised model and Whisper tiny.en (tiny random ones for ``--smoke``)."""
    if smoke:
        from sk_braintune.testing import make_tiny_model

        sources = {family: make_tiny_model("whisper", Path(scratch, family), seed=i)
                   for i, family in enumerate(FAMILIES)}
    else:
        from sk_braintune.builtin import load_ssl_speech_model, load_whisper_tiny_en

        sources = {"ssl": load_ssl_speech_model(), "whisper-tiny.en": load_whisper_tiny_en()}
    return {family: export_encoder(path, Path(out_dir, family))
            for family, path in sources.items()}


# ------------------------------------------------------------------------------------------
# Wheels the device lacks
# ------------------------------------------------------------------------------------------

def _requirement_name(requirement):
    import re

    return _normalise(re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0])


def device_wheels():
    """``name==version`` of every runtime dependency the device image lacks, with their own.

    The project's core dependencies (``pyproject.toml``) and the demo extra's speech
    synthesiser, closed over their requirements, minus what the image holds; each at the version
    installed here.
    """
    import importlib.metadata as md
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [_requirement_name(r) for r in project["dependencies"]]
    wanted += [_requirement_name(r) for r in project["optional-dependencies"]["demo"]
               if _requirement_name(r) in DEMO_WHEELS]
    needed, queue = {}, [w for w in wanted if w not in DEVICE_IMAGE]
    while queue:
        name = queue.pop()
        if name in needed or name in DEVICE_IMAGE:
            continue
        needed[name] = md.version(name)
        for requirement in md.requires(name) or ():
            if "extra ==" not in requirement:
                queue.append(_requirement_name(requirement))
    return sorted(f"{name}=={version}" for name, version in needed.items())


def download_wheels(out_dir, specs):
    """``pip download`` the device's wheels (its Python, x86-64 manylinux), no dependencies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", DEVICE_PYTHON, "--implementation",
               "cp", "-d", str(out_dir)]
    for tag in DEVICE_PLATFORMS:
        command += ["--platform", tag]
    subprocess.run(command + list(specs), check=True)
    return sorted(p.name for p in out_dir.glob("*.whl"))


# ------------------------------------------------------------------------------------------
# --bundle
# ------------------------------------------------------------------------------------------

def write_bundle(directory, *, smoke=False, seeds=None, wheels=None):
    """Write the bundle the ``--run`` side needs (see the module docstring).

    Parameters
    ----------
    directory : path-like
        Created; an existing bundle there is replaced.
    smoke : bool, default=False
        Tiny random models and 40-word stories (the test suite's).
    seeds : sequence of int, optional
        Seeds whose responses get a checksum (default: the dose's planned seeds).
    wheels : sequence of str, optional
        Wheels to download (default: :func:`device_wheels`; none for ``smoke``).

    Returns
    -------
    manifest : dict
    """
    import sk_braintune

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    dose_name = "smoke" if smoke else "paper"
    dose = DOSES[dose_name]
    seeds = list(dose["seeds"] if seeds is None else seeds)
    started = time.perf_counter()
    manifest = {"dose": dose_name, "seeds": seeds, "sk_braintune": sk_braintune.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python": platform.python_version(), "versions": package_versions()}
    with tempfile.TemporaryDirectory(prefix="skbt_bundle_") as scratch:
        log("models")
        manifest["models"] = bundle_models(directory / "models", smoke, scratch)
    if wheels is None:
        wheels = [] if smoke else device_wheels()
    if wheels:
        log(f"wheels for Python {DEVICE_PYTHON}: {', '.join(wheels)}")
        manifest["wheels"] = download_wheels(directory / "wheels", wheels)
    log(f"simulated listeners: seeds {seeds}")
    references = {}
    with scratch_cache():
        for seed in seeds:
            settings = dose_settings(seed, "ssl", dose)
            if not references:
                # every story's inputs: the simulated brain is built over all of them, also
                # when ``minutes`` then keeps fewer (the same cached dataset serves both calls)
                kwargs = {k: v for k, v in dataset_kwargs(settings).items() if k != "minutes"}
                from sk_braintune.builtin import make_story_dataset

                inputs = semantic_inputs(make_story_dataset(random_state=seed, **kwargs),
                                         dose["context_words"])
                np.savez_compressed(directory / "listeners.npz", **inputs)
            data = build_dataset(settings, seed)
            references[str(seed)] = dataset_fingerprint(data)
            log(f"  seed {seed}: {len(data.stories)} stories, responses "
                f"{references[str(seed)]['responses_sha256'][:12]}")
            del data
    write_json(directory / "references.json", references)
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    manifest["files"] = {str(p.relative_to(directory)): {"bytes": p.stat().st_size,
                                                         "sha256": sha256_file(p)}
                         for p in files}
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    manifest["seconds"] = time.perf_counter() - started
    write_json(directory / "manifest.json", manifest)
    if manifest["total_bytes"] > BUNDLE_LIMIT_BYTES:
        raise RuntimeError(f"the bundle holds {manifest['total_bytes'] / 2 ** 20:.1f} MiB, over "
                           f"its {BUNDLE_LIMIT_BYTES / 2 ** 20:.0f} MiB limit")
    log(f"bundle {directory}: {manifest['total_bytes'] / 2 ** 20:.1f} MiB in "
        f"{len(files) + 1} files, {manifest['seconds']:.0f} s")
    return manifest


def package_versions():
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "numpy", "scipy", "scikit-learn", "safetensors",
                 "espeakng-loader", "pydantic"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------
# --run: the context shared by the stages
# ------------------------------------------------------------------------------------------

class Run:
    """What the stages share: the bundle, the output folder, the device, the budget."""

    def __init__(self, bundle, out, *, smoke, budget_s, cache, seeds=None):
        self.bundle = Path(bundle)
        self.out = Path(out)
        self.smoke = smoke
        self.dose = DOSES["smoke" if smoke else "paper"]
        # the design's order; a later call may go on with the seeds an earlier one left
        self.seeds = [s for s in self.dose["seeds"] if seeds is None or s in seeds]
        self.started = time.perf_counter()
        self.deadline = self.started + budget_s
        self.cache = Path(cache)
        self.manifest = json.loads((self.bundle / "manifest.json").read_text())
        if (self.manifest["dose"] == "smoke") != smoke:
            raise SystemExit(f"{self.bundle} is a {self.manifest['dose']} bundle; "
                             f"{'drop' if not smoke else 'add'} --smoke or rebuild it")
        self.models = {}
        self.setup = {}

    def left(self):
        return self.deadline - time.perf_counter()

    @property
    def device(self):
        import torch

        return torch.device("cuda" if torch.cuda.is_available() and not self.smoke else "cpu")

    def synchronize(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def prepare(self):
        """Check the bundle, install its wheels, unpack its models, seed the listeners' inputs.

        A failure is recorded in ``setup["error"]`` (the environment stage reports it); the
        stages that need what failed then fail on their own.
        """
        try:
            self._prepare()
        except Exception as exc:  # noqa: BLE001
            self.setup["error"] = f"{type(exc).__name__}: {exc}"
            self.setup["traceback"] = traceback.format_exc()
            log(f"setup failed: {self.setup['error']}")

    def _prepare(self):
        checks = {}
        for name, entry in self.manifest["files"].items():
            path = self.bundle / name
            checks[name] = path.is_file() and sha256_file(path) == entry["sha256"]
        self.setup["bundle_files_intact"] = all(checks.values())
        self.setup["bundle_damaged_files"] = [n for n, ok in checks.items() if not ok]
        self.setup["wheels"] = self._install_wheels()
        for family in FAMILIES:
            target = self.cache / "models" / family
            if not (target / "config.json").is_file():
                unpack_encoder(self.bundle / "models" / family, target)
            self.models[family] = str(target)
        self.setup["embedding_files"] = seed_embedding_cache(self.bundle / "listeners.npz",
                                                             self.cache)

    def _install_wheels(self):
        wheels = sorted((self.bundle / "wheels").glob("*.whl"))
        missing = []
        for name in DEMO_WHEELS:
            try:
                __import__(name.replace("-", "_"))
            except ImportError:
                missing.append(name)
        if not wheels or not missing:
            return {"installed": [], "already_importable": not missing}
        site = self.cache / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-deps", "--no-compile", "--target", str(site),
                        *map(str, wheels)], check=True)
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
        return {"installed": [w.name for w in wheels], "target": str(site)}


def run_stage(run, name, function):
    """Run one stage and write ``gpu_<name>.json`` (an error is recorded, not raised)."""
    path = run.out / f"gpu_{name}.json"
    log(f"stage {name} ({run.left():.0f} s of budget left)")
    started = time.perf_counter()
    try:
        result = function(run)
        result["status"] = result.get("status", "ok")
    except Exception as exc:  # noqa: BLE001 - a failed stage must not stop the others
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
        log(f"stage {name} failed: {type(exc).__name__}: {exc}")
    result.update(stage=name, seconds=time.perf_counter() - started,
                  device=str(run.device), smoke=run.smoke)
    write_json(path, result)
    log(f"stage {name}: {result['status']} in {result['seconds']:.1f} s -> {path.name}")
    return result


# ------------------------------------------------------------------------------------------
# a. environment
# ------------------------------------------------------------------------------------------

def bf16_peak_tflops(name):
    for key, value in BF16_PEAK_TFLOPS:
        if key in name:
            return value
    return None


def _median_seconds(function, repeats, warmup, synchronize):
    for _ in range(warmup):
        function()
    synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def stage_environment(run):
    import importlib.metadata as md

    import torch

    import sk_braintune

    out = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "sk_braintune": sk_braintune.__version__, "versions": package_versions(),
           "bundle": {"created": run.manifest["created"], "dose": run.manifest["dose"],
                      "total_bytes": run.manifest["total_bytes"],
                      "built_with": run.manifest["versions"]},
           "setup": run.setup, "cuda_available": torch.cuda.is_available()}
    out["versions"]["nilearn"] = _version_or_none(md, "nilearn")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": props.name, "count": torch.cuda.device_count(),
                      "capability": list(torch.cuda.get_device_capability(0)),
                      "memory_gib": props.total_memory / 2 ** 30,
                      "multiprocessors": props.multi_processor_count,
                      "bf16_supported": torch.cuda.is_bf16_supported(),
                      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                      "bf16_peak_tflops_datasheet": bf16_peak_tflops(props.name)}
        try:
            out["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,"
                 "power.limit,temperature.gpu", "--format=csv"], capture_output=True,
                text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            out["nvidia_smi"] = f"unavailable: {exc}"
    out["ceilings"] = measured_ceilings(run)
    return out


def _version_or_none(md, name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def measured_ceilings(run):
    """A large matrix product's rate and a large copy's bandwidth, on random data."""
    import torch

    device = run.device
    if device.type == "cuda":
        n, dtype, copy_bytes = 8192, torch.bfloat16, 2 ** 30
    else:
        n, dtype, copy_bytes = 256, torch.float32, 2 ** 24
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _median_seconds(lambda: a @ b, 10 if device.type == "cuda" else 3, 3,
                              run.synchronize)
    src = torch.randn(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    copy = _median_seconds(lambda: dst.copy_(src), 10, 2, run.synchronize)
    return {"matmul": {"n": n, "dtype": str(dtype).replace("torch.", ""),
                       "tflops": 2 * n ** 3 / seconds / 1e12},
            "copy": {"bytes": copy_bytes, "gb_per_s_read_plus_write": 2 * copy_bytes / copy / 1e9}}


# ------------------------------------------------------------------------------------------
# b. BrainTuner on CUDA
# ------------------------------------------------------------------------------------------

def _probe_callback():
    """A callback watching one transformer block while BrainTuner trains.

    It records the dtype of the block's first linear layer's output and how many times the
    block runs per training batch (twice with gradient checkpointing: forward, then again in the
    backward pass), and whether the cached path's batch buffers are pinned.
    """
    import torch

    from sk_braintune.tuning import Callback

    class Probe(Callback):
        def __init__(self):
            self.dtypes, self.calls_per_batch, self.pinned = set(), [], set()
            self._calls = 0
            self._handle = None

        def on_train_begin(self, estimator, run):
            encoder = run.backbone.encoder
            layers = encoder.layers if hasattr(encoder, "layers") else encoder.encoder.layers
            linear = next(m for m in layers[-1].modules() if isinstance(m, torch.nn.Linear))

            def hook(module, args, output):
                if module.training and torch.is_grad_enabled():
                    self._calls += 1
                    self.dtypes.add(str(output.dtype).replace("torch.", ""))

            self._handle = linear.register_forward_hook(hook)

        def on_batch_end(self, estimator, run, train_loss):
            self.calls_per_batch.append(self._calls)
            self._calls = 0
            buffers = getattr(run, "_batch_buffers", None)  # the cached path's host buffers
            if buffers is not None:
                self.pinned.add(bool(buffers[0].is_pinned()))

        def on_train_end(self, estimator, run):
            if self._handle is not None:
                self._handle.remove()

        def summary(self):
            return {"block_output_dtypes": sorted(self.dtypes),
                    "block_calls_per_batch": sorted(set(self.calls_per_batch)),
                    "batch_buffers_pinned": sorted(self.pinned)}

    return Probe()


def _tuner_problem(n_windows, seconds, n_targets, seed=0):
    rng = np.random.default_rng(seed)
    X = (0.1 * rng.standard_normal((n_windows, int(seconds * SR)))).astype(np.float32)
    envelope = np.abs(X).reshape(n_windows, 16, -1).mean(-1)
    y = envelope @ rng.standard_normal((16, n_targets)) + 0.1 * rng.standard_normal(
        (n_windows, n_targets))
    return X, y.astype(np.float32), np.repeat(np.arange(8), -(-n_windows // 8))[:n_windows]


def stage_tuner(run):
    import torch

    from sk_braintune.tuning import BrainTuner

    cuda = run.device.type == "cuda"
    model = run.models["ssl"]
    n, seconds = (128, 8.0) if cuda else (16, 1.0)
    X, y, groups = _tuner_problem(n, seconds, 32)
    common = dict(batch_size=16 if cuda else 4, max_epochs=2, validation=0.25, random_state=0,
                  device=str(run.device), lr_backbone=1e-4, lr_head=1e-3)
    out = {"model": "ssl (the bundle's)", "windows": n, "window_s": seconds}
    fits = {}
    for label, params in (("auto", {}), ("fp32", {"precision": "fp32"}),
                          ("cached_top_block", {"trainable_layers": 1})):
        probe = _probe_callback()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        tuner = BrainTuner(model, callbacks=[probe], **common, **params).fit(X, y, groups=groups)
        entry = {"seconds": time.perf_counter() - t0, **probe.summary(),
                 "train_loss": [h["train_loss"] for h in tuner.history_],
                 "valid_r": [h["valid_r"] for h in tuner.history_]}
        if cuda:
            entry["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        fits[label] = (tuner, entry)
        out[label] = entry
    auto, fp32 = fits["auto"][0].predict(X), fits["fp32"][0].predict(X)
    out["auto_vs_fp32_prediction_r"] = float(np.corrcoef(auto.ravel(), fp32.ravel())[0, 1])
    expected = {"auto_dtype": "bfloat16" if cuda else "float32",
                "calls_per_batch": 2 if cuda else 1, "pinned": cuda}
    out["expected"] = expected
    out["checks"] = {
        "bf16_autocast": out["auto"]["block_output_dtypes"] == [expected["auto_dtype"]],
        "fp32_without_autocast": out["fp32"]["block_output_dtypes"] == ["float32"],
        "gradient_checkpointing": out["auto"]["block_calls_per_batch"]
        == [expected["calls_per_batch"]],
        "pinned_buffers": out["cached_top_block"]["batch_buffers_pinned"]
        == [expected["pinned"]],
        "losses_finite": all(np.isfinite(v).all() for v in
                             (out[k]["train_loss"] for k in ("auto", "fp32",
                                                             "cached_top_block")))}
    out["ddp"] = ddp_step(run)
    out["checks"]["ddp_step_equals_plain_step"] = bool(out["ddp"].get("equal", False))
    out["status"] = "ok" if all(out["checks"].values()) else "failed checks"
    return out


DDP_PARAMS = dict(max_epochs=1, validation=None, lr_backbone=1e-3, lr_head=1e-2,
                  warmup_fraction=0.0, weight_decay=0.1, random_state=3, precision="fp32",
                  loss="mse")
# weight_decay: Adam normalises a gradient's scale away, an L2 term in it does not, so a
# gradient off by a factor (e.g. the world size) shows


def _ddp_model(run, scratch):
    from sk_braintune.testing import make_tiny_model

    # no dropout: two processes cannot draw one process's dropout masks
    return make_tiny_model("wav2vec2", Path(scratch, "w2v"), hidden_dropout=0.0,
                           attention_dropout=0.0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exact_fp32():
    """No TF32 in matrix products and convolutions (both processes and the reference)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _named_weights(tuner):
    out = {"head." + k: v.numpy() for k, v in tuner.head_.state_dict().items()}
    out.update({"backbone." + k: v.detach().numpy()
                for k, v in tuner.backbone_.named_parameters()})
    return out


def ddp_step(run):
    """One optimiser step of BrainTuner under ``torchrun`` (2 processes) vs one process."""
    import torch

    from sk_braintune.tuning import BrainTuner

    cuda = run.device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="skbt_ddp_") as scratch:
        model = _ddp_model(run, scratch)
        rng = np.random.default_rng(0)
        batch = 16 if cuda else 6
        X = rng.standard_normal((batch, 8000)).astype(np.float32)
        y = (X[:, ::1000] @ rng.standard_normal((8, 4)) + 0.5 * rng.standard_normal(
            (batch, 4))).astype(np.float32)
        np.savez(Path(scratch, "data.npz"), X=X, y=y)
        params = dict(DDP_PARAMS, batch_size=batch, device="cuda" if cuda else "cpu")
        spec = {"model": model, "data": str(Path(scratch, "data.npz")), "params": params,
                "out": str(Path(scratch, "rank0.npz"))}
        Path(scratch, "spec.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                   str(Path(__file__).resolve()), "--ddp-worker", str(Path(scratch, "spec.json"))]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=180)
        except subprocess.TimeoutExpired as exc:
            return {"equal": False, "seconds": time.perf_counter() - t0,
                    "error": f"torchrun did not finish in {exc.timeout} s: "
                             f"{str(exc.stdout or '')[-2000:]}{str(exc.stderr or '')[-2000:]}"}
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"equal": False, "seconds": seconds,
                    "error": (proc.stdout + proc.stderr)[-4000:]}
        worker = json.loads(Path(scratch, "rank0.json").read_text())
        ddp = dict(np.load(spec["out"]))
        saved = {}
        if cuda:
            saved = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn": torch.backends.cudnn.allow_tf32}
            _exact_fp32()
        try:
            plain = _named_weights(BrainTuner(model, **params).fit(X, y))
            start = _named_weights(BrainTuner(model, **{**params, "lr_backbone": 0.0,
                                                        "lr_head": 0.0}).fit(X, y))
        finally:
            if saved:
                torch.backends.cuda.matmul.allow_tf32 = saved["matmul"]
                torch.backends.cudnn.allow_tf32 = saved["cudnn"]
    # the attention softmax ignores a shift of all scores: k_proj.bias has no true gradient,
    # so what Adam does with it is rounding noise, in one process as in two
    compared = [k for k in plain if not k.endswith("k_proj.bias")]
    diffs = {k: float(np.abs(ddp[k] - plain[k]).max()) for k in compared}
    steps = {k: float(np.abs(plain[k] - start[k]).max()) for k in compared}
    close = {k: bool(np.allclose(ddp[k], plain[k], rtol=1e-5, atol=1e-5)) for k in compared}
    worst = max(diffs, key=diffs.get)
    return {"equal": all(close.values()) and max(steps.values()) > 1e-4,
            "backend": worker["backend"], "world_size": worker["world_size"],
            "device": worker["device"], "seconds": seconds, "n_tensors_compared": len(compared),
            "max_abs_difference": diffs[worst], "worst_tensor": worst,
            "largest_step": max(steps.values()),
            "tensors_off": [k for k, ok in close.items() if not ok], "tolerance": "rtol=atol=1e-5"}


def ddp_worker(spec_path):
    """The ``torchrun`` side of :func:`ddp_step`: one rank's fit; rank 0 saves the weights."""
    import torch
    import torch.distributed as dist

    from sk_braintune.tuning import BrainTuner

    spec = json.loads(Path(spec_path).read_text())
    world = int(os.environ["WORLD_SIZE"])
    cuda = spec["params"]["device"] == "cuda"
    # NCCL needs one GPU per process; with fewer GPUs the processes share one through gloo
    backend = "nccl" if cuda and torch.cuda.device_count() >= world else "gloo"
    dist.init_process_group(backend)
    if cuda:
        _exact_fp32()
    data = np.load(spec["data"])
    tuner = BrainTuner(spec["model"], **spec["params"]).fit(data["X"], data["y"])
    if dist.get_rank() == 0:
        np.savez(spec["out"], **_named_weights(tuner))
        device = (f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
        Path(spec["out"]).with_suffix(".json").write_text(json.dumps(
            {"backend": backend, "world_size": world, "device": device}))
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------
# c. tuning throughput
# ------------------------------------------------------------------------------------------

def model_flops_per_window(config, n_samples, n_targets):
    """Forward + backward FLOPs of one window for a wav2vec2 model with a frozen CNN.

    Matrix products and convolutions only (2 FLOPs per multiply-add): the CNN forward (frozen:
    no backward); the feature projection, the positional convolution (an even kernel computes
    one extra frame, dropped after), every block's projections, attention scores and weighted
    values, and feed-forward pair, forward and twice that backward; the head. Gradient
    checkpointing's second forward is not counted (model FLOPs, as MFU counts them).

    Returns
    -------
    flops : dict
        ``frames`` and the FLOPs of each part for one window; ``total``.
    """
    cnn, length, channels = 0, n_samples, 1
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        cnn += 2 * channels * dim * kernel * length
        channels = dim
    d, f, F = config.hidden_size, config.intermediate_size, length
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    positions = F + 1 - kernel % 2
    front = 2 * F * channels * d + 2 * positions * d * (d // groups) * kernel
    blocks = config.num_hidden_layers * (4 * 2 * F * d * d + 2 * 2 * F * d * f)
    attention = config.num_hidden_layers * 2 * 2 * F * F * d
    head = 2 * d * n_targets
    trainable = front + blocks + attention + head
    return {"frames": F, "cnn_forward": cnn, "projection_forward": front,
            "blocks_forward": blocks, "attention_forward": attention, "head_forward": head,
            "trainable_forward": trainable, "total": cnn + 3 * trainable}


def _step_timer():
    import torch

    from sk_braintune.tuning import Callback

    class Timer(Callback):
        def __init__(self):
            self.times = []

        def on_epoch_begin(self, estimator, run):
            self._sync(run)
            self.times.append(time.perf_counter())

        def on_batch_end(self, estimator, run, train_loss):
            self._sync(run)
            self.times.append(time.perf_counter())

        @staticmethod
        def _sync(run):
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)

    return Timer()


def bare_steps(path, X, y, batch, n_steps, precision, device):
    """The tuner's step written bare in PyTorch: seconds of each step.

    Same model, frozen CNN, gradient checkpointing on CUDA, input normalisation, mean pooling,
    linear head, MSE, Adam with two groups, one host synchronisation (the loss) per step.
    """
    import torch
    from transformers import Wav2Vec2Model

    from sk_braintune.models.backbone import quiet_transformers

    with quiet_transformers():
        model = Wav2Vec2Model.from_pretrained(path, layerdrop=0.0, mask_time_prob=0.0,
                                              apply_spec_augment=False).to(device)
    model.freeze_feature_encoder()
    if device.type == "cuda":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    head = torch.nn.Linear(model.config.hidden_size, y.shape[1]).to(device)
    optimizer = torch.optim.Adam([
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": 5e-5},
        {"params": head.parameters(), "lr": 1e-4}])
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    times = []
    for step in range(n_steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        rows = slice(step * batch, (step + 1) * batch)
        x = torch.from_numpy(X[rows]).to(device)
        x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True) + 1e-7)
        target = torch.from_numpy(y[rows]).to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            pooled = model(x).last_hidden_state.mean(1)
            prediction = head(pooled)
        loss = torch.nn.functional.mse_loss(prediction.float(), target)
        loss.item()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    del model, head, optimizer
    return times


def stage_throughput(run):
    import torch
    from transformers import AutoConfig

    cuda = run.device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="skbt_w2v_") as scratch:
        if cuda:
            from bench_tuner import base_size_path

            path = base_size_path()
            label = "wav2vec2 base configuration (12 x 768, random weights)"
            window, batch, n_steps, n_targets = 10.0, 128, 6, 1024
            precisions = ("bf16", "fp32")
        else:
            from sk_braintune.testing import make_tiny_model

            path = make_tiny_model("wav2vec2", Path(scratch, "w2v"))
            label = "tiny wav2vec2 (2 x 32, random weights)"
            window, batch, n_steps, n_targets = 1.0, 4, 3, 16
            precisions = ("fp32",)
        config = AutoConfig.from_pretrained(path)
        n_samples = int(window * SR)
        rng = np.random.default_rng(0)
        X = (0.1 * rng.standard_normal((batch * n_steps, n_samples))).astype(np.float32)
        y = rng.standard_normal((batch * n_steps, n_targets)).astype(np.float32)
        flops = model_flops_per_window(config, n_samples, n_targets)
        peak = None
        if cuda:
            peak = bf16_peak_tflops(torch.cuda.get_device_properties(0).name)
        out = {"model": label, "window_s": window, "batch": batch, "steps": n_steps,
               "frames": flops["frames"], "targets": n_targets, "flops_per_window": flops,
               "bf16_peak_tflops_datasheet": peak, "timed": "median step after the first"}
        for precision in precisions:
            try:
                out[precision] = _throughput_one(run, path, X, y, batch, n_steps, precision,
                                                 flops, peak)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: keep the other
                out[precision] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"  throughput {precision} failed: {out[precision]['error']}")
            if cuda:
                torch.cuda.empty_cache()
    if any("error" in out[p] for p in precisions):
        out["status"] = "failed checks"
    return out


def _throughput_one(run, path, X, y, batch, n_steps, precision, flops, peak):
    """One precision of :func:`stage_throughput`: the tuner's steps, then the bare ones."""
    import torch

    from sk_braintune.tuning import BrainTuner

    cuda = run.device.type == "cuda"
    timer = _step_timer()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    BrainTuner(path, precision=precision, batch_size=batch, max_epochs=1,
               validation=None, device=str(run.device), random_state=0,
               callbacks=[timer]).fit(X, y)
    tuner_step = float(np.median(np.diff(timer.times)[1:]))
    entry = {"tuner_step_s": tuner_step, "windows_per_s": batch / tuner_step}
    if cuda:
        entry["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    bare = bare_steps(path, X, y, batch, n_steps, precision, run.device)
    bare_step = float(np.median(bare[1:]))
    entry.update(bare_step_s=bare_step, bare_windows_per_s=batch / bare_step,
                 overhead_ratio=tuner_step / bare_step)
    if cuda:
        entry["bare_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    achieved = flops["total"] * batch / tuner_step / 1e12
    entry["model_tflops"] = achieved
    if peak:
        entry["mfu_vs_bf16_peak"] = achieved / peak
    log(f"  throughput {precision}: {entry['windows_per_s']:.1f} windows/s "
        f"(bare {entry['bare_windows_per_s']:.1f}), {achieved:.1f} TFLOP/s")
    return entry


# ------------------------------------------------------------------------------------------
# d. the ridge on the GPU vs the CPUs
# ------------------------------------------------------------------------------------------

def _ridge_data(n_train, n_test, n_features, n_voxels):
    saved = dict(os.environ)
    try:  # bench_ridge pins BLAS to one thread for its own children: not for this process
        from bench_ridge import make_data
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return make_data(n_train, n_test, n_features, n_voxels)


def stage_ridge(run):
    import torch

    from sk_braintune.encoding import RidgeEncoder

    cuda = run.device.type == "cuda"
    n_train, n_test, p, v = (4000, 500, 768, 90_000) if cuda else (200, 50, 16, 500)
    X, Y, Xt, Yt = _ridge_data(n_train, n_test, p, v)
    groups = np.repeat(np.arange(20), n_train // 20)
    out = {"n_train": n_train, "n_test": n_test, "n_features": p, "n_voxels": v,
           "alphas": "default (20)", "cv": "5 story-grouped folds", "dtype": "float32"}
    fitted = {}
    for label, backend, device in (("gpu" if cuda else "torch_cpu", "torch", str(run.device)),
                                   ("cpu", "numpy", "cpu")):
        encoder = RidgeEncoder(cv=5, backend=backend, device=device)
        if cuda and backend == "torch":  # warm-up: CUDA context and kernels
            RidgeEncoder(cv=5, backend=backend, device=device).fit(X[:400], Y[:400, :100],
                                                                   groups=groups[:400])
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        encoder.fit(X, Y, groups=groups)
        run.synchronize()
        seconds = time.perf_counter() - t0
        scores = encoder.score_voxels(Xt, Yt)
        fitted[label] = (encoder, scores)
        out[label] = {"backend": backend, "device": device, "fit_seconds": seconds,
                      "mean_test_r": float(np.nanmean(scores))}
        log(f"  ridge {label}: {seconds:.2f} s, mean r {np.nanmean(scores):.4f}")
    (a, ra), (b, rb) = fitted.values()
    out["speedup"] = out["cpu"]["fit_seconds"] / out[next(iter(fitted))]["fit_seconds"]
    # a voxel whose two best penalties nearly tie may pick the neighbouring one on the other
    # backend (float rounding): the check is on the mean difference, the maximum is reported
    out["agreement"] = {
        "mean_abs_r_difference": float(np.nanmean(np.abs(ra - rb))),
        "max_abs_r_difference": float(np.nanmax(np.abs(ra - rb))),
        "same_alpha_fraction": float(np.mean(np.asarray(a.best_alphas_)
                                             == np.asarray(b.best_alphas_))),
        "coef_relative_difference": float(np.linalg.norm(np.asarray(a.coef_) - b.coef_)
                                          / np.linalg.norm(b.coef_))}
    out["checks"] = {"agree": out["agreement"]["mean_abs_r_difference"] < 1e-4}
    out["status"] = "ok" if all(out["checks"].values()) else "failed checks"
    return out


# ------------------------------------------------------------------------------------------
# e. the paper-dose study
# ------------------------------------------------------------------------------------------

def _history(tuner_history):
    keys = ("epoch", "train_loss", "valid_loss", "valid_r", "seconds")
    return [{k: h.get(k) for k in keys} for h in tuner_history]


def decision(summary, models, n_seeds):
    """The design's rule on the primary endpoint (docs/semantic_design.rst).

    Support: brain-tuned above pretrained and above each control, mean difference positive and
    paired t-test p < 0.05 for every one, with at least three seeds.
    """
    if n_seeds < 3:
        return {"outcome": "undecided: fewer than 3 seeds", "n_seeds": n_seeds}
    comparisons = [f"brain-tuned - {m}, semantic" for m in models if m != "brain-tuned"]
    passed = {}
    for key in comparisons:
        entry = summary.get(key, {})
        passed[key] = bool(entry.get("mean_difference", 0) > 0
                           and entry.get("paired_t_p", 1.0) < 0.05)
    outcome = "supported" if all(passed.values()) else "not supported"
    return {"outcome": outcome, "n_seeds": n_seeds, "comparisons": passed}


def stage_study(run):
    from study_braintuning import seed_row, summarize

    from sk_braintune import study

    dose = run.dose
    path = run.out / "gpu_study.json"
    out = {"design": {k: v for k, v in dose.items() if k != "min_seconds_left"},
           "design_document": "docs/semantic_design.rst, Paper-dose study (GPU)",
           "primary_endpoint": "semantic voxels, last layer, noise-ceiling-normalised r",
           "families": {f: run.models[f] for f in FAMILIES}, "dataset_checks": {},
           "seeds_requested": run.seeds, "rows": {f: [] for f in FAMILIES}, "summary": {},
           "decision": {}, "skipped": [], "status": "running"}
    write_json(path, out)
    estimates = {}
    with minilm_blocked():
        for seed in run.seeds:
            for family in FAMILIES:
                # Whisper tiny.en (width 384) costs more than the SSL model (256) until timed
                prior = estimates.get(family) or 1.5 * estimates.get(FAMILIES[0], 0.0)
                needed = prior * 1.1 + (
                    0.0 if str(seed) in out["dataset_checks"] else estimates.get("dataset", 0.0))
                if run.left() < max(needed, dose["min_seconds_left"]):
                    out["skipped"].append({"seed": seed, "family": family,
                                           "reason": f"budget: {run.left():.0f} s left, about "
                                                     f"{needed:.0f} s needed"})
                    continue
                settings = dose_settings(seed, run.models[family], dose)
                if str(seed) not in out["dataset_checks"]:
                    t0 = time.perf_counter()
                    check = check_dataset(run, settings, seed)
                    estimates["dataset"] = time.perf_counter() - t0
                    check["seconds"] = estimates["dataset"]
                    out["dataset_checks"][str(seed)] = check
                    write_json(path, out)
                log(f"  study: seed {seed}, {family} ({run.left():.0f} s left)")
                t0 = time.perf_counter()
                results = study.run_braintuning_study(
                    settings, seed=seed, device=str(run.device), verbose=False,
                    analyses=("alignment",))
                seconds = time.perf_counter() - t0
                estimates[family] = seconds
                histories = results["history"]
                row = seed_row(results, settings, seed, seconds)
                row.update(family=family, train_minutes=results["train_minutes"],
                           n_tuning_targets=results["n_tuning_targets"],
                           dataset_verified=out["dataset_checks"][str(seed)]["match"],
                           epochs_run={k: len(h) for k, h in histories.items()},
                           history={k: _history(h) for k, h in histories.items()})
                out["rows"][family].append(row)
                log(f"  study: seed {seed}, {family}: semantic "
                    + ", ".join(f"{m} {row[f'{m}/semantic']:.3f}" for m in row["models"])
                    + f" ({seconds:.0f} s)")
                rows = out["rows"][family]
                if len(rows) >= 2:
                    out["summary"][family] = _summary(rows, summarize)
                    out["decision"][family] = decision(out["summary"][family],
                                                       row["models"], len(rows))
                write_json(path, out)
    out["status"] = "ok"
    out["seeds_done"] = {f: [r["seed"] for r in out["rows"][f]] for f in FAMILIES}
    return out


def merge_studies(paths, output):
    """Join the study rows of several runs (e.g. two calls, other seeds), with the tests.

    A seed run twice keeps its first row. Writes ``output`` in the form of ``gpu_study.json``.
    """
    from study_braintuning import summarize

    studies = [json.loads(Path(p).read_text()) for p in paths]
    first = studies[0]
    merged = {"design": first["design"], "design_document": first["design_document"],
              "primary_endpoint": first["primary_endpoint"],
              "merged_from": [str(p) for p in paths], "dataset_checks": {},
              "rows": {f: [] for f in FAMILIES}, "summary": {}, "decision": {}, "skipped": [],
              "status": "ok"}
    for study in studies:
        merged["dataset_checks"].update({k: v for k, v in study["dataset_checks"].items()
                                         if k not in merged["dataset_checks"]})
        merged["skipped"] += study.get("skipped", [])
        for family, rows in study["rows"].items():
            seen = {r["seed"] for r in merged["rows"][family]}
            merged["rows"][family] += [r for r in rows if r["seed"] not in seen]
    for family, rows in merged["rows"].items():
        rows.sort(key=lambda r: r["seed"])
        if len(rows) >= 2:
            merged["summary"][family] = _summary(rows, summarize)
            merged["decision"][family] = decision(merged["summary"][family], rows[0]["models"],
                                                  len(rows))
    merged["seeds_done"] = {f: [r["seed"] for r in merged["rows"][f]] for f in FAMILIES}
    write_json(output, merged)
    return merged


def _summary(rows, summarize):
    """The pre-registered study's paired tests across seeds (its own ``summarize``)."""
    with tempfile.TemporaryDirectory(prefix="skbt_summary_") as folder:
        with contextlib.redirect_stdout(sys.stderr):
            summarize(rows, Path(folder))
        return json.loads(Path(folder, "summary.json").read_text())["summary"]


def check_dataset(run, settings, seed):
    """Rebuild the seed's simulated responses and compare them with the bundle's checksum."""
    references = json.loads((run.bundle / "references.json").read_text())
    data = build_dataset(settings, seed)
    fingerprint = dataset_fingerprint(data)
    if str(seed) not in references:
        return {"match": False, "reason": f"no reference for seed {seed} in the bundle",
                "responses_sha256": fingerprint["responses_sha256"]}
    comparison = compare_fingerprints(references[str(seed)], fingerprint)
    log(f"  dataset seed {seed}: {'same' if comparison['match'] else 'DIFFERENT'} responses "
        f"(max relative sketch difference {comparison['max_relative_difference']:.1e}, audio "
        f"{'identical' if comparison['audio_identical'] else 'not identical'})")
    return comparison


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------

STAGE_FUNCTIONS = {"environment": stage_environment, "tuner": stage_tuner,
                   "throughput": stage_throughput, "ridge": stage_ridge, "study": stage_study}


def run_check(bundle, out, *, smoke=False, budget_s=330.0, cache=None, stages=STAGES,
              seeds=None):
    """Run the stages (see the module docstring); returns each stage's result."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="skbt_gpu_cache_"))
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["SK_BRAINTUNE_CACHE"] = str(cache)
    for var, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("TOKENIZERS_PARALLELISM", "false"), ("MPLBACKEND", "Agg")):
        os.environ.setdefault(var, value)
    run = Run(bundle, out, smoke=smoke, budget_s=budget_s, cache=cache, seeds=seeds)
    log(f"run: bundle {bundle}, output {out}, cache {cache}, budget {budget_s:.0f} s, "
        f"stages {', '.join(stages)}")
    run.prepare()
    results = {}
    for name in stages:
        results[name] = run_stage(run, name, STAGE_FUNCTIONS[name])
    log("done: " + ", ".join(f"{k} {v['status']}" for k, v in results.items())
        + f" in {time.perf_counter() - run.started:.0f} s")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--bundle", type=Path, metavar="DIR", help="write the bundle to DIR")
    mode.add_argument("--run", type=Path, metavar="DIR", help="run the check from bundle DIR")
    mode.add_argument("--merge-study", type=Path, nargs="+", metavar="JSON",
                      help="join the gpu_study.json of several runs into --out (a file)")
    mode.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="folder of the stages' JSON (--run)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="seconds the run may take; the study runs seeds while it lasts")
    parser.add_argument("--smoke", action="store_true",
                        help="every stage at tiny size on the CPU (bundle and run)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="--bundle: seeds whose responses get a checksum; --run: the "
                        "study's seeds (default: all planned, in the design's order)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--cache", type=Path, help="--run: cache folder (default: a new one)")
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker)
    elif args.merge_study:
        if args.out is None:
            parser.error("--merge-study needs --out (the merged JSON file)")
        merge_studies(args.merge_study, args.out)
    elif args.bundle:
        write_bundle(args.bundle, smoke=args.smoke, seeds=args.seeds)
    else:
        if args.out is None:
            parser.error("--run needs --out")
        run_check(args.run, args.out, smoke=args.smoke, budget_s=args.budget_s,
                  cache=args.cache, stages=args.stages, seeds=args.seeds)


if __name__ == "__main__":
    main()
