"""How much of the simulated semantic voxels can a model learn from the training stories?

Brain-tuning can only add semantic information that the training stories teach and that the
pretrained model's features plus the encoding ridge do not already capture. This script
measures both, without any brain-tuning run, with the study's ridge protocol (per-story z-score,
FIR delays 1-4, voxelwise ridge with story-grouped CV, noise-ceiling-normalised r on the held-out
story). Feature spaces, each over the same causal window (``--window``, the study's 8 s) the
speech models see:

- ``lexicon learned here``: a perfect word recogniser that knows nothing of meaning, i.e. one-hot
  word identities (vocabulary of the fitting stories) averaged over the window. A ridge on it
  learns every word's meaning from these stories only, which is all a tuned model could learn
  here.
- ``pretrained lexicon``: the all-MiniLM-L6-v2 embedding of each word alone (meaning known before
  seeing these stories), averaged over the window.
- ``true semantic features``: the simulator's latent semantic features at each word (oracle),
  averaged over the window.
- ``power spectrum``: 32-band log power spectrum at the TRs
  (:func:`sk_braintune.features.lowlevel.power_spectrum_features`), a validity check: a simulator
  setting whose "semantic" voxels an acoustic feature predicts (``context_words=1`` does, see
  the user guide) tests acoustics, not meaning.
- ``ssl`` / ``whisper`` (``--models``): the pretrained speech models' features as the study
  extracts them (:func:`sk_braintune.features.extract_layer_features`: every hidden state,
  mean-pooled over the window), scored layer by layer; the best layer is reported. These are
  the self-supervised model of :func:`sk_braintune.builtin.load_ssl_speech_model` (or
  ``--ssl-model``) and Whisper tiny.en.

The speech models' features depend only on the audio and the window, so they are extracted once
per model (each story the grid needs, once) and cached under ``--feature-cache``; varying the
simulator (``--context-words``) or the data size (``--minutes``) then costs only ridge fits. All
simulator settings of one seed share the training stories, so each feature space is fitted once
per seed and size on the semantic voxels of every setting side by side (one penalty per voxel:
the same as separate fits). Auditory voxels do not depend on ``context_words`` (checked), so they
are fitted once.

Held-out stories rotate with the seed: on the default collection as in
``study_braintuning.py`` (seed k tests on story k), on the library seed k tests on the k-th
story from the end of the library's order and validates on the one before it (seed 0: the
library's default split), see :func:`study_braintuning.held_out_stories`.

Usage::

    # the library design grid (JSON in benchmarks/results/). On the loaded 2-core machine:
    # Whisper's feature extraction 19 min, the SSL model's 6, the MiniLM contexts of new
    # context lengths ~20, the ridge fits ~15 per seed (run from the repository root with
    # PYTHONPATH=. so that this checkout's package is imported)
    python benchmarks/semantic_learnability.py --stories library --seeds 0 1 2 \\
        --context-words 1 3 8 20 --minutes 15 30 60 120 0 \\
        --output benchmarks/results/semantic_learnability_library.json
    # later: only the SSL column again (another SSL model), merged into that JSON
    python benchmarks/semantic_learnability.py ... --models ssl --ssl-model PATH \\
        --models-only --merge
    # the default collection, word-level spaces only, as before
    python benchmarks/semantic_learnability.py --seeds 0 1 2 3 4 5 --models \\
        [--context-words 3] [--n-train-stories 3 6 9]
    # the table of a results file
    python benchmarks/semantic_learnability.py --summarize --output FILE.json
"""

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_braintuning (this folder)

WORD_SPACES = ("lexicon learned here", "pretrained lexicon")
ORACLE = "true semantic features"
ACOUSTIC = "power spectrum"  # a validity check: "semantic" voxels must not be acoustic
MODEL_NAMES = {"ssl": "ssl (pretrained here)", "whisper": "whisper tiny.en"}


