"""Is the self-supervised model pretrained here what the paper's SSL models are?

Good on auditory voxels and phones, weak on word meaning: this script measures, for the BEST-RQ
model of :func:`sk_braintune.builtin.load_ssl_speech_model` next to Whisper tiny.en, on the
library dataset (``make_story_dataset(stories="library")``):

- layer-wise, noise-ceiling-normalised alignment of auditory, semantic and mixed voxels on the
  held-out test story (``sk_braintune.evaluation.layerwise_alignment`` on mean-pooled features
  of causal windows from ``SpeechFeatureExtractor``; the ridge is fitted on ``--minutes`` of
  training stories plus the validation story);
- a phone probe per layer: a multinomial logistic regression from the hidden state at each
  phone's centre frame (consecutive non-overlapping windows of each story) to the espeak phone
  label, fitted on the first ``--probe-stories`` training stories, scored on the test story
  (accuracy, next to the majority-class rate).

It also times the first build of the dataset and the SSL model (when not cached yet).

``--models`` chooses what is measured (Whisper tiny.en should always be among them, as the
reference of the same run): ``ssl`` (the default model of ``load_ssl_speech_model``),
``whisper``, ``NAME=PATH`` (any saved speech model, e.g. a screened SSL variant), and
model-free baselines with one "layer" each (no phone probe):

- ``logmel``: Whisper's log-mel frames of the window, mean-pooled (80 dims);
- ``logmel-chunks``: the same, mean-pooled in 8 consecutive chunks (640 dims: keeps the
  timing of the sound inside the window); ``logmel-chunksN`` for N chunks;
- ``bands`` / ``bands-chunks``: the simulator's own auditory features (24 log mel band-power
  envelopes, ``datasets.story_features.band_power_envelopes``) of the window, pooled alike.

Usage::

    python benchmarks/ssl_alignment.py [--minutes 60] [--window 8] [--probe-stories 4]
        [--models ssl whisper] [--no-probe]
        [--output benchmarks/results/ssl_alignment_library.json]
"""

import argparse
import json
import time

import numpy as np


def phone_frames(backbone, audio, phones, chunk_seconds, batch_size=8):
    """Hidden states of every layer at each phone's centre frame.

    Parameters
    ----------
    backbone : AudioBackbone
    audio : ndarray of shape (n_samples,)
    phones : pandas.DataFrame
        ``onset``, ``offset``, ``label``.
    chunk_seconds : float
        The story is cut into consecutive windows of this length (the last one zero-padded).

    Returns
    -------
    features : ndarray of shape (n_phones, n_layers + 1, hidden_size)
    labels : ndarray of shape (n_phones,)
    """
    import torch

    sr = 16000
    chunk = int(round(chunk_seconds * sr))
    n_chunks = int(np.ceil(audio.size / chunk))
    padded = np.zeros(n_chunks * chunk, dtype=np.float32)
    padded[:audio.size] = audio
    chunks = padded.reshape(n_chunks, chunk)
    frames_per_chunk = backbone.frame_count(chunk)
    hidden = []
    with torch.inference_mode():
        for start in range(0, n_chunks, batch_size):
            out = backbone(torch.from_numpy(chunks[start:start + batch_size]))
            hidden.append(torch.stack(out.hidden_states, dim=1).numpy())  # (b, L+1, F, D)
    hidden = np.concatenate(hidden)
    centres = (phones["onset"].to_numpy() + phones["offset"].to_numpy()) / 2
    frame = np.floor(centres / (chunk_seconds / frames_per_chunk)).astype(int)
    which, within = frame // frames_per_chunk, frame % frames_per_chunk
    keep = which < n_chunks
    features = hidden[which[keep], :, within[keep], :]  # (n, L+1, D)
    return features, phones["label"].to_numpy()[keep]


