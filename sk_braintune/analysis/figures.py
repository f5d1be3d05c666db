"""Figures of the study (matplotlib object API; every function returns its Figure).

Figures are built with :class:`matplotlib.figure.Figure`, never through ``pyplot``, so nothing
leaks into pyplot's global state and they work on headless machines; save them with
``fig.savefig(path)``. Surface maps use nilearn (:func:`plot_surface_scores`).
"""

from __future__ import annotations

import numpy as np


def _integer_ticks(ax):
    """Layers are whole numbers: no 0.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))

__all__ = ["plot_layer_alignment", "plot_roi_scores", "plot_low_level_impact",
           "plot_probe_scores", "plot_semantic_preference", "plot_training_curves",
           "plot_surface_scores"]


def _figure(figsize):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _as_curves(values):
    """(mean, sem or None) of a 1-D curve or a (n_layers, n_participants) array."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return values, None
    n = np.sum(~np.isnan(values), axis=1)
    sem = np.nanstd(values, axis=1, ddof=1) / np.sqrt(np.maximum(n, 1)) if values.shape[1] > 1 \
        else None
    return np.nanmean(values, axis=1), sem


def plot_layer_alignment(scores, *, ylabel="brain alignment (normalised r)",
                         title="Layer-wise brain alignment", figsize=(6, 4)):
    """Alignment per layer, one curve per model (mean ± s.e.m. across participants).

    Parameters
    ----------
    scores : dict of str to array-like of shape (n_layers,) or (n_layers, n_participants)
        Model name -> alignment of each layer (e.g. mean normalised r in an ROI).
    ylabel, title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    fig, ax = _figure(figsize)
    for name, values in scores.items():
        mean, sem = _as_curves(values)
        layers = np.arange(len(mean))
        ax.plot(layers, mean, marker="o", label=name)
        if sem is not None:
            ax.fill_between(layers, mean - sem, mean + sem, alpha=0.2)
    ax.set_xlabel("layer (0 = input embeddings)")
    _integer_ticks(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def _grouped_bars(ax, table, errors=None, colors=None):
    """Grouped bars: rows of ``table`` on the x axis, one bar per column."""
    rows, cols = list(table.index), list(table.columns)
    width = 0.8 / max(len(cols), 1)
    x = np.arange(len(rows))
    for j, col in enumerate(cols):
        err = None if errors is None else errors[col].to_numpy(float)
        ax.bar(x + (j - (len(cols) - 1) / 2) * width, table[col].to_numpy(float), width,
               yerr=err, capsize=3, label=str(col))
    ax.set_xticks(x, [str(r) for r in rows])
    ax.axhline(0, color="black", linewidth=0.8)
    if len(cols) > 1:
        ax.legend()


def _roi_table(scores):
    """(means, sems) DataFrames, ROI x model, from the accepted inputs."""
    import pandas as pd

    means, sems = {}, {}
    for model, value in scores.items():
        if isinstance(value, pd.DataFrame):  # participants x ROIs
            means[model] = value.mean(axis=0)
            sems[model] = value.sem(axis=0) if len(value) > 1 else value.mean(axis=0) * np.nan
        else:
            series = pd.Series({roi: np.asarray(v, dtype=float) for roi, v in dict(value).items()})
            means[model] = series.map(np.nanmean)
            sems[model] = series.map(lambda v: np.nanstd(v, ddof=1) / np.sqrt(np.sum(~np.isnan(v)))
                                     if np.size(v) > 1 else np.nan)
    return pd.DataFrame(means), pd.DataFrame(sems)


def plot_roi_scores(scores, *, ylabel="normalised r", title="Brain alignment per ROI",
                    figsize=(7, 4)):
    """ROI means per model as grouped bars with s.e.m. error bars across participants.

    Parameters
    ----------
    scores : dict of str to (pandas.DataFrame or dict)
        Model name -> participants x ROIs table (:func:`~sk_braintune.evaluation.
        participant_roi_table`), or a dict ROI -> value(s) (a scalar, or one value per
        participant).
    ylabel, title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    fig, ax = _figure(figsize)
    means, sems = _roi_table(scores)
    _grouped_bars(ax, means, None if sems.isna().all().all() else sems.fillna(0.0))
    ax.set_xlabel("ROI")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def plot_low_level_impact(impacts, *, title="Low-level impact on brain alignment",
                          figsize=(7, 4)):
    """Low-level impact (%) per ROI and model, grouped bars.

    Parameters
    ----------
    impacts : dict of str to (pandas.DataFrame or pandas.Series or dict)
        Model name -> result of :func:`~sk_braintune.evaluation.low_level_impact`
        (its ``impact_percent`` column is used), a Series ROI -> impact, or a participants x
        ROIs table of impacts.
    title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import pandas as pd

    converted = {}
    for model, value in impacts.items():
        if isinstance(value, pd.DataFrame) and "impact_percent" in value.columns:
            value = value["impact_percent"]
        converted[model] = value.to_dict() if isinstance(value, pd.Series) else value
    fig = plot_roi_scores(converted, ylabel="low-level impact (%)", title=title, figsize=figsize)
    return fig


def plot_probe_scores(results, *, chance=None, ylabel="test score", title="Probe scores",
                      figsize=(6, 4)):
    """Probe score per layer and model (lines; the weighted-layer probe as a dashed level).

    Parameters
    ----------
    results : dict of str to pandas.DataFrame or float
        Model name -> table from :func:`~sk_braintune.analysis.probe.probe_layers` (columns
        ``layer``, ``score``), or a single score (drawn as a bar-free horizontal level).
    chance : float, optional
        Chance level, drawn as a grey dotted line.
    ylabel, title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    fig, ax = _figure(figsize)
    for i, (name, table) in enumerate(results.items()):
        color = f"C{i}"
        if np.isscalar(table):
            ax.axhline(float(table), color=color, linestyle="--", label=f"{name}")
            continue
        layered = table[table["layer"] != "weighted"]
        ax.plot(layered["layer"].astype(int), layered["score"].astype(float), marker="o",
                color=color, label=name)
        weighted = table[table["layer"] == "weighted"]
        if len(weighted):
            ax.axhline(float(weighted["score"].iloc[0]), color=color, linestyle="--",
                       label=f"{name} (weighted layers)")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("layer")
    _integer_ticks(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def plot_semantic_preference(results, *, title="Semantic preference (synonyms - near-homophones)",
                             figsize=(6, 4)):
    """Semantic preference per layer and model, with s.e.m. bands.

    Parameters
    ----------
    results : dict of str to pandas.DataFrame
        Model name -> table from :func:`~sk_braintune.analysis.preference.semantic_preference`.
    title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    fig, ax = _figure(figsize)
    for name, table in results.items():
        layers = np.asarray(table.index, dtype=float)
        pref = table["preference"].to_numpy(float)
        ax.plot(layers, pref, marker="o", label=name)
        if "sem" in table and not table["sem"].isna().all():
            sem = table["sem"].to_numpy(float)
            ax.fill_between(layers, pref - sem, pref + sem, alpha=0.2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("layer")
    _integer_ticks(ax)
    ax.set_ylabel("cosine(synonyms) - cosine(near-homophones)")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_training_curves(history, *, best_epoch=None, title="Brain-tuning", figsize=(10, 3.5)):
    """Training and validation loss, validation r and learning rates per epoch.

    Parameters
    ----------
    history : list of dict
        ``BrainTuner.history_``: per epoch ``epoch``, ``train_loss``, ``valid_loss``,
        ``valid_r``, ``lr_backbone``, ``lr_head`` (missing keys are skipped).
    best_epoch : int, optional
        Marked with a vertical line (``BrainTuner.best_epoch_``).
    title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if not history:
        raise ValueError("history is empty: fit the tuner first")
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 3)
    epochs = np.array([h.get("epoch", i) for i, h in enumerate(history)])

    def series(key):
        return np.array([h.get(key, np.nan) for h in history], dtype=float)

    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        if not np.all(np.isnan(series(key))):
            axes[0].plot(epochs, series(key), marker="o", label=label)
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].plot(epochs, series("valid_r"), marker="o", color="C2")
    axes[1].set_ylabel("validation r (mean over targets)")
    for key, label in (("lr_backbone", "backbone"), ("lr_head", "head")):
        if not np.all(np.isnan(series(key))):
            axes[2].plot(epochs, series(key), marker="o", label=label)
    axes[2].set_ylabel("learning rate")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":")
    fig.suptitle(title)
    return fig