def window_bags(words, values, tr_times, tr, window):
    """Mean of ``values`` over the words whose onset lies in each TR's causal window.

    Parameters
    ----------
    words : pandas.DataFrame
        Word events with an ``onset`` column (s).
    values : ndarray of shape (n_words, n_features)
    tr_times : ndarray of shape (n_trs,)
        Mid-volume times; each window ends at the end of its volume.
    tr, window : float
        Repetition time and window length (s).

    Returns
    -------
    bags : ndarray of shape (n_trs, n_features)
        Zero where a window holds no word.
    """
    onsets = words["onset"].to_numpy()
    ends = np.asarray(tr_times) + tr / 2
    # words inside (end - window, end]: a contiguous run of the sorted onsets
    last = np.searchsorted(onsets, ends, side="right")
    first = np.searchsorted(onsets, ends - window, side="right")
    cumulative = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    counts = (last - first)[:, None]
    sums = cumulative[last] - cumulative[first]
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def normalise_word(label):
    return re.sub(r"[^a-z']", "", label.lower())


# -- speech-model features, cached per model ---------------------------------------------------

def model_sources(args):
    """Model key -> (path, description of the revision) for the speech models asked for."""
    from sk_braintune.builtin import load_ssl_speech_model, load_whisper_tiny_en

    sources = {}
    for key in args.models:
        if key == "whisper":
            sources[key] = (load_whisper_tiny_en(), {"model": "whisper tiny.en (converted)"})
        elif key == "ssl":
            path = args.ssl_model or load_ssl_speech_model()
            marker = Path(path) / "sk_braintune_ssl.json"
            info = {"model": "self-supervised model", "path": str(path)}
            if marker.is_file():
                log = json.loads(marker.read_text())
                info.update({k: log.get(k) for k in ("revision", "recipe", "seconds",
                                                     "fixed_batch_loss", "n_parameters",
                                                     "n_training_seconds")})
            info["weights_fingerprint"] = model_fingerprint(path)
            sources[key] = (str(path), info)
        else:
            raise ValueError(f"unknown model {key!r}; choose from {sorted(MODEL_NAMES)}")
    return sources


