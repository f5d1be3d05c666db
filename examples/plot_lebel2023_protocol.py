"""
The paper's evaluation protocol on LeBel et al. (2023)
======================================================

This example reproduces the brain-alignment protocol of the brain-tuning paper (Moussa, Klakow
& Toneva, ICLR 2025) on the real data: one participant of the natural-story fMRI dataset of
LeBel et al. (2023), OpenNeuro ds003020.

* **Features**: for every story, causal windows of 16 s ending every 0.1 s; the *last* frame of
  each layer; resampled to the fMRI volume times with a 3-lobe Lanczos filter; trimmed to the
  delivered responses; z-scored per story.
* **Encoding model**: FIR delays of 1-4 TRs within each story; a voxelwise ridge regression
  whose penalty grid is the reference code's (``alphas="huth"``), one penalty per voxel.
* **Score**: Pearson r on the test story ``wheretheressmoke``, divided by each voxel's noise
  ceiling (from its repeated presentations), per layer.

It needs a local copy of ds003020 (about 30 GB for one participant's preprocessed data, the
stimuli and the TextGrids) and a GPU for reasonable run times: the 0.1-s protocol runs about 20
forward passes per TR. It is therefore **not executed** when this documentation is built. Set
``SK_BRAINTUNE_DS003020`` to the dataset folder to run it, and optionally
``SK_BRAINTUNE_MODEL`` (a Hugging Face model name or local directory, e.g. a brain-tuned
backbone written by ``BrainTuner.save_pretrained``) and ``SK_BRAINTUNE_SUBJECT``.
"""

# %%
# Where the data are
# ------------------
# ``root`` must hold ``derivative/preprocessed_data/<subject>/<story>.hf5``,
# ``stimuli/<story>.wav``, ``derivative/TextGrids/<story>.TextGrid`` and
# ``derivative/respdict.json`` (the OpenNeuro layout).
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

root = os.environ.get("SK_BRAINTUNE_DS003020")
if not root or not Path(root).is_dir():
    sys.exit(
        "This example needs a local copy of OpenNeuro ds003020 (LeBel et al. 2023): download it "
        "(e.g. `datalad install https://github.com/OpenNeuroDatasets/ds003020` and `datalad get` "
        "the participant's derivative/preprocessed_data, stimuli/ and derivative/TextGrids/), "
        "then set SK_BRAINTUNE_DS003020 to its folder and run this script again.")
subject = os.environ.get("SK_BRAINTUNE_SUBJECT", "UTS03")
model = os.environ.get("SK_BRAINTUNE_MODEL", "facebook/wav2vec2-base")

# %%
# Load one participant
# --------------------
# :func:`~sk_braintune.datasets.load_lebel2023` reads the responses (already trimmed by 10 TRs
# at the start and 5 at the end; the test story by 40 more), mixes the audio down to 16 kHz
# mono and computes the mid-volume time of every row of the responses with the community's
# simulated-trigger convention. Voxels with NaN are set to 0, as in HuthLab's loaders. The split
# is the paper's: test ``wheretheressmoke``, validation ``stagefright`` and ``life``.
from sk_braintune.datasets import load_lebel2023

dataset = load_lebel2023(root, subject, verbose=True)
train_stories = dataset.split["train"] + dataset.split["validation"]
test_stories = dataset.split["test"]
print(dataset.description)

# %%
# Features by the paper's protocol
# --------------------------------
# :func:`~sk_braintune.features.protocol.extract_stories_features` loads the model once and, for
# each story, runs it on 16 s windows ending every 0.1 s, keeps the last frame of every layer,
# Lanczos-resamples to the TR times and z-scores. The loader's TR times are those of the rows
# of the responses (the trims are already applied, and resampling to a subset of a regular grid
# gives the same values as resampling to the whole grid and trimming), hence ``trim=None``.
from sk_braintune.features.protocol import extract_stories_features
from sk_braintune.models import load_backbone

backbone = load_backbone(model)  # loaded once: the layer sizes are needed below
dim, n_layers = backbone.hidden_size, backbone.num_hidden_layers + 1
stories = train_stories + test_stories
features = extract_stories_features(backbone, dataset.audio, dataset.tr_times, stories=stories,
                                    window=16.0, step=0.1, layers="all", trim=None,
                                    zscore=True, batch_size=32, device="auto", verbose=True)
assert next(iter(features.values())).shape[1] == n_layers * dim

# %%
# Layer-wise encoding models
# --------------------------
# For each layer: FIR delays 1-4 within each story (:class:`~sk_braintune.FIRDelayer` with
# ``groups``), a :class:`~sk_braintune.RidgeEncoder` with the reference grid ``alphas="huth"``
# (``logspace(1, 4, 15)`` in the reference's units, squared into scikit-learn's) and one penalty
# per voxel by story-grouped 5-fold cross-validation on the training stories, then Pearson r on
# the test story divided by the noise ceiling. ``backend="torch"`` runs the ridge on the GPU
# when there is one.
from sk_braintune import FIRDelayer, RidgeEncoder
from sk_braintune.metrics import correlation_score, normalized_correlation

groups = {s: np.repeat(s, len(features[s])) for s in stories}
y_train = np.concatenate([dataset.responses[s] for s in train_stories])
y_test = np.concatenate([dataset.responses[s] for s in test_stories])
g_train = np.concatenate([groups[s] for s in train_stories])
g_test = np.concatenate([groups[s] for s in test_stories])
X_train_all = np.concatenate([features[s] for s in train_stories])
X_test_all = np.concatenate([features[s] for s in test_stories])

delayer = FIRDelayer(delays=(1, 2, 3, 4))
normalized_by_layer = []
for layer in range(n_layers):
    columns = slice(layer * dim, (layer + 1) * dim)
    X_train = delayer.fit_transform(X_train_all[:, columns], groups=g_train)
    X_test = delayer.transform(X_test_all[:, columns], groups=g_test)
    encoder = RidgeEncoder(alphas="huth", cv=min(5, len(train_stories)), backend="torch",
                           device="auto")
    encoder.fit(X_train, y_train, groups=g_train)
    r = correlation_score(y_test, encoder.predict(X_test), multioutput="raw_values")
    normalized = normalized_correlation(r, dataset.noise_ceiling)
    normalized_by_layer.append(normalized)
    print(f"layer {layer:2d}: mean r {r.mean():.3f}, mean normalised r "
          f"{np.nanmean(normalized):.3f} over {np.sum(~np.isnan(normalized))} voxels")
normalized_by_layer = np.array(normalized_by_layer)

# %%
# Alignment per layer
# -------------------
# The paper reports means over voxels with a reliable signal; voxels whose noise ceiling is at
# most 0.05 are NaN here and left out of the means (the reference code divides by the ceiling
# after ``nan_to_num``, which gives +-inf there). With
# ROI labels (``voxel_labels`` of :func:`~sk_braintune.datasets.load_lebel2023`),
# :func:`~sk_braintune.metrics.roi_means` gives the same per region.
reliable = dataset.noise_ceiling > 0.4
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
ax.plot(np.nanmean(normalized_by_layer, axis=1), marker="o", label="all voxels (cc_max > 0.05)")
ax.plot(np.nanmean(normalized_by_layer[:, reliable], axis=1), marker="o",
        label="cc_max > 0.4")
ax.set_xlabel("layer (0 = input embeddings)")
ax.set_ylabel("normalised r, test story")
ax.set_title(f"{model} on {subject}")
ax.legend()
plt.show()