def phone_probe(train_feats, train_labels, test_feats, test_labels, min_count=20):
    """Per-layer accuracy of a logistic-regression phone classifier, and the majority rate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels, counts = np.unique(train_labels, return_counts=True)
    known = set(labels[counts >= min_count])
    tr = np.isin(train_labels, list(known))
    te = np.isin(test_labels, list(known))
    majority = labels[np.argmax(counts)]
    out = {"n_train": int(tr.sum()), "n_test": int(te.sum()), "n_classes": len(known),
           "majority_accuracy": float(np.mean(test_labels[te] == majority)), "accuracy": []}
    for layer in range(train_feats.shape[1]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
        clf.fit(train_feats[tr, layer], train_labels[tr])
        out["accuracy"].append(float(clf.score(test_feats[te, layer], test_labels[te])))
    return out


BASELINES = ("logmel", "logmel-chunks", "bands", "bands-chunks")


def is_baseline(token):
    """A baseline name, optionally with its number of chunks (``logmel-chunks16``)."""
    base, sep, chunks = token.partition("-chunks")
    return base in ("logmel", "bands") and (not sep or not chunks or chunks.isdigit())


def baseline_features(kind, X, n_chunks=8, batch_size=32):
    """Model-free features of each window (see the module docstring).

    Parameters
    ----------
    kind : {"logmel", "logmel-chunks", "bands", "bands-chunks"}
    X : AudioWindows of n_windows windows

    Returns
    -------
    features : ndarray of shape (n_windows, d)
    """
    import torch

    from sk_braintune.builtin.story_features import band_power_envelopes
    from sk_braintune.models import load_backbone
    from sk_braintune.builtin import load_whisper_tiny_en

    base, _, chunk_spec = kind.partition("-chunks")
    chunks = (int(chunk_spec) if chunk_spec else n_chunks) if "-chunks" in kind else 1
    out = []
    if base == "logmel":
        backbone = load_backbone(load_whisper_tiny_en())
        for start in range(0, len(X), batch_size):
            batch = torch.from_numpy(np.stack([X[i] for i in range(start, min(start + batch_size,
                                                                                  len(X)))]))
            with torch.no_grad():
                mel = backbone.log_mel(batch).numpy()  # (b, 80, frames)
            frames = mel.shape[2] - mel.shape[2] % chunks
            pooled = mel[:, :, :frames].reshape(mel.shape[0], 80, chunks, -1).mean(axis=3)
            out.append(pooled.reshape(mel.shape[0], -1))
    else:
        for i in range(len(X)):
            bands = band_power_envelopes(np.asarray(X[i]), 16000)  # (80 steps, 24)
            steps = bands.shape[0] - bands.shape[0] % chunks
            out.append(bands[:steps].reshape(chunks, -1, bands.shape[1]).mean(axis=1).ravel()[None])
    return np.concatenate(out).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="training minutes of the encoding fit (default 60; 0 = all)")
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--probe-stories", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["ssl", "whisper"],
                        help="ssl, whisper, NAME=PATH, or a baseline: " + ", ".join(BASELINES))
    parser.add_argument("--no-probe", action="store_true", help="skip the phone probe")
    parser.add_argument("--output", default="benchmarks/results/ssl_alignment_library.json")
    args = parser.parse_args()

    from sk_braintune import SpeechFeatureExtractor
    from sk_braintune._utils import cache_dir
    from sk_braintune.builtin import make_story_dataset
    from sk_braintune.evaluation import layerwise_alignment
    from sk_braintune.models import load_backbone
    from sk_braintune.builtin import load_ssl_speech_model, load_whisper_tiny_en
    from sk_braintune.windows import windows_from_dataset

    timings = {}
    start = time.perf_counter()
    data = make_story_dataset(stories="library", random_state=args.seed,
                              minutes=args.minutes or None)
    timings["dataset_s"] = time.perf_counter() - start
    models, ssl_log = {}, None
    for token in args.models:
        if token == "ssl":
            start = time.perf_counter()
            models["ssl (BEST-RQ, here)"] = load_ssl_speech_model(random_state=0)
            timings["ssl_model_s"] = time.perf_counter() - start
        elif token == "whisper":
            models["whisper tiny.en"] = load_whisper_tiny_en()
        elif is_baseline(token):
            models[token] = token
        elif "=" in token:
            name, path = token.split("=", 1)
            models[name] = path
        else:
            parser.error(f"unknown model {token!r}: ssl, whisper, NAME=PATH or one of {BASELINES}")
    for path in models.values():
        try:
            with open(f"{path}/sk_braintune_ssl.json") as f:
                ssl_log = json.load(f)  # the first SSL model's training record
            break
        except OSError:
            continue

    fit = data.split["train"] + data.split["validation"]
    test = data.split["test"]
    X, y, groups = windows_from_dataset(data, fit + test, window=args.window)
    minutes = {k: sum(data.audio[s].size for s in v) / 16000 / 60 for k, v in data.split.items()}
    print(f"encoding fit on {minutes['train']:.1f} + {minutes['validation']:.1f} min, test "
          f"{minutes['test']:.1f} min; {len(X)} windows of {args.window:g} s", flush=True)
    probe_train = data.split["train"][:args.probe_stories]
    results = {"settings": vars(args), "minutes": minutes, "timings": timings, "models": {}}
    if ssl_log is not None:
        results["ssl_training"] = {k: ssl_log.get(k) for k in (
            "recipe", "revision", "seconds", "seconds_per_step", "fixed_batch_loss",
            "mask_fraction", "n_parameters", "n_training_seconds", "torch_threads")}
        results["ssl_loss_curve"] = {
            f"step_{i}": float(np.mean(ssl_log["losses"][max(0, i - 20):i + 1]))
            for i in range(0, len(ssl_log["losses"]), 100)}
        if ssl_log["losses"]:
            results["ssl_loss_curve"]["last_20_mean"] = float(np.mean(ssl_log["losses"][-20:]))
    for name, path in models.items():
        start = time.perf_counter()
        if is_baseline(path):
            features, n_layers = baseline_features(path, X), 1
        else:
            extractor = SpeechFeatureExtractor(path, layers="all", batch_size=16,
                                               cache_dir=cache_dir("features", "ssl_benchmark"))
            features = extractor.fit_transform(X)
            n_layers = len(extractor.layers_)
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        table = layerwise_alignment(features, n_layers, y, groups, fit, test,
                                    noise_ceiling=data.noise_ceiling,
                                    voxel_labels=data.voxel_labels)
        alignment = {roi: [float(v) for v in values] for roi, values in table["roi"].items()}
        ridge_s = time.perf_counter() - start

        results["models"][name] = {
            "alignment_by_layer": alignment,
            "best_layer": {roi: {"layer": int(np.nanargmax(v)), "value": float(np.nanmax(v))}
                           for roi, v in alignment.items()},
            "seconds": {"features": extract_s, "ridge": ridge_s},
        }
        print(name, "auditory by layer", " ".join(f"{v:.3f}" for v in alignment["auditory"]),
              "| semantic", " ".join(f"{v:.3f}" for v in alignment["semantic"]), flush=True)
        if is_baseline(path) or args.no_probe:
            print(name, json.dumps(results["models"][name]), flush=True)
            continue
        start = time.perf_counter()
        backbone = load_backbone(path)
        train_parts = [phone_frames(backbone, data.audio[s], data.phones[s], args.window)
                       for s in probe_train]
        test_feats, test_labels = phone_frames(backbone, data.audio[test[0]],
                                               data.phones[test[0]], args.window)
        probe = phone_probe(np.concatenate([p[0] for p in train_parts]),
                            np.concatenate([p[1] for p in train_parts]), test_feats, test_labels)
        results["models"][name]["phone_probe"] = probe
        results["models"][name]["seconds"]["phone_probe"] = time.perf_counter() - start
        print(name, json.dumps(results["models"][name]), flush=True)

    print("\nnoise-ceiling-normalised r on the test story (best layer) and phone accuracy:")
    for name, res in results["models"].items():
        best = res["best_layer"]
        print(f"  {name:>22}: " + ", ".join(f"{roi} {best[roi]['value']:.3f} (layer "
                                            f"{best[roi]['layer']})" for roi in sorted(best))
              + (f"; phones {max(res['phone_probe']['accuracy']):.3f} (majority "
                 f"{res['phone_probe']['majority_accuracy']:.3f})" if "phone_probe" in res
                 else ""))
        print(f"  {'':>22}  auditory by layer: "
              + " ".join(f"{v:.3f}" for v in res["alignment_by_layer"]["auditory"]))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
