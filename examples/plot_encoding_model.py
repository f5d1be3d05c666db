"""
Encoding models: FIR delays, per-voxel ridge penalties and noise ceilings
=========================================================================

An encoding model predicts each voxel's response from stimulus features. Three details decide
whether its scores can be trusted, and this example looks at each on the simulated experiment,
whose true stimulus features are known:

* the BOLD response lags the stimulus by 4-6 s: :class:`~sk_braintune.FIRDelayer` gives the
  model the features of the previous TRs, never across a story boundary;
* voxels differ in signal-to-noise ratio, so each deserves its own ridge penalty:
  :class:`~sk_braintune.RidgeEncoder` chooses one per voxel by story-grouped cross-validation;
* a correlation means little without the best correlation the noise allows:
  :func:`~sk_braintune.metrics.noise_ceiling` estimates it from repeated presentations.
"""

# %%
# Stimulus features at the TR times
# ---------------------------------
# The simulated semantic voxels read 12 latent semantic dimensions of the words just heard
# (``ground_truth["word_semantics"]``, one row per word, before the haemodynamic response); the
# auditory voxels read band-power envelopes of the sound. We rebuild both feature spaces the
# way a real study would: the word features are held from each word's onset to the next on a
# 0.1 s grid, and both are resampled to the TR times with a 3-lobe Lanczos filter
# (:func:`~sk_braintune.features.lanczos.lanczos_resample`; the power spectrum comes from
# :func:`~sk_braintune.features.lowlevel.lowlevel_features`). No haemodynamic response is
# applied: that is the FIR delays' job.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import Ridge

from sk_braintune import FIRDelayer, RidgeEncoder
from sk_braintune.builtin import make_story_dataset
from sk_braintune.preprocessing import zscore_per_story
from sk_braintune.features.lanczos import lanczos_resample
from sk_braintune.features.lowlevel import lowlevel_features
from sk_braintune.metrics import noise_ceiling, normalized_correlation, roi_means

dataset = make_story_dataset(max_words=150)
stories = dataset.split["train"] + dataset.split["test"]
test_story = dataset.split["test"][0]

powspec = lowlevel_features(dataset, "powspec", stories, n_bands=24)


def word_features(story, step=0.1):
    """Latent semantics of the current word on a 0.1 s grid, resampled to the TR times."""
    onsets = dataset.words[story]["onset"].to_numpy()
    grid = np.arange(0.0, len(dataset.audio[story]) / dataset.sample_rate, step)
    current_word = np.clip(np.searchsorted(onsets, grid, side="right") - 1, 0, None)
    held = dataset.ground_truth["word_semantics"][story][current_word]
    return lanczos_resample(held, grid, dataset.tr_times[story])


features = np.concatenate([np.hstack([word_features(s), powspec[s]]) for s in stories])
responses = np.concatenate([dataset.responses[s] for s in stories])
groups = np.concatenate([[s] * len(dataset.responses[s]) for s in stories])
features = zscore_per_story(features, groups, dtype=np.float32)
train, test = groups != test_story, groups == test_story
kinds = dataset.voxel_labels
print(f"features {features.shape}, responses {responses.shape}")

# %%
# FIR delays
# ----------
# ``FIRDelayer(delays=(1, 2, 3, 4))`` concatenates the features of TRs ``t-1 ... t-4``; the rows
# shifted in at the start of each story are zeros, because ``groups`` marks where stories begin.
delayer = FIRDelayer(delays=(1, 2, 3, 4))
delayed = delayer.fit_transform(features, groups=groups)
print(delayed.shape, delayer.get_feature_names_out()[[0, -1]])

# %%
# One penalty per voxel
# ---------------------
# The penalty grid is in scikit-learn's units (``alpha`` on the squared norm of the weights);
# the inner cross-validation holds out whole training stories (``GroupKFold`` over ``groups``).
encoder = RidgeEncoder(alphas=np.logspace(-1, 5, 13), cv=3)
encoder.fit(delayed[train], responses[train], groups=groups[train])
r_per_voxel = encoder.score_voxels(delayed[test], responses[test])