def model_fingerprint(path):
    """Digest of a model directory's weights and config (a cache key of its features)."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in Path(path).iterdir()
                       if p.suffix in (".json", ".safetensors", ".bin")):
        digest.update(name.encode())
        digest.update(hashlib.sha256((Path(path) / name).read_bytes()).digest())
    return digest.hexdigest()[:16]


def story_features(key, path, data, stories, window, cache_root, batch_size):
    """Every layer's mean-pooled window features of ``stories``, cached on disk per story.

    The cache file of a story is named by the model's weights, the story's audio and the
    window, so only stories not extracted before are run through the model.

    Returns
    -------
    features : dict of str to ndarray of shape (n_trs, n_layers * hidden_size)
    n_layers : int
    """
    from sk_braintune.features import extract_layer_features
    from sk_braintune.windows import windows_from_dataset

    folder = Path(cache_root) / f"{key}_{model_fingerprint(path)}_w{window:g}"
    folder.mkdir(parents=True, exist_ok=True)

    def cache_file(story):
        digest = hashlib.sha256(np.ascontiguousarray(data.audio[story]).tobytes())
        return folder / f"{story}_{digest.hexdigest()[:12]}.npy"

    missing = [s for s in stories if not cache_file(s).is_file()]
    if missing:
        start = time.perf_counter()
        X, _, groups = windows_from_dataset(data, missing, window=window)
        print(f"{key}: extracting {len(X)} windows of {window:g} s ({len(missing)} stories) ...",
              flush=True)
        features, layers = extract_layer_features(path, X, batch_size=batch_size, verbose=True)
        for s in missing:
            tmp = cache_file(s).with_suffix(".tmp.npy")
            np.save(tmp, features[groups == s])
            tmp.replace(cache_file(s))
        (folder / "n_layers.txt").write_text(str(len(layers)))
        print(f"{key}: features in {time.perf_counter() - start:.0f} s -> {folder}", flush=True)
    n_layers = int((folder / "n_layers.txt").read_text())
    return {s: np.load(cache_file(s)) for s in stories}, n_layers


# -- one seed, one size: every feature space against every simulator setting --------------------

def dataset_kwargs(args, seed, context, size):
    from study_braintuning import held_out_stories

    kwargs = dict(held_out_stories(seed, stories=args.stories), stories=args.stories,
                  random_state=seed, context_words=context)
    if args.n_train_stories:
        kwargs["n_train_stories"] = size
    elif size:
        kwargs["minutes"] = size
    return kwargs


def score_size(args, seed, size, model_features, word_vectors):
    """Rows (one per context setting) of one seed and one data size."""
    from sk_braintune.builtin import make_story_dataset
    from sk_braintune.evaluation import fit_score_encoding, split_layers
    from sk_braintune.features.lowlevel import power_spectrum_features

    datasets = {c: make_story_dataset(**dataset_kwargs(args, seed, c, size))
                for c in args.context_words}
    first = datasets[args.context_words[0]]
    fit = first.split["train"] + first.split["validation"]
    test = first.split["test"]
    stories = fit + test
    labels = np.asarray(first.voxel_labels)
    semantic, auditory = labels == "semantic", labels == "auditory"
    for c, data in datasets.items():
        assert data.split == first.split
        for s in stories:  # auditory voxels read acoustics only: the same for every setting
            assert np.array_equal(data.responses[s][:, auditory],
                                  first.responses[s][:, auditory]), (c, s)
    groups = np.concatenate([[s] * len(first.tr_times[s]) for s in stories])
    # responses: semantic voxels of every setting side by side, then the auditory voxels
    responses = np.concatenate(
        [np.concatenate([datasets[c].responses[s][:, semantic] for c in args.context_words]
                        + [first.responses[s][:, auditory]], axis=1) for s in stories])
    ceiling = np.concatenate([datasets[c].noise_ceiling[semantic] for c in args.context_words]
                             + [first.noise_ceiling[auditory]])
    n_sem = int(semantic.sum())
    part = {c: slice(i * n_sem, (i + 1) * n_sem) for i, c in enumerate(args.context_words)}
    aud = slice(len(args.context_words) * n_sem, None)

    def score(features, y=responses, nc=ceiling):
        result = fit_score_encoding(features, y, groups, fit, test, noise_ceiling=nc)
        return result["normalized"]

    timings = {}
    normalized = {}
    words = {s: [normalise_word(w) for w in first.words[s]["label"]] for s in stories}
    vocabulary = sorted({w for s in fit for w in words[s]})
    index = {w: i for i, w in enumerate(vocabulary)}
    oracle = {}
    if not args.models_only:
        for name in WORD_SPACES:
            start = time.perf_counter()
            parts = []
            for s in stories:
                if name == "lexicon learned here":
                    values = np.zeros((len(words[s]), len(vocabulary)), dtype=np.float32)
                    seen = [(i, index[w]) for i, w in enumerate(words[s]) if w in index]
                    if seen:  # words never heard while fitting teach nothing
                        rows, cols = zip(*seen)
                        values[list(rows), list(cols)] = 1.0
                else:
                    values = np.stack([word_vectors[w] for w in words[s]])
                parts.append(window_bags(first.words[s], values, first.tr_times[s], first.tr,
                                         args.window))
            normalized[name] = score(np.concatenate(parts))
            timings[name] = time.perf_counter() - start
        start = time.perf_counter()
        normalized[ACOUSTIC] = score(np.concatenate([power_spectrum_features(
            first.audio[s], first.tr_times[s]) for s in stories]))
        timings[ACOUSTIC] = time.perf_counter() - start
        start = time.perf_counter()
        for c, data in datasets.items():
            bags = np.concatenate([window_bags(data.words[s], data.ground_truth["word_semantics"][s],
                                               data.tr_times[s], data.tr, args.window)
                                   for s in stories])
            oracle[c] = score(bags, responses[:, part[c]], ceiling[part[c]])
        timings[ORACLE] = time.perf_counter() - start
    per_layer = {}
    for key, (features, n_layers) in model_features.items():
        start = time.perf_counter()
        stacked = split_layers(np.concatenate([features[s] for s in stories]), n_layers)
        per_layer[key] = [score(stacked[:, layer]) for layer in range(n_layers)]
        timings[key] = time.perf_counter() - start

    fit_minutes = sum(first.audio[s].size for s in first.split["train"]) / 16000 / 60
    test_words = words[test[0]]
    common = {"seed": seed, "test_story": test[0], "validation_story": first.split["validation"][0],
              "size": size, "n_train_stories": len(first.split["train"]),
              "train_minutes": fit_minutes,
              "test_words_seen_while_fitting_%": float(100 * np.mean(
                  [w in index for w in test_words])),
              "vocabulary": len(vocabulary), "seconds": timings}
    rows = []
    for c in args.context_words:
        row = dict(common, context_words=c)
        row["semantic"], row["auditory"] = {}, {}
        if c in oracle:
            row["semantic"][ORACLE] = float(np.nanmean(oracle[c]))
        for name in normalized:
            row["semantic"][name] = float(np.nanmean(normalized[name][part[c]]))
            row["auditory"][name] = float(np.nanmean(normalized[name][aud]))
        for key, layers in per_layer.items():
            sem = [float(np.nanmean(v[part[c]])) for v in layers]
            audi = [float(np.nanmean(v[aud])) for v in layers]
            row["semantic_by_layer"] = {**row.get("semantic_by_layer", {}), key: sem}
            row["auditory_by_layer"] = {**row.get("auditory_by_layer", {}), key: audi}
            row["semantic"][key] = max(sem)
            row["semantic_best_layer"] = {**row.get("semantic_best_layer", {}),
                                          key: int(np.argmax(sem))}
            row["auditory"][key] = max(audi)
        rows.append(add_headroom(row))
    return rows


def add_headroom(row):
    """Oracle minus and learned-here lexicon minus each speech model's best semantic layer."""
    semantic = row["semantic"]
    if ORACLE in semantic:
        row["headroom"] = {f"{bound} - {key}": semantic[name] - semantic[key]
                           for key in row.get("semantic_best_layer", {})
                           for bound, name in (("oracle", ORACLE),
                                               ("learned here", "lexicon learned here"))}
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", choices=("default", "library"), default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--context-words", type=int, nargs="+", default=[3],
                        help="simulator context lengths to compare (default: 3, the dataset's)")
    parser.add_argument("--minutes", type=float, nargs="+", default=None,
                        help="training minutes to compare (0 = all; make_story_dataset(minutes=))")
    parser.add_argument("--n-train-stories", type=int, nargs="+", default=None,
                        help="training-set sizes in stories instead (the default collection)")
    parser.add_argument("--models", nargs="*", default=["ssl", "whisper"],
                        help="speech models to score (ssl, whisper; none: word spaces only)")
    parser.add_argument("--ssl-model", default=None,
                        help="directory of the SSL model (default: load_ssl_speech_model())")
    parser.add_argument("--feature-cache", default="/tmp/sk_braintune_learnability",
                        help="where the speech models' features are cached")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--features-only", action="store_true",
                        help="extract (cache) the speech models' features and stop")
    parser.add_argument("--models-only", action="store_true",
                        help="score only the speech models (not the word spaces, the power "
                             "spectrum and the oracle), e.g. to rerun one model's column")
    parser.add_argument("--merge", action="store_true",
                        help="merge into --output: rows already there get these models' "
                             "columns (updated), new rows are added")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--summarize", action="store_true",
                        help="only print the table of the rows already in --output")
    args = parser.parse_args()
    if args.summarize:
        saved = json.loads(Path(args.output).read_text())
        args.context_words = sorted({r["context_words"] for r in saved["rows"]})
        summarize(saved["rows"], args)
        return
    if args.minutes and args.n_train_stories:
        parser.error("give --minutes or --n-train-stories, not both")
    sizes = args.n_train_stories or args.minutes or [0]
    sizes = [int(s) if float(s).is_integer() else s for s in sizes]

    from sk_braintune.builtin import make_story_dataset
    from sk_braintune.builtin.minilm import embed_texts

    sources = model_sources(args)
    everything = make_story_dataset(stories=args.stories)  # every story's audio and words
    needed = set()  # the stories the grid fits or tests on
    for seed in args.seeds:
        for size in sizes:
            split = make_story_dataset(**dataset_kwargs(args, seed, args.context_words[0],
                                                        size)).split
            needed.update(split["train"] + split["validation"] + split["test"])
    model_features = {key: story_features(key, path, everything, sorted(needed), args.window,
                                          args.feature_cache, args.batch_size)
                      for key, (path, _) in sources.items()}
    if args.features_only:
        return
    all_words = sorted({normalise_word(w) for s in everything.stories
                        for w in everything.words[s]["label"]})
    word_vectors = dict(zip(all_words, embed_texts(all_words)))

    rows = []
    for seed in args.seeds:
        for size in sizes:
            start = time.perf_counter()
            new = score_size(args, seed, size, model_features, word_vectors)
            for row in new:
                print(json.dumps({k: row[k] for k in ("seed", "size", "context_words",
                                                      "semantic", "auditory")}), flush=True)
            print(f"seed {seed} size {size}: {time.perf_counter() - start:.0f} s", flush=True)
            rows.extend(new)
            if args.output:
                write(args, sources, rows)
    if args.output:
        rows = write(args, sources, rows)
    summarize(rows, args)