def plot_surface_scores(scores, surf_mesh, *, bg_map=None, hemi="left", view="lateral",
                        threshold=None, vmax=None, cmap="cold_hot", title=None, figsize=(5, 4)):
    """Per-vertex scores on a cortical surface (wraps ``nilearn.plotting.plot_surf_stat_map``).

    Parameters
    ----------
    scores : array-like of shape (n_vertices,)
        One value per mesh vertex (project voxel scores to the surface first, e.g. with
        ``nilearn.surface.vol_to_surf``).
    surf_mesh : str, nilearn mesh, or (coords, faces)
        Surface mesh: a file path, a nilearn ``InMemoryMesh``, or a pair of arrays of shape
        (n_vertices, 3) and (n_faces, 3).
    bg_map : str or array-like of shape (n_vertices,), optional
        Sulcal depth or curvature for shading.
    hemi : {"left", "right"}, default="left"
    view : str, default="lateral"
    threshold, vmax : float, optional
    cmap : str, default="cold_hot"
    title : str, optional
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from nilearn import plotting

    scores = np.asarray(scores, dtype=np.float64)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(projection="3d")
    plotting.plot_surf_stat_map(surf_mesh, scores, bg_map=bg_map, hemi=hemi, view=view,
                                threshold=threshold, vmax=vmax, cmap=cmap, colorbar=True,
                                title=title, axes=ax, figure=fig, engine="matplotlib")
    return fig
