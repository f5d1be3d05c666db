"""
Semantic probes: which layer knows what a spoken command means?
===============================================================

The brain-tuning paper checks whether tuning on fMRI made a speech model more *semantic* with
linear probes on downstream tasks. A probe is a linear classifier trained on the frozen,
mean-pooled features of one layer; if it generalises, the layer represents the information
linearly.

The built-in intent task (:func:`~sk_braintune.builtin.make_intent_dataset`) is built so that
surface form does not suffice: spoken commands of 8 intents ("set an alarm for seven", "play
some jazz music", ...) are synthesised in several voices and speaking rates, and the probe is
trained on three paraphrase templates of each intent and tested on two *other* wordings. It
must recognise the meaning, not the words.
"""

# %%
# The spoken-intent dataset
# -------------------------
import matplotlib.pyplot as plt
import numpy as np

from sk_braintune import SemanticProbe
from sk_braintune.analysis.figures import plot_probe_scores
from sk_braintune.analysis.probe import probe_layers
from sk_braintune.features import pooled_layer_features
from sk_braintune.builtin import make_intent_dataset
from sk_braintune.builtin import load_whisper_tiny_en

data = make_intent_dataset(voices=("en-us", "en-gb-x-rp"), rates=(150, 200))
train, test = data.split["train"], data.split["test"]
print(data.description)
for index in (train[0], test[0]):
    print(f"{data.intents[index]:>12}: '{data.texts[index]}' ({data.voice[index]}, "
          f"{data.rate[index]} wpm)")

# %%
# Frozen features of every layer
# ------------------------------
# :func:`~sk_braintune.features.pooled_layer_features` runs the model on every clip
# (unpadded: clips of different lengths never share a batch) and mean-pools each layer over
# the frames holding real audio, giving ``(n_clips, n_layers, dim)``. Computing them once lets
# every probe below reuse them.
features = pooled_layer_features(load_whisper_tiny_en(), data.audio)
print(features.shape)

# %%
# One probe per layer
# -------------------
# :func:`~sk_braintune.analysis.probe.probe_layers` fits a
# :class:`~sk_braintune.SemanticProbe` on each layer, plus one that learns a softmax weighting
# of all layers, and scores each on the test paraphrases. Model selection (the best epoch)
# uses a validation split of the *training* templates (``groups``), never the test set.
table = probe_layers(features[train], data.target[train], features[test], data.target[test],
                     groups=data.template[train], random_state=0)
print(table)

chance = 1 / len(data.target_names)
fig = plot_probe_scores({"Whisper tiny.en": table}, chance=chance, ylabel="test accuracy",
                        title="Intent probe on unseen paraphrases")
plt.figure(fig)  # hand the figure to pyplot so that the gallery shows it
plt.show()

# %%
# Whisper tiny.en is an acoustic-phonetic model: accuracy on new wordings rises towards the
# last layer but stays far from perfect. A brain-tuned model whose features moved towards the
# simulated brain's semantic voxels should do better on the same probe.
#
# The probe as an estimator
# -------------------------
# :class:`~sk_braintune.SemanticProbe` is a scikit-learn classifier: ``X`` is
# ``(n, n_layers, dim)`` precomputed features (or raw audio with ``extractor=``), ``layer``
# picks one layer, or ``"weighted"`` learns a softmax weighting of all of them
# (``layer_weights_``). Which intents does the last layer confuse?
probe = SemanticProbe(layer=features.shape[1] - 1, random_state=0)
probe.fit(features[train], data.target[train], groups=data.template[train])
print(f"test accuracy {probe.score(features[test], data.target[test]):.3f}, "
      f"best epoch {probe.best_epoch_}")

predicted = probe.predict(features[test])
n_intents = len(data.target_names)
confusion = np.zeros((n_intents, n_intents), dtype=int)
np.add.at(confusion, (data.target[test], predicted), 1)

fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
image = ax.imshow(confusion, cmap="Blues")
ax.set_xticks(range(n_intents), data.target_names, rotation=45, ha="right")
ax.set_yticks(range(n_intents), data.target_names)
ax.set_xlabel("predicted intent")
ax.set_ylabel("true intent")
ax.set_title("Last layer, unseen paraphrases")
fig.colorbar(image, ax=ax, label="test clips")
plt.show()