def write(args, sources, rows):
    """Write the settings and rows (with ``--merge``, update the models' columns only)."""
    path = Path(args.output)
    out = {"settings": {k: v for k, v in vars(args).items() if k != "merge"},
           "models": {MODEL_NAMES[k]: info for k, (_, info) in sources.items()},
           "rows": rows}
    if args.merge and path.is_file():
        old = json.loads(path.read_text())
        fresh = {(r["seed"], r["size"], r["context_words"]): r for r in rows}
        known = {(r["seed"], r["size"], r["context_words"]) for r in old["rows"]}
        old["rows"].extend(r for k, r in fresh.items() if k not in known)
        for row in old["rows"]:
            new = fresh.get((row["seed"], row["size"], row["context_words"]))
            if new is None or new is row:
                continue
            for field in ("semantic", "auditory", "semantic_by_layer", "auditory_by_layer",
                          "semantic_best_layer"):
                row.setdefault(field, {}).update(
                    {k: v for k, v in new.get(field, {}).items()
                     if k in sources or not args.models_only})
            row.setdefault("seconds", {}).update(new.get("seconds", {}))
            add_headroom(row)
        old["models"].update(out["models"])
        merged = old.setdefault("merged_settings", [])
        if out["settings"] not in merged:
            merged.append(out["settings"])
        out = old
    path.write_text(json.dumps(out, indent=2))
    return out["rows"]


