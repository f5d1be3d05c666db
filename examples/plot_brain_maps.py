"""
Brain maps: where brain-tuning changed alignment
================================================

Encoding results are read on the cortex. :func:`~sk_braintune.plotting.plot_brain_map` draws
per-vertex or per-voxel values offline: fsaverage surfaces on the fsaverage5 mesh that nilearn
bundles, volumes over its MNI152 template, and ds003020 subjects on their pycortex flatmaps
through a precomputed mapper. Here the demo's maps are drawn from synthetic scores: the built-in
dataset's voxels have places on fsaverage5 (auditory voxels on the superior temporal plane,
semantic voxels along lateral temporal, inferior parietal and prefrontal cortex), and the scores
mimic a brain-tuned model that gained on semantic voxels. Nothing is downloaded; it runs in
seconds.
"""

# %%
# Places and scores
# -----------------
# :func:`~sk_braintune.builtin.cortex.voxel_places` gives each simulated voxel a vertex of
# fsaverage5 (left hemisphere's vertices first, then the right's): the dataset's
# ``column_index``. The scores stand in for the pipeline's per-voxel, noise-ceiling-normalised
# correlations of each model's last layer on the held-out story, and their BH-FDR q-values.
import numpy as np

from sk_braintune.builtin.cortex import voxel_places
from sk_braintune.plotting import plot_brain_map

labels = np.repeat(["semantic", "auditory", "mixed", "noise"], [400, 250, 150, 200])
column_index = voxel_places(labels, participant="P01", random_state=0)

rng = np.random.default_rng(0)
level = {"semantic": 0.35, "auditory": 0.6, "mixed": 0.45, "noise": 0.0}
pretrained = np.array([level[k] for k in labels]) + rng.normal(0, 0.05, labels.size)
tuned = pretrained + np.where(labels == "semantic", 0.12, -0.02) + rng.normal(0, 0.02,
                                                                           labels.size)
q = np.where(labels == "noise", 0.6, 0.001)  # noise voxels are not significant

# %%
# The pretrained model's alignment
# --------------------------------
# Lateral and medial views of the inflated hemispheres and the flat patches; columns whose
# q-value exceeds ``alpha`` are hidden.
fig = plot_brain_map(pretrained, "fsaverage5", column_index=column_index, q=q, alpha=0.05,
                     title="pretrained: last-layer alignment",
                     colorbar_label="normalised r")

# %%
# Brain-tuned minus pretrained
# ----------------------------
# A difference gets symmetric colour limits: red where brain-tuning raised alignment (here the
# semantic voxels), blue where it lowered it.
fig = plot_brain_map(tuned - pretrained, "fsaverage5", column_index=column_index,
                     q=q, symmetric=True, views=("lateral", "flat"),
                     title="brain-tuned minus pretrained",
                     colorbar_label="difference in normalised r")

# %%
# A volume
# --------
# Volume data needs its grid: a mask image (or a fitted nilearn masker); the columns are the
# mask's voxels in C order, or ``column_index`` gives their flat indices. Here a coarse box
# of 8-mm voxels in MNI space holds a left-right gradient.
import nibabel as nib

mask = np.zeros((20, 24, 18), dtype=np.uint8)
mask[3:17, 4:21, 3:15] = 1
affine = np.array([[8.0, 0, 0, -80], [0, 8, 0, -112], [0, 0, 8, -60], [0, 0, 0, 1]])
mask_img = nib.Nifti1Image(mask, affine)
x = np.argwhere(mask)[:, 0]
fig = plot_brain_map((x - x.mean()) / x.std(), mask_img, views=("glass",),
                     title="a volume map (glass brain)")

# %%
# The study's files
# -----------------
# :func:`~sk_braintune.plotting.write_brain_maps` writes these maps (and interactive HTML views
# with nilearn's niivue viewer) for a results folder and returns ``(png, caption, html)``
# triples for the report; the demo and ``evaluate`` call it for each model family.
