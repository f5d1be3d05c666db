"""The demo's report page: a summary of what was run and found, the tables, one section per family.

The demo runs the study once per model family (the self-supervised model made here, Whisper
tiny.en); each family writes the same figures into its own subfolder. The page therefore opens
with a summary, shows every table the demo prints, then gives each family a section with a
heading and figures whose captions name the family and say what they show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .brainmaps import map_figures
from .report import ReportFigure, ReportSection, ReportTable, write_report

__all__ = ["FIGURE_CAPTIONS", "figure_caption", "demo_summary", "demo_sections",
           "write_demo_report"]

FIGURE_CAPTIONS = {
    "alignment_semantic": "noise-ceiling-normalised r in the semantic voxels per layer on the "
                          "held-out story (mean over listeners), one curve each for the "
                          "pretrained, the brain-tuned and the control models",
    "alignment_auditory": "noise-ceiling-normalised r in the auditory voxels per layer on the "
                          "held-out story (mean over listeners), one curve each for the "
                          "pretrained, the brain-tuned and the control models",
    "low_level_impact": "low-level impact on the last layer's alignment per voxel kind: the "
                        "share of the alignment, in %, that regressing low-level speech "
                        "features out of the model's features removes (voxel kinds with an "
                        "alignment below 0.05 left out)",
    "probe_scores": "spoken-intent probe accuracy per layer on unseen paraphrases (dotted line: "
                    "chance)",
    "semantic_preference": "semantic preference per layer: similarity of spoken synonyms minus "
                           "that of near-homophones (above 0: meaning over sound)",
}
"""What each figure of a demo family shows, by file stem (``training_<model>`` aside)."""


def figure_caption(path, family):
    """Caption of one of a family's figures, from its file name.

    Parameters
    ----------
    path : str or pathlib.Path
        Figure file written by the study (e.g. ``alignment_semantic.png``).
    family : str
        The model family's label, which opens the caption.

    Returns
    -------
    caption : str
    """
    stem = Path(path).stem
    if stem in FIGURE_CAPTIONS:
        text = FIGURE_CAPTIONS[stem]
    elif stem.startswith("training_"):
        model = stem[len("training_"):].replace("_", " ")
        text = (f"brain-tuning of the {model} model: training and validation loss, "
                "validation r and learning rates per epoch")
    else:
        text = stem.replace("_", " ")
    return f"{family}: {text}."


def _value(rows, model, column):
    for row in rows:
        if row.get("model") == model and isinstance(row.get(column), (int, float)):
            return float(row[column])
    return None


def demo_summary(results, labels, *, quick):
    """The page's opening paragraphs: what the demo ran and, per family, what it found.

    Parameters
    ----------
    results : dict
        ``run_demo``'s results (``families``, ``table``).
    labels : list of str
        The families' labels, in the order of ``results["families"]``.
    quick : bool
        Whether it was the quick run.

    Returns
    -------
    paragraphs : list of str
    """
    families = list(results["families"].values())
    first = families[0]
    models = [row["model"] for row in first["table"]]
    listeners = first.get("participants") or []
    text = [f"The {'quick' if quick else 'full'} demo brain-tuned {' and '.join(labels)} on the "
            f"built-in story dataset (espeak-ng speech, {len(listeners) or 'the'} simulated "
            f"listeners{': ' + ', '.join(listeners) if listeners else ''}) and compared "
            f"{', '.join(models)} on a held-out story: alignment with the listeners' voxels, "
            "the low-level impact, a spoken-intent probe and semantic preference."]
    for label, family in zip(labels, families):
        rows = family["table"]
        parts = []
        for roi, column in (("semantic", "sem_last"), ("auditory", "aud_last")):
            values = {m: _value(rows, m, column) for m in models}
            if any(v is None for v in values.values()):
                continue
            shown = ", ".join(f"{m} {v:.3f}" for m, v in values.items())
            best = max(values, key=values.get)
            parts.append(f"in the {roi} voxels (last layer, normalised r) {shown}: highest "
                         f"for {best}")
        if parts:
            text.append(f"{label}: " + "; ".join(parts) + ".")
    if any(family.get("brain_maps") for family in families):
        text.append("Each family's section ends with brain maps of the last layer for the "
                    "first listener: where the pretrained model aligns, and where brain-tuning "
                    "raised (red) or lowered (blue) the alignment relative to the pretrained "
                    "model and to each control, significance-masked where any voxel is "
                    "significant (each caption says).")
    return text


def demo_sections(results, labels, *, output, table_note, second_note=None,
                  second_table=None):
    """The page's sections: the tables, then one section per model family with its figures.

    Parameters
    ----------
    results : dict
        ``run_demo``'s results; each family's ``figures`` are paths below ``output``, its
        ``brain_maps`` (when drawn) the maps among them with their captions and interactive
        pages (:func:`~sk_braintune.commands.brainmaps.study_brain_maps`).
    labels : list of str
        The families' labels.
    output : str or pathlib.Path
        The results folder the figure paths point into (read in the folder being written).
    table_note : str
        What the results table's columns mean.
    second_note : str, optional
        What the second table's columns mean.
    second_table : str, optional
        CSV file of the second table (variance partitioning and significance), when written.

    Returns
    -------
    sections : list of ReportSection
    """
    tables = [ReportTable("Results per model family and model", "results.csv",
                          note=table_note)]
    if second_table:
        tables.append(ReportTable("Second estimate and significance (last layer)",
                                  second_table, note=second_note))
    sections = [ReportSection("Results", tables=tables)]
    output = Path(output)
    for label, family in zip(labels, results["families"].values()):
        # brain maps carry their own captions and links to their interactive pages
        maps = {m["figure"]: m for m in family.get("brain_maps", [])}
        figures = [map_figures([maps[path]], output, prefix=f"{label}: ")[0] if path in maps
                   else ReportFigure(_relative(path, output), figure_caption(path, label))
                   for path in family.get("figures", [])]
        if figures:
            sections.append(ReportSection(label, figures=figures))
    return sections


def _relative(path, output):
    path = Path(path)
    try:
        return path.relative_to(output)
    except ValueError:
        return path


def write_demo_report(folder, results, labels, *, output, quick, manifest, table_note,
                      second_note=None, second_table=None):
    """Write the demo's ``report.html`` into ``folder`` (see :func:`demo_sections`).

    Returns
    -------
    path : pathlib.Path
    """
    chance = next(iter(results["families"].values())).get("probe", {}).get("chance")
    if chance is not None and np.isfinite(chance):
        table_note = table_note.replace("unseen paraphrases;",
                                        f"unseen paraphrases (chance {chance:.3f});")
    return write_report(
        folder, title="sk-braintune demo: brain-tuning on the built-in story dataset",
        summary=demo_summary(results, labels, quick=quick),
        sections=demo_sections(results, labels, output=output, table_note=table_note,
                               second_note=second_note, second_table=second_table),
        manifest=manifest)
