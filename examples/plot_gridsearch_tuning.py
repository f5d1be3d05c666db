"""
Searching brain-tuning hyperparameters with GridSearchCV
========================================================

:class:`~sk_braintune.BrainTuner` is a scikit-learn regressor, so its hyperparameters are
searched like any other estimator's. Two things need care with fMRI:

* **cross-validation must hold out whole stories.** Neighbouring TRs are strongly correlated
  (slow haemodynamics, the same sentence), so a random TR-level split would let a model score
  on TRs it has all but seen. Use :class:`~sklearn.model_selection.GroupKFold` with the story
  of each TR as ``groups``;
* **the tuner needs the stories too**, to hold out validation stories for early stopping. With
  metadata routing enabled, ``set_fit_request(groups=True)`` passes them on.

To run in seconds on a CPU, this example tunes a tiny randomly initialised model
(:func:`~sk_braintune.testing.make_tiny_model`) on 2-second windows: the numbers only show the
mechanics. On a GPU the same code tunes real models; keep ``n_jobs=1`` there, since every fit
holds a model on the one device.
"""

# %%
# Data: windows, responses, stories
# ---------------------------------
# We keep the voxels whose noise ceiling exceeds 0.4 (the paper's selection), and the training
# and validation stories; the test story stays untouched for the final evaluation.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold

from sk_braintune import BrainTuner
from sk_braintune.builtin import make_story_dataset
from sk_braintune.datasets import windows_from_dataset
from sk_braintune.testing import make_tiny_model

dataset = make_story_dataset(n_train_stories=3, max_words=150)
stories = dataset.split["train"] + dataset.split["validation"]
X, y, groups = windows_from_dataset(dataset, stories, window=2.0)
voxels = dataset.noise_ceiling > 0.4
y = y[:, voxels]
print(f"{X.shape[0]} windows of {X.window_seconds:.0f} s from {len(stories)} stories, "
      f"{y.shape[1]} voxels")

workdir = Path(tempfile.mkdtemp(prefix="sk_braintune_gallery_"))
tiny_model = make_tiny_model("wav2vec2", workdir / "tiny-wav2vec2")

# %%
# The search
# ----------
# ``GroupKFold(n_splits=4)`` holds out one story per split. Inside each fit, the tuner holds out
# one of the remaining stories for early stopping (``validation=0.34`` of the stories). With
# ``scoring=None`` the search uses the tuner's own ``score``, the mean Pearson r over voxels on
# the held-out story.
tuner = BrainTuner(tiny_model, batch_size=16, validation=0.34, patience=None, lr_head=1e-3,
                   random_state=0)
param_grid = {"lr_backbone": [1e-4, 1e-3], "max_epochs": [1, 3]}

with sklearn.config_context(enable_metadata_routing=True):
    search = GridSearchCV(tuner.set_fit_request(groups=True), param_grid,
                          cv=GroupKFold(n_splits=4), n_jobs=1)
    search.fit(X, y, groups=groups)

results = pd.DataFrame(search.cv_results_)
columns = ["param_lr_backbone", "param_max_epochs", "mean_test_score", "std_test_score",
           "rank_test_score", "mean_fit_time"]
print(results[columns].to_string())
print("best:", search.best_params_)

# %%
# Each row of ``cv_results_`` is one candidate; the scores are held-out-story correlations.
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for lr, rows in results.groupby("param_lr_backbone"):
    ax.errorbar(rows["param_max_epochs"].astype(int), rows["mean_test_score"],
                yerr=rows["std_test_score"], marker="o", capsize=3, label=f"lr_backbone={lr:g}")
ax.set_xticks(param_grid["max_epochs"])
ax.set_xlabel("max_epochs")
ax.set_ylabel("mean r on held-out stories")
ax.set_title("GridSearchCV over BrainTuner")
ax.legend()
plt.show()

# %%
# The refitted best tuner
# -----------------------
# ``best_estimator_`` was refitted on all the stories with the best parameters. Its
# ``history_`` records every epoch, and ``save_pretrained`` exports the tuned backbone as a
# standard Hugging Face model directory, usable by
# :class:`~sk_braintune.SpeechFeatureExtractor` or any Hugging Face tool.
best = search.best_estimator_
print(pd.DataFrame(best.history_)[["epoch", "train_loss", "valid_loss", "valid_r"]].to_string())

best.save_pretrained(workdir / "brain-tuned")
print(sorted(path.name for path in (workdir / "brain-tuned").iterdir()))

# %%
# Clean up the temporary models.
import shutil

shutil.rmtree(workdir)
