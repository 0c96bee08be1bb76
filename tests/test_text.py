"""The word-level tokenizer and the small CLIP text encoder of lesson 07."""

import pytest
import torch

from diffusion_lessons import data, pretrained, text


@pytest.fixture(scope="module")
def tokenizer():
    return text.build_tokenizer()


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return data.make_shapes(300, generator=torch.Generator().manual_seed(2)).captions + data.shape_prompts()


def test_round_trip_of_every_caption(tokenizer, captions):
    ids = text.tokenize(tokenizer, captions)
    assert ids.shape == (len(captions), text.MAX_LENGTH)
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == captions
    assert not (ids == text.UNK_ID).any()


def test_layout_bos_words_eos_then_padding(tokenizer):
    ids = text.tokenize(tokenizer, "a red circle on a white background")[0].tolist()
    vocab = tokenizer.get_vocab()
    words = [vocab[w] for w in "a red circle on a white background".split()]
    assert ids == [text.BOS_ID, *words, text.EOS_ID] + [text.PAD_ID] * (text.MAX_LENGTH - 9)
    assert text.tokenize(tokenizer, "")[0].tolist() == [text.BOS_ID, text.EOS_ID] + [text.PAD_ID] * 18


def test_vocabulary_is_the_caption_words(tokenizer, captions):
    words = {w for c in captions for w in c.split()}
    assert set(text.caption_words()) == words
    assert len(tokenizer) == len(words) + len(text.SPECIAL_TOKENS)


def test_unknown_words_map_to_unk_and_are_reported(tokenizer):
    ids = text.tokenize(tokenizer, "a purple zebra on a white background")[0].tolist()
    assert ids[2:4] == [text.UNK_ID, text.UNK_ID]
    problems = text.prompt_problems(tokenizer, "a purple zebra on a white background")
    assert len(problems) == 1 and "'purple', 'zebra'" in problems[0] and "[UNK]" in problems[0]
    assert text.prompt_problems(tokenizer, "a red circle on a white background") == []


def test_case_and_punctuation_are_ignored(tokenizer):
    a = text.tokenize(tokenizer, "A Red circle, on a WHITE background!")
    b = text.tokenize(tokenizer, "a red circle on a white background")
    assert torch.equal(a, b)


def test_too_long_prompt_is_cut_and_reported(tokenizer):
    prompt = " ".join(["red"] * 25)
    ids = text.tokenize(tokenizer, prompt)[0]
    assert len(ids) == text.MAX_LENGTH and ids[-1].item() == text.EOS_ID
    (problem,) = text.prompt_problems(tokenizer, prompt)
    assert "25 words but only 18 fit" in problem


def test_save_and_load_as_pretrained_tokenizer_fast(tmp_path, tokenizer, captions):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    text.save_tokenizer(tokenizer, tmp_path)
    for cls in (PreTrainedTokenizerFast, AutoTokenizer):
        loaded = cls.from_pretrained(tmp_path, local_files_only=True)
        assert loaded.model_max_length == text.MAX_LENGTH
        assert torch.equal(text.tokenize(loaded, captions), text.tokenize(tokenizer, captions))
        assert loaded("a zebra").input_ids == [text.BOS_ID, tokenizer.get_vocab()["a"], text.UNK_ID, text.EOS_ID]


def test_text_encoder_shapes_and_pipeline_layout(tokenizer):
    encoder = text.build_text_encoder(tokenizer, seed=0).eval()
    assert encoder.config.eos_token_id == text.EOS_ID and encoder.config.vocab_size == len(tokenizer)
    with torch.no_grad():
        emb = text.encode_prompts(tokenizer, encoder, ["a red circle on a white background", ""])
        out = encoder(text.tokenize(tokenizer, [""]))
    assert emb.shape == (2, text.MAX_LENGTH, 64)
    assert torch.allclose(emb[1], out.last_hidden_state[0])
    # the pooled output is taken at [EOS] (the config's eos_token_id, not CLIP's legacy argmax)
    assert torch.allclose(out.pooler_output[0], out.last_hidden_state[0, 1])


def test_bad_prompts_raise(tokenizer):
    for bad in (None, 3, [], ["ok", 4]):
        with pytest.raises(ValueError, match="prompts must be"):
            text.tokenize(tokenizer, bad)


def test_shipped_text_encoder_tells_captions_apart():
    try:
        tokenizer, encoder = pretrained.load_pretrained("text", device="cpu")
    except FileNotFoundError as err:
        pytest.skip(f"shipped text encoder absent ({err})")
    prompts = data.shape_prompts()
    with torch.no_grad():
        emb = text.encode_prompts(tokenizer, encoder, prompts).flatten(1)
    dist = torch.cdist(emb, emb) + torch.eye(len(prompts)) * 1e9
    assert dist.min() > 1.0  # every pair of the 24 prompts (they differ in one word or more) lands apart
