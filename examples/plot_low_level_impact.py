"""
Low-level impact: how much of a model's brain alignment is just sound?
======================================================================

A speech model can predict brain responses for shallow reasons: its features carry the
loudness, the spectrum and the phonemes of the audio, and so do the auditory cortex's
responses. The brain-tuning paper measures this with the *low-level impact* (after Oota et
al.): regress low-level speech features out of the model's features, refit the encoding model
on the residuals, and report the share of the alignment that was lost,

.. math:: \\text{impact} = 100 \\cdot (A - A_\\text{resid}) / A \\quad (\\%).

Here ``A`` is the noise-ceiling-normalised correlation on a held-out story. Brain-tuning is
supposed to *lower* this share. This example measures it for each layer of the pretrained
Whisper tiny.en on the simulated experiment.
"""

# %%
# Model features per story
# ------------------------
# :class:`~sk_braintune.SpeechFeatureExtractor` with ``layers="all"`` returns the mean-pooled
# hidden states of every layer (0 = input embeddings, 4 = last block) side by side; one forward
# pass per window serves them all.
import matplotlib.pyplot as plt
import numpy as np

from sk_braintune import SpeechFeatureExtractor
from sk_braintune.analysis.figures import plot_low_level_impact
from sk_braintune.evaluation import low_level_comparison
from sk_braintune.builtin import make_story_dataset
from sk_braintune.datasets import windows_from_dataset
from sk_braintune.features.lowlevel import lowlevel_features
from sk_braintune.builtin import load_whisper_tiny_en

dataset = make_story_dataset(n_train_stories=3, max_words=150)
train_stories, test_stories = dataset.split["train"], dataset.split["test"]
stories = train_stories + test_stories

X, _, groups = windows_from_dataset(dataset, stories, window=8.0)
extractor = SpeechFeatureExtractor(load_whisper_tiny_en(), layers="all", batch_size=8)
all_layers = extractor.fit_transform(X)
n_layers, dim = len(extractor.layers_), extractor.hidden_size_
print(f"{all_layers.shape[0]} TRs x {n_layers} layers x {dim} units")


def layer_features(layer):
    """Story -> (n_trs, dim) features of one layer."""
    columns = slice(layer * dim, (layer + 1) * dim)
    return {story: all_layers[groups == story, columns] for story in stories}


# %%
# Low-level features
# ------------------
# :func:`~sk_braintune.features.lowlevel.lowlevel_features` computes the paper's low-level
# feature spaces per story, resampled to the TR times like the model features: here the log
# power spectrum of the audio, phoneme counts and articulatory-feature counts per TR (from the
# phone alignments that espeak-ng gives for free).
lowlevel = [lowlevel_features(dataset, kind, stories)
            for kind in ("powspec", "phoneme", "articulation")]
print({kind: block[test_stories[0]].shape[1]
       for kind, block in zip(("powspec", "phoneme", "articulation"), lowlevel)})

# %%
# Alignment with and without the low-level features
# -------------------------------------------------
# :func:`~sk_braintune.evaluation.low_level_comparison` z-scores both feature sets
# per story, fits a :class:`~sk_braintune.Residualizer` on the training stories (a ridge from
# the low-level features to every model feature, one penalty per feature) and applies it to all
# stories, adds FIR delays per story, fits one encoding model on the raw features and one on
# the residuals, and scores both on the test story.
impacts, alignment = {}, {}
for layer in range(1, n_layers):
    result = low_level_comparison(
        layer_features(layer), lowlevel, dataset.responses, train_stories, test_stories,
        noise_ceiling=dataset.noise_ceiling, voxel_labels=dataset.voxel_labels, cv=3)
    table = result.impact.drop(index="noise", errors="ignore")
    impacts[f"layer {layer}"] = table
    alignment[layer] = table[["A", "A_resid"]]
print(impacts[f"layer {n_layers - 1}"].round(3))

# %%
# Impact per voxel kind
# ---------------------
# The impact is a ratio, so it only means something where the model is aligned in the first
# place. Whisper tiny.en predicts the auditory and mixed voxels well (see the next figure), and
# a sizeable share of that alignment goes away with the low-level features: those voxels follow
# the sound. Its alignment with the semantic voxels is close to 0, and a ratio of two numbers
# near 0 is noise, so they are left out of this figure (as are the noise voxels); this is the
# number that brain-tuning should move, once tuning has created some semantic alignment.
reliable = ["auditory", "mixed"]
fig = plot_low_level_impact({name: table.loc[reliable] for name, table in impacts.items()},
                            title="Whisper tiny.en: low-level impact per layer")
plt.figure(fig)  # hand the figure to pyplot so that the gallery shows it
plt.show()

# %%
# The alignment itself, before (``A``) and after (``A_resid``) residualisation, for the last
# layer, in every kind of voxel:
last = alignment[n_layers - 1]
kinds = list(last.index)
positions = np.arange(len(kinds))
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.bar(positions - 0.2, last["A"], width=0.4, label="model features")
ax.bar(positions + 0.2, last["A_resid"], width=0.4, label="low-level regressed out")
ax.set_xticks(positions, kinds)
ax.axhline(0, color="black", linewidth=0.8)
ax.set_ylabel("normalised r (test story)")
ax.set_title(f"Layer {n_layers - 1}")
ax.legend()
plt.show()
