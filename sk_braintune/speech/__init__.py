"""Speech synthesis with word and phone alignments (espeak-ng, optional extra ``demo``).

``synthesize(text, voice="en-us", rate=175, pitch=50) -> Utterance``, ``text_to_phonemes``,
``list_voices``. The espeak-ng library is loaded on first use, not at import.
"""

from .espeak import SAMPLE_RATE, Utterance, list_voices, synthesize, text_to_phonemes

__all__ = ["SAMPLE_RATE", "Utterance", "list_voices", "synthesize", "text_to_phonemes"]