# %%
# Which penalties did the voxels choose? The simulator knows each voxel's signal-to-noise
# ratio: noisier voxels tend to choose stronger penalties (more shrinkage), while for the pure
# noise voxels every penalty predicts equally badly and the choice is arbitrary.
snr = dataset.ground_truth["snr"]
signal = kinds != "noise"
log_alpha = np.log10(encoder.best_alphas_)
terciles = np.quantile(snr[signal], [1 / 3, 2 / 3])
snr_bin = np.digitize(snr, terciles)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
bins = np.arange(-1.25, 5.5, 0.5)
axes[0].hist([log_alpha[signal], log_alpha[~signal]], bins=bins, label=["signal", "noise"])
axes[0].set_xlabel("log10 chosen penalty (best_alphas_)")
axes[0].set_ylabel("voxels")
axes[0].legend()
axes[1].boxplot([log_alpha[signal & (snr_bin == b)] for b in range(3)])
axes[1].set_xticks([1, 2, 3], ["low SNR", "medium SNR", "high SNR"])
axes[1].set_ylabel("log10 chosen penalty")
axes[1].set_title("Signal voxels by true signal-to-noise ratio")
plt.show()

# %%
# The chosen penalties are ordinary ridge penalties: for any voxel, the encoder's predictions
# equal those of :class:`sklearn.linear_model.Ridge` fitted with that voxel's penalty.
voxel = int(np.argmax(r_per_voxel))
reference = Ridge(alpha=encoder.best_alphas_[voxel]).fit(delayed[train], responses[train, voxel])
difference = np.abs(reference.predict(delayed[test]) - encoder.predict(delayed[test])[:, voxel])
print(f"voxel {voxel}: max |RidgeEncoder - Ridge| = {difference.max():.1e}")

# %%
# How much do per-voxel penalties buy? We compare with one penalty shared by all voxels (the
# best single value on the same inner cross-validation, ``alpha_per_target=False``). On this
# small experiment (9 training stories of 25 TRs) the two are close: choosing 1000 penalties
# from a few stories is itself noisy. Per-voxel choices pay off with real amounts of data
# (hours of stories), where voxels' best penalties differ reliably.
shared = RidgeEncoder(alphas=np.logspace(-1, 5, 13), cv=3, alpha_per_target=False)
shared.fit(delayed[train], responses[train], groups=groups[train])
r_shared = shared.score_voxels(delayed[test], responses[test])
print(f"shared penalty: {shared.best_alphas_[0]:.3g}")

# %%
# Noise ceilings
# --------------
# The test story was presented 6 times with independent noise. The noise ceiling ``cc_max``
# (Schoppe et al. 2016) is the correlation between the mean response and the noise-free signal
# it estimates, and normalised r = r / cc_max. The simulator knows the true ceiling. Estimated
# from a 25-TR story, the ceiling is noisy: pure-noise voxels (true ceiling 0) can reach
# estimates of 0.5 and more by chance. This is why studies estimate ceilings on long test
# stories, keep voxels above a threshold (cc_max > 0.4 for brain-tuning; voxels at or below
# 0.05 are always left out of normalised means here) and average normalised scores over regions.
ceiling = noise_ceiling(dataset.repeats[test_story])
assert np.allclose(ceiling, dataset.noise_ceiling)
true_ceiling = dataset.ground_truth["true_noise_ceiling"]

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for kind in ("auditory", "mixed", "semantic", "noise"):
    axes[0].scatter(true_ceiling[kinds == kind], ceiling[kinds == kind], s=6, label=kind)
axes[0].plot([0, 1], [0, 1], color="black", linewidth=0.8)
axes[0].set_xlabel("true noise ceiling")
axes[0].set_ylabel("estimated from 6 repeats")
axes[0].set_title("Noise ceiling per voxel")
axes[0].legend(markerscale=3)

labels = ["auditory", "mixed", "semantic"]
per_voxel = roi_means(normalized_correlation(r_per_voxel, ceiling), kinds)
one_alpha = roi_means(normalized_correlation(r_shared, ceiling), kinds)
positions = np.arange(len(labels))
axes[1].bar(positions - 0.2, [one_alpha[k] for k in labels], width=0.4, label="one penalty")
axes[1].bar(positions + 0.2, [per_voxel[k] for k in labels], width=0.4,
            label="one penalty per voxel")
axes[1].set_xticks(positions, labels)
axes[1].set_ylabel("normalised r on the test story")
axes[1].set_title("True features, FIR delays, ridge")
axes[1].legend(loc="lower right")
plt.show()

for kind in labels:
    print(f"{kind:>9}: normalised r {one_alpha[kind]:.3f} (one penalty), "
          f"{per_voxel[kind]:.3f} (per voxel)")
