"""How much of the simulated semantic voxels can a model learn from the training stories?

Brain-tuning can only add semantic information that the training stories teach. This script
bounds that without any speech model: it scores, with the study's ridge protocol (per-story
z-score, FIR delays 1-4, voxelwise ridge with story-grouped CV, noise-ceiling-normalised r on the
held-out story), three idealised word-level feature spaces, each averaged over the same causal
window the speech models see:

- ``lexicon learned here``: a perfect word recogniser that knows nothing of meaning, i.e. one-hot
  word identities (vocabulary of the fitting stories). A ridge on it learns every word's meaning
  from these stories only, which is all a tuned model could learn here.
- ``pretrained lexicon``: the all-MiniLM-L6-v2 embedding of each word alone (meaning known before
  seeing these stories).
- ``true semantic features``: the simulator's latent semantic features at each word (oracle).

Held-out stories rotate with the seed as in ``study_braintuning.py`` (seed k tests on story k).

Usage::

    python benchmarks/semantic_learnability.py --seeds 0 1 2 3 4 5 [--context-words 3]
        [--n-train-stories 3 6 9]
"""

import argparse
import json
import re

import numpy as np


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
    out = np.zeros((len(tr_times), values.shape[1]))
    for k, mid in enumerate(tr_times):
        end = mid + tr / 2
        inside = (onsets <= end) & (onsets > end - window)
        if inside.any():
            out[k] = values[inside].mean(axis=0)
    return out


def normalise_word(label):
    return re.sub(r"[^a-z']", "", label.lower())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--context-words", type=int, default=None,
                        help="simulator context (default: the dataset's default)")
    parser.add_argument("--n-train-stories", type=int, nargs="+", default=[None],
                        help="training-set sizes to compare (default: all stories)")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from sk_braintune.datasets import make_story_dataset
    from sk_braintune.datasets.story import _embed_contexts
    from sk_braintune.evaluation import fit_score_encoding
    from study_braintuning import held_out_stories  # this folder is on sys.path

    rows = []
    for seed, n_train in ((s, n) for n in args.n_train_stories for s in args.seeds):
        kwargs = dict(held_out_stories(seed), n_train_stories=n_train)
        if args.context_words is not None:
            kwargs["context_words"] = args.context_words
        data = make_story_dataset(random_state=seed, **kwargs)
        fit = data.split["train"] + data.split["validation"]
        test = data.split["test"]
        stories = fit + test
        labels = [[normalise_word(w) for w in data.words[s]["label"]] for s in stories]
        vocabulary = sorted({w for story in labels[:len(fit)] for w in story})
        index = {w: i for i, w in enumerate(vocabulary)}
        all_words = sorted({w for story in labels for w in story})
        minilm = dict(zip(all_words, _embed_contexts(all_words, cache=True)))

        spaces = {"lexicon learned here": [], "pretrained lexicon": [],
                  "true semantic features": []}
        for story, words in zip(stories, labels):
            onehot = np.zeros((len(words), len(vocabulary)))
            for i, w in enumerate(words):
                if w in index:  # words never heard while fitting teach nothing
                    onehot[i, index[w]] = 1.0
            per_word = {"lexicon learned here": onehot,
                        "pretrained lexicon": np.stack([minilm[w] for w in words]),
                        "true semantic features": data.ground_truth["word_semantics"][story]}
            for name, values in per_word.items():
                spaces[name].append(window_bags(data.words[story], values,
                                                data.tr_times[story], data.tr, args.window))
        groups = np.concatenate([[s] * len(data.tr_times[s]) for s in stories])
        responses = np.concatenate([data.responses[s] for s in stories])
        semantic = np.asarray(data.voxel_labels) == "semantic"
        test_words = labels[-1]
        row = {"seed": seed, "test_story": test[0], "n_train_stories": len(data.split["train"]),
               "fit_minutes": sum(len(data.tr_times[s]) for s in fit) * data.tr / 60,
               "test_words_seen_while_fitting_%": 100 * np.mean(
                   [w in index for w in test_words]),
               "vocabulary": len(vocabulary)}
        for name, parts in spaces.items():
            result = fit_score_encoding(np.concatenate(parts), responses, groups, fit, test,
                                        noise_ceiling=data.noise_ceiling)
            row[name] = float(np.nanmean(result["normalized"][semantic]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    for n_train in dict.fromkeys(row["n_train_stories"] for row in rows):
        subset = [row for row in rows if row["n_train_stories"] == n_train]
        minutes = np.mean([row["fit_minutes"] for row in subset])
        print(f"{n_train} training stories ({minutes:.1f} min fitted), mean over "
              f"{len(subset)} held-out stories of the semantic-voxel normalised r:")
        for name in ("lexicon learned here", "pretrained lexicon", "true semantic features"):
            values = [row[name] for row in subset]
            print(f"  {name:>24}: mean {np.mean(values):.3f} "
                  f"({', '.join(f'{v:.3f}' for v in values)})")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
