"""
Brain-tuning one model on several participants
==============================================

The multi-brain-tuning follow-up (Moussa et al., NeurIPS 2025) tunes one speech model on the
fMRI of several listeners at once. Each training row is a (stimulus window, participant) pair:
a story's windows appear once per participant who heard it, and each row holds that
participant's responses in a voxel space common to everyone. Three things make this cheap and
sound:

* the rows of one window share one waveform (:func:`~sk_braintune.datasets.participant_windows`
  returns an :class:`~sk_braintune.windows.AudioWindows` that stores each story once);
* :class:`~sk_braintune.BrainTuner` runs the backbone **once** per batch of stimulus windows
  and back-propagates every participant's loss on that one forward pass
  (``participant_schedule="sequential"``) into one **shared** head (``head="shared"``);
* its validation split holds out whole stories for all participants at once, and
  ``history_`` records the validation r of each participant.

The ``participants`` of each row reach the tuner by metadata routing, like the stories
(``groups``), so the tuner works inside a :class:`~sklearn.pipeline.Pipeline` or a search.
Finally, the follow-up's data-efficiency curve asks how much of a *held-out* participant's
data an encoding model on the tuned features needs.

To run in seconds on a CPU, the model is a tiny randomly initialised wav2vec2
(:func:`~sk_braintune.testing.make_tiny_model`) and the stories are short: the numbers show
the mechanics, not the paper's effects. The follow-up's recipe on a real model is
``BrainTuner(model, lora_rank=8, lora_alpha=32, lora_dropout=0.1, optimizer="adamw",
lr_backbone=1e-4, lr_head=1e-4)`` (batch 128, up to 30 epochs with early stopping, 10 %
warm-up, the CNN frozen: the defaults).
"""

# %%
# Several listeners of the built-in stories
# -----------------------------------------
# The built-in dataset simulates ``n_participants`` listeners of the same stories, over one
# voxel space. Two of them tune the model; the third is held out.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.pipeline import make_pipeline

from sk_braintune import BrainTuner
from sk_braintune.analysis import data_efficiency_curve, plot_data_efficiency
from sk_braintune.evaluation import default_encoder
from sk_braintune.builtin import make_story_dataset
from sk_braintune.datasets import participant_windows, select_participant, windows_from_dataset
from sk_braintune.features import SpeechFeatureExtractor
from sk_braintune.testing import make_tiny_model

dataset = make_story_dataset(n_train_stories=3, max_words=120, n_participants=3)
tuned_on, held_out = list(dataset.participants[:2]), dataset.participants[2]
fit_stories = dataset.split["train"] + dataset.split["validation"]
test_stories = dataset.split["test"]

X, y, groups, participants = participant_windows(dataset, fit_stories, window=2.0,
                                                 participants=tuned_on)
# voxels reliable for everyone who tunes the model (noise ceiling above 0.4 for each)
ceilings = np.stack([dataset.participant_data[p].noise_ceiling for p in tuned_on])
voxels = np.flatnonzero(ceilings.min(axis=0) > 0.4)
y = y[:, voxels]
n_windows = len(set(zip(X.stories, X.ends)))
print(f"{len(X)} rows = {n_windows} windows x {len(tuned_on)} participants, "
      f"{len(voxels)} voxels; the audio is stored once: {X.nbytes / 1e6:.1f} MB for "
      f"{len(X) * X.shape[1] * 4 / 1e6:.1f} MB of materialised rows")

# %%
# Tuning in a Pipeline
# --------------------
# With routing enabled, ``set_fit_request(groups=True, participants=True)`` passes both on.
# ``trainable_layers=1`` trains the top block only and caches the frozen layers' outputs
# once per *window*, whatever the number of participants.
workdir = Path(tempfile.mkdtemp(prefix="sk_braintune_gallery_"))
tiny_model = make_tiny_model("wav2vec2", workdir / "tiny-wav2vec2")

with sklearn.config_context(enable_metadata_routing=True):
    tuner = BrainTuner(tiny_model, trainable_layers=1, batch_size=16, max_epochs=4,
                       validation=0.34, patience=None, lr_backbone=1e-3, lr_head=1e-3,
                       random_state=0)
    pipeline = make_pipeline(tuner.set_fit_request(groups=True, participants=True))
    pipeline.fit(X, y, groups=groups, participants=participants)

tuner = pipeline[-1]
print("validation stories (held out for both participants):", list(tuner.validation_groups_))

# %%
# ``history_`` holds each participant's validation r per epoch; ``valid_r`` is their mean.
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
epochs = [h["epoch"] + 1 for h in tuner.history_]
for participant in tuned_on:
    ax.plot(epochs, [h["valid_r_per_participant"][participant] for h in tuner.history_],
            marker="o", label=participant)
ax.plot(epochs, [h["valid_r"] for h in tuner.history_], "k--", label="mean")
ax.set_xlabel("epoch")
ax.set_ylabel("validation r")
ax.set_title("One shared head, two participants")
ax.legend()

# %%
# A held-out participant: how much of its data do the features need?
# ----------------------------------------------------------------------
# The encoding model of the held-out participant is trained on 1/8, 1/4, 1/2 or all of each
# training story (its first TRs) and scored on the test story, with the pretrained and the
# tuned features of the last layer.
held = select_participant(dataset, held_out)
X_all, y_held, g_all = windows_from_dataset(held, fit_stories + test_stories, window=2.0)
pretrained = SpeechFeatureExtractor(tiny_model, layers=-1, pooling="mean", device="cpu")
features = {"pretrained": pretrained.fit_transform(X_all), "tuned": tuner.transform(X_all)}
curve = data_efficiency_curve(features, y_held[:, voxels], g_all, fit_stories, test_stories,
                              noise_ceiling=held.noise_ceiling[voxels], reference="pretrained",
                              estimator=default_encoder(cv=2))
print(curve[["model", "fraction", "n_train_trs", "mean_r", "relative_to_reference"]]
      .to_string(index=False))

# %%
fig = plot_data_efficiency(curve, reference="pretrained")
fig
