"""The two text encoders of lesson 15: a causal CLIPTextModel and a bidirectional T5EncoderModel of one size."""

import torch

from diffusion_lessons import models, scenes, text


def _tokenizer():
    return text.build_tokenizer(scenes.caption_words())


def test_causal_encoder_cannot_see_later_words_and_bidirectional_can():
    tok = _tokenizer()
    ids = text.tokenize(tok, ["a red circle and a blue square on a white background",
                              "a red circle and a blue square on a black background"])
    differs_at = int((ids[0] != ids[1]).nonzero()[0])
    for kind, sees_later in (("causal", False), ("bidirectional", True)):
        encoder = text.build_text_encoder(tok, seed=0, kind=kind).eval()
        with torch.no_grad():
            out = encoder(ids)[0]
        early = (out[0, :differs_at] - out[1, :differs_at]).abs().max().item()
        assert (early > 1e-4) == sees_later, (kind, early)
        assert (out[0, differs_at] - out[1, differs_at]).abs().max().item() > 1e-4


def test_the_two_encoders_are_the_same_size():
    tok = _tokenizer()
    causal, bidirectional = (text.build_text_encoder(tok, kind=k) for k in text.ENCODERS)
    assert type(causal).__name__ == "CLIPTextModel" and type(bidirectional).__name__ == "T5EncoderModel"
    assert bidirectional.config.d_model == causal.config.hidden_size
    assert bidirectional.config.num_layers == causal.config.num_hidden_layers
    assert bidirectional.config.num_heads == causal.config.num_attention_heads
    n = [models.count_parameters(m) for m in (causal, bidirectional)]
    assert abs(n[0] - n[1]) / n[0] < 0.25, n      # within a quarter: positions and norms differ, not the width
    ids = text.tokenize(tok, "two red circles on a white background")
    assert bidirectional(ids)[0].shape == causal(ids)[0].shape == (1, tok.model_max_length, 64)
