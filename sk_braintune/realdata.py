"""``sk-braintune tune`` and ``evaluate``: the study on OpenNeuro ds003020 with a local model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._reporting import StageTimer, save_config, write_json
from .study import StudyInputError, show_library_messages

__all__ = ["run_tune", "run_evaluate"]


def _load_real(config):
    from .datasets import load_lebel2023

    root = config.get("root")
    if not root:
        raise StudyInputError("--root is required: the local copy of OpenNeuro ds003020")
    if not Path(root).is_dir():
        raise StudyInputError(f"data root {root} does not exist or is not a directory")
    subject = config.get("subject")
    if not subject:
        raise StudyInputError("--subject is required, e.g. --subject UTS03")
    model = config.get("model")
    if not model:
        raise StudyInputError("--model is required: a Hugging Face model name or local path")
    # "org/name" is a hub id; anything else with a path separator is a local directory
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local and not Path(model).expanduser().exists():
        raise StudyInputError(f"model path {model} does not exist")
    try:
        data = load_lebel2023(root, subject, stories=config.get("stories"),
                              verbose=not config.get("quiet"))
    except (FileNotFoundError, ValueError) as exc:
        raise StudyInputError(str(exc)) from exc
    return data


def _parse_layers(config):
    """``--layers``: "all" (default) or comma-separated hidden_states indices."""
    text = str(config.get("layers") or "all").strip()
    if text == "all":
        return "all"
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise StudyInputError(f'--layers must be "all" or comma-separated integers, got '
                              f'{text!r}') from None


def run_tune(config):
    """``sk-braintune tune``: brain-tune a model on one ds003020 participant.

    Parameters
    ----------
    config : dict
        Resolved configuration (``root``, ``subject``, ``model``, ``output``, ``epochs``,
        ``lr_backbone``, ``lr_head``, ``window``, ``batch_size``, ``min_ceiling``, ``seed``,
        ``device``).

    Returns
    -------
    tuner : BrainTuner
    """
    from .model_selection import HeldOutStories
    from .tuning import BrainTuner
    from .windows import windows_from_dataset

    show_library_messages(not config.get("quiet"))
    data = _load_real(config)
    output = Path(config.get("output") or "sk_braintune_results")
    stages = StageTimer()
    train = list(data.split["train"])
    valid = list(data.split["validation"])
    X, y, groups = windows_from_dataset(data, train + valid,
                                        window=float(config.get("window") or 10.0))
    min_ceiling = float(config.get("min_ceiling") or 0.4)
    selected = np.flatnonzero(np.asarray(data.noise_ceiling) > min_ceiling)
    if selected.size == 0:
        raise StudyInputError(f"no voxel has a noise ceiling above {min_ceiling}; lower "
                              "--min-ceiling")
    params = {"max_epochs": int(config.get("epochs") or 30),
              "lr_backbone": float(config.get("lr_backbone") or 5e-5),
              "lr_head": float(config.get("lr_head") or 1e-4),
              "batch_size": int(config.get("batch_size") or 128),
              "validation": HeldOutStories(valid) if valid else 0.1,
              "device": config.get("device", "auto"),
              "random_state": int(config.get("seed", 0)),
              "verbose": not config.get("quiet"),
              "checkpoint_dir": str(output / "checkpoints")}
    with stages(f"brain-tuning {config['model']} on {len(train + valid)} stories, "
                f"{selected.size} voxels"):
        try:
            tuner = BrainTuner(config["model"], **params).fit(X, y[:, selected], groups=groups)
        except OSError as exc:
            raise StudyInputError(f"could not load model {config['model']!r}: {exc}") from exc
    tuner.save_pretrained(output / "backbone")
    np.save(output / "selected_voxels.npy", selected)
    write_json(output / "history.json", tuner.history_)
    save_config(config, output)
    from .analysis import figures as fig

    fig.plot_training_curves(tuner.history_, title=config["subject"]).savefig(
        output / "training_curves.png", dpi=120, bbox_inches="tight")
    print(f"tuned backbone in {output / 'backbone'}; best epoch {tuner.best_epoch_}; "
          f"history and training curves in {output}")
    return tuner


def run_evaluate(config):
    """``sk-braintune evaluate``: layer-wise alignment and low-level impact on ds003020.

    Parameters
    ----------
    config : dict
        Resolved configuration (``root``, ``subject``, ``model``, ``output``, ``layers``,
        ``window``, ``batch_size``, ``device``).

    Returns
    -------
    results : dict
    """
    from .evaluation import default_encoder, layerwise_alignment, low_level_impacts, split_layers
    from .features import extract_layer_features
    from .windows import windows_from_dataset

    show_library_messages(not config.get("quiet"))
    data = _load_real(config)
    output = Path(config.get("output") or "sk_braintune_results")
    stages = StageTimer()
    train = list(data.split["train"]) + list(data.split["validation"])
    test = list(data.split["test"])
    if not test:
        raise StudyInputError("no test story among the loaded stories (the paper's is "
                              "wheretheressmoke)")
    X, y, groups = windows_from_dataset(data, train + test,
                                        window=float(config.get("window") or 16.0))
    with stages(f"features of {config['model']} on {len(X)} windows"):
        try:
            feats, layer_indices = extract_layer_features(config["model"], X,
                                                          layers=_parse_layers(config),
                                                          batch_size=int(config.get("batch_size")
                                                                         or 16),
                                                          device=config.get("device", "auto"),
                                                          verbose=not config.get("quiet"))
        except OSError as exc:
            raise StudyInputError(f"could not load model {config['model']!r}: {exc}") from exc
    n_layers = len(layer_indices)
    labels = np.asarray(data.voxel_labels)
    nc = np.asarray(data.noise_ceiling)
    # the demo's encoding model (inner CV clamped to the training stories by the evaluation);
    # config "ridge_backend" = "torch" runs the ridge on the GPU
    encoder = default_encoder(cv=5, backend=config.get("ridge_backend") or "numpy")
    with stages("alignment per layer"):
        table = layerwise_alignment(feats, n_layers, y, groups, train, test, noise_ceiling=nc,
                                    voxel_labels=labels, estimator=encoder)
    with stages(f"low-level impact (layer {layer_indices[-1]})"):
        impact = low_level_impacts(data, {"model": split_layers(feats, n_layers)[:, -1]},
                                   groups, train, test, estimator=encoder, cv=5)["model"]
    results = {"layer_indices": [int(k) for k in layer_indices],
               "layers": {roi: v.tolist() for roi, v in table["roi"].items()},
               "low_level_impact": impact,
               "stage_seconds": stages.times}
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "evaluation.json", results)
    np.save(output / "normalized_r_per_layer.npy", table["voxels"])
    save_config(config, output)
    from .analysis import figures as fig

    # one curve per ROI (label) for this model
    fig.plot_layer_alignment(dict(table["roi"]), title=f"{config['model']}: alignment per "
                             "layer").savefig(output / "alignment.png", dpi=120,
                                              bbox_inches="tight")
    for roi, values in table["roi"].items():
        print(f"{roi:<14}" + " ".join(f"{v:6.3f}" for v in values))
    print(f"results in {output}")
    return results
