"""Independent reference for backbone tests: the plain Hugging Face model with its own
feature extractor (Whisper: an encoder rebuilt for a shorter window from a sliced position
table)."""

import warnings

import torch
import transformers


def hf_reference(path, x, sliced_frames=None):
    """hidden_states and last_hidden_state of the plain HF model with its own feature extractor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = transformers.AutoFeatureExtractor.from_pretrained(path)
        if isinstance(fe, transformers.WhisperFeatureExtractor):
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            encoder = transformers.WhisperModel.from_pretrained(path).get_encoder()
            kwargs = {}
            if sliced_frames is not None:
                # an encoder built for a shorter window: sliced sinusoidal position table
                config = transformers.WhisperConfig.from_pretrained(path)
                config.max_source_positions = sliced_frames
                state = encoder.state_dict()
                state["embed_positions.weight"] = state["embed_positions.weight"][:sliced_frames]
                encoder = WhisperEncoder(config)
                encoder.load_state_dict(state)
                kwargs = dict(padding="max_length", max_length=sliced_frames * 320)
            inputs = fe(list(x), sampling_rate=16000, return_tensors="pt", **kwargs).input_features
        else:
            encoder = transformers.AutoModel.from_pretrained(path)
            inputs = fe(list(x), sampling_rate=16000, return_tensors="pt").input_values
    with torch.inference_mode():
        return encoder.eval()(inputs, output_hidden_states=True)