def mean(rows, field, key):
    """Mean of ``row[field][key]`` over rows (NaN where absent)."""
    return float(np.mean([r.get(field, {}).get(key, np.nan) for r in rows]))


def summarize(rows, args):
    """Print the mean over seeds of every column, per size and simulator setting."""
    models = list(dict.fromkeys(k for r in rows for k in r.get("semantic_best_layer", {})))
    columns = [ORACLE, *WORD_SPACES, ACOUSTIC, *models]
    print("\nsemantic-voxel normalised r (mean over held-out stories; speech models: best "
          "layer), auditory r of the models, headroom vs each speech model")
    head = f"{'size':>6} {'ctx':>3} {'min':>6} {'n':>2} " + " ".join(f"{c[:12]:>12}" for c in columns)
    head += " " + " ".join(f"{'aud ' + m:>11}" for m in models)
    head += " " + " ".join(f"{h + ' ' + m:>14}" for m in models for h in ("orc-", "lrn-"))
    print(head)
    for size in dict.fromkeys(r["size"] for r in rows):
        for c in args.context_words:
            subset = [r for r in rows if r["size"] == size and r["context_words"] == c]
            if not subset:
                continue
            line = (f"{size!s:>6} {c:>3} {np.mean([r['train_minutes'] for r in subset]):6.1f} "
                    f"{len(subset):2d} ")
            line += " ".join(f"{mean(subset, 'semantic', k):12.3f}" for k in columns)
            line += " " + " ".join(f"{mean(subset, 'auditory', m):11.3f}" for m in models)
            line += " " + " ".join(f"{mean(subset, 'headroom', f'{h} - {m}'):14.3f}"
                                   for m in models for h in ("oracle", "learned here"))
            print(line)


if __name__ == "__main__":
    main()
