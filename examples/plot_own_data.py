"""
Your own data: a BIDS dataset on a cortical surface
===================================================

Any naturalistic-listening study stored as BIDS with preprocessed derivatives (fMRIPrep, AFNI,
...) enters the toolkit through one call, :func:`~sk_braintune.datasets.load_bids`, or the
dataset-specific :func:`~sk_braintune.datasets.load_narratives` and
:func:`~sk_braintune.datasets.load_petit_prince`. They all return the same dataset record as
:func:`~sk_braintune.datasets.load_lebel2023` and the built-in simulated experiment, so every
estimator, feature extractor and command works on it unchanged.

This example writes a miniature copy of the Narratives dataset (OpenNeuro ds002345) in its real
file formats -- GIfTI hemispheres with one data array per volume, ``events.tsv`` with ``music``
and ``story`` rows, Gentle word alignments, ``code/event_meta.json`` -- loads one listener, fits
a phoneme-rate encoding model and writes its per-vertex scores back as a GIfTI pair. It runs
offline in a few seconds.
"""

# %%
# A miniature Narratives dataset
# ------------------------------
# Three listeners; ``sub-001`` heard *Pie Man* twice (``run-1`` and ``run-2``), which gives a
# noise ceiling; ``slumlordreach`` holds two stories in one audio file, named by
# ``code/event_meta.json``.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sk_braintune import FIRDelayer, RidgeEncoder
from sk_braintune.datasets import load_narratives, save_record_image, validate_record
from sk_braintune.features.lowlevel import lowlevel_features
from sk_braintune.metrics import normalized_correlation
from sk_braintune.preprocessing import zscore_per_story
from sk_braintune.testing import make_miniature_narratives

workdir = Path(tempfile.mkdtemp())
root = make_miniature_narratives(workdir / "ds002345")
print(sorted(p.name for p in (root / "sub-001" / "func").iterdir()))

# %%
# Load one listener on fsaverage6
# -------------------------------
# The record holds each story's audio (16 kHz), the volumes of its ``story`` row with their
# mid-volume times *on the audio file's clock*, the words Gentle aligned, and the way back from
# columns to vertices (``column_index``: left hemisphere's vertices, then the right's).
data = load_narratives(root, "sub-001", space="fsaverage6", pipeline="afni-nosmooth")
validate_record(data)
print(data.description)
for story in data.stories:
    print(f"{story:9s} {data.responses[story].shape} TRs x vertices, first TR at "
          f"{data.tr_times[story][0]:.2f} s of its audio, {len(data.words[story])} words")
print("repeats:", {s: r.shape for s, r in data.repeats.items()})

# %%
# An encoding model on phoneme features
# -------------------------------------
# Any feature that follows the record works; here, phoneme indicator features from Gentle's
# phones (ARPAbet), delayed by 1-4 TRs, predict each vertex; the test story is the repeated one.
# The miniature's responses are a story-locked random signal, not driven by phonemes, so the
# scores hover around 0: what this shows is the path from files to scores.
features = lowlevel_features(data, "phoneme", stories=data.stories)
stories = data.split["train"] + data.split["test"]
groups = np.concatenate([[s] * len(data.responses[s]) for s in stories])
X = zscore_per_story(np.concatenate([features[s] for s in stories]), groups, dtype=np.float32)
y = zscore_per_story(np.concatenate([data.responses[s] for s in stories]), groups,
                     dtype=np.float32)
X = FIRDelayer(delays=(1, 2, 3, 4)).fit_transform(X, groups=groups)
test = groups == data.split["test"][0]
encoder = RidgeEncoder(alphas=np.logspace(0, 4, 9), cv=2).fit(X[~test], y[~test],
                                                                groups=groups[~test])
r = encoder.score_voxels(X[test], y[test])
normalized = normalized_correlation(r, data.noise_ceiling)
print(f"median r on {data.split['test'][0]!r}: {np.median(r):.3f}; noise-ceiling-normalised: "
      f"{np.nanmedian(normalized):.3f}")

# %%
# Scores back on the surface
# --------------------------
# :func:`~sk_braintune.datasets.save_record_image` writes one value per column as a NIfTI
# image in a volume space, or as a left/right GIfTI pair on a surface (NaN on the medial wall,
# which the loader dropped), ready for any surface viewer.
paths = save_record_image(r, data, workdir / "phoneme_r")
print([p.name for p in paths])
left = data.column_index < data.n_vertices[0]
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.bar(data.column_index[left], r[left], color="tab:blue", label="left")
ax.bar(data.column_index[~left], r[~left], color="tab:orange", label="right")
ax.set(xlabel="vertex (left, then right hemisphere)", ylabel="r on the held-out story")
ax.legend()
fig.tight_layout()
plt.show()
