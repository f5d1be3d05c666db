"""The pretrained models the built-in study knows by name, and their labels."""

from __future__ import annotations

from pathlib import Path

from ..exceptions import StudyInputError

__all__ = ["PRETRAINED_MODELS", "model_label", "pretrained_model_path"]

PRETRAINED_MODELS = {
    "ssl": "SSL model (made here)",
    "whisper-tiny.en": "Whisper tiny.en",
}
"""Names :attr:`DemoSettings.model` accepts besides a local directory, and their labels."""


def model_label(model):
    """Short label of a pretrained model, for tables and stage names.

    Parameters
    ----------
    model : str
        A key of :data:`PRETRAINED_MODELS` or a model directory.

    Returns
    -------
    label : str
        The key's label, or the directory's name.
    """
    return PRETRAINED_MODELS.get(model) or Path(model).name


def pretrained_model_path(model):
    """Local directory of the study's pretrained model.

    Parameters
    ----------
    model : str
        ``"whisper-tiny.en"`` (:func:`~sk_braintune.builtin.load_whisper_tiny_en`), ``"ssl"``
        (:func:`~sk_braintune.builtin.load_ssl_speech_model`) or a local model directory.

    Returns
    -------
    path : str

    Raises
    ------
    StudyInputError
        For a name that is neither of the two and no directory.
    """
    from .ssl import load_ssl_speech_model
    from .whisper_tiny import load_whisper_tiny_en

    if model == "whisper-tiny.en":
        return load_whisper_tiny_en()
    if model == "ssl":
        return load_ssl_speech_model()
    if not Path(model).is_dir():
        raise StudyInputError(f"model {model!r} is neither one of {list(PRETRAINED_MODELS)} "
                              "nor a local model directory")
    return str(model)
