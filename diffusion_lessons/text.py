"""From words to numbers, lesson 07: a word-level tokenizer and a small CLIP text encoder.

The tokenizer (Hugging Face `tokenizers`, WordLevel) lowercases the prompt, drops punctuation,
splits it into words and maps each word to an id; a word it never saw becomes [UNK]. It adds
[BOS] and [EOS] around the words and pads with [PAD] to MAX_LENGTH ids, the way
StableDiffusionPipeline calls it. The CLIPTextModel turns the ids into one 64-number embedding
per position; the U-Net attends to all of them through cross-attention.

Documented behaviour for awkward prompts (what StableDiffusionPipeline does with them):
- empty prompt "": just [BOS] [EOS] and padding, the same ids as the unconditional prompt of
  classifier-free guidance, so it gives an unconditional sample;
- unknown words: each becomes [UNK] (the model was never trained on it, so it adds nothing useful);
- too long: cut to MAX_LENGTH ids ([EOS] last), and the pipeline logs a warning with the dropped words.
`prompt_problems` names these cases, and diffusion_lessons.t2i.generate warns with its message.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import _checks
from .data import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")  # ids 0, 1, 2, 3
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
MAX_LENGTH = 20  # ids per prompt, [BOS] and [EOS] included; the longest caption has 14
TEXT_ENCODER_CONFIG = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=MAX_LENGTH, projection_dim=64)


def caption_words() -> list[str]:
    """Every word of the captioned-shapes captions, in a fixed order (the vocabulary after the specials)."""
    phrases = ["a on background", *SIZES, *COLORS, *SHAPES, *POSITIONS, *BACKGROUNDS]
    words: list[str] = []
    for phrase in phrases:
        words += [w for w in phrase.split() if w not in words]
    return words


def build_tokenizer(words: list[str] | None = None, max_length: int = MAX_LENGTH):
    """A word-level tokenizer wrapped as a transformers PreTrainedTokenizerFast (save_pretrained works)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if words is not None and (not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words)):
        raise ValueError(f"words must be a list of strings (the vocabulary) or None, got {words!r}")
    _checks.integer(max_length, "max_length", 3)   # [BOS], one word, [EOS]
    words = caption_words() if words is None else list(words)
    if len(set(words)) != len(words) or set(words) & set(SPECIAL_TOKENS):
        raise ValueError("words must be distinct and must not contain the special tokens")
    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   unk_token="[UNK]", pad_token="[PAD]", model_max_length=max_length)


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """save_pretrained, recording the class as PreTrainedTokenizerFast (loads with transformers 4 and 5)."""
    _check_tokenizer(tokenizer)
    if not isinstance(folder, (str, Path)):
        raise ValueError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")


ENCODERS = ("causal", "bidirectional")


def build_text_encoder(tokenizer, seed: int | None = 0, kind: str = "causal", width: int = 64):
    """A small text encoder for `tokenizer` (hidden `width` = 64, 2 layers, 4 heads, feed-forward 4 x width,
    about 0.1 M parameters at width 64). kind="causal": a transformers CLIPTextModel, each word sees only the
    words before it (CLIP's causal mask, learned absolute positions); kind="bidirectional": a T5EncoderModel of
    the same width, depth and heads, each word sees the whole caption (T5's relative position biases), the
    encoder family SD3 and FLUX added. width (a multiple of 4): lesson 15's encoder-size experiment."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    _check_tokenizer(tokenizer)
    seed = _checks.optional_seed(seed)
    kind = _checks.choice(kind, "kind", ENCODERS)
    width = _checks.integer(width, "width", 4)
    if width % 4:
        raise ValueError(f"width must be a multiple of 4 (the 4 attention heads), got {width}")
    sized = dict(TEXT_ENCODER_CONFIG, hidden_size=width, intermediate_size=4 * width, projection_dim=width)
    if kind == "causal":
        config = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                **{**sized, "max_position_embeddings": tokenizer.model_max_length})
    else:
        c = sized
        config = T5Config(vocab_size=len(tokenizer), d_model=c["hidden_size"], d_ff=c["intermediate_size"],
                          num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                          d_kv=c["hidden_size"] // c["num_attention_heads"], dropout_rate=0.0,
                          relative_attention_num_buckets=16, relative_attention_max_distance=tokenizer.model_max_length,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                          decoder_start_token_id=tokenizer.pad_token_id, is_encoder_decoder=False, use_cache=False)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return CLIPTextModel(config) if kind == "causal" else T5EncoderModel(config)


def tokenize(tokenizer, prompts: str | list[str]) -> torch.Tensor:
    """Token ids (B, max_length), exactly as StableDiffusionPipeline makes them: padded, truncated."""
    _check_tokenizer(tokenizer)
    prompts = _check_prompts(prompts)
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def encode_prompts(tokenizer, text_encoder, prompts: str | list[str]) -> torch.Tensor:
    """Text embeddings (B, max_length, hidden): the CLIPTextModel's last hidden state, no attention mask."""
    _checks.module(text_encoder, "text_encoder")
    ids = tokenize(tokenizer, prompts).to(text_encoder.device)
    return text_encoder(ids)[0]


def pool_embeddings(embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The pooled vector of each caption as a one-token sequence (B, 1, hidden): the mean of its token states
    over its real tokens ([BOS], the words, [EOS]; not [PAD]), as Sentence-T5 pools a T5 encoder. A U-Net that
    cross-attends to it sees one summary of the caption instead of one vector per word (lesson 15)."""
    embeddings = _checks.tensor(embeddings, "embeddings", floating=True, ndim=3)
    ids = _checks.tensor(ids, "ids", ndim=2)
    if ids.shape != embeddings.shape[:2] or ids.is_floating_point():
        raise ValueError(f"ids must be integer token ids (B, L) matching embeddings (B, L, hidden) = "
                         f"{tuple(embeddings.shape)}, got {ids.dtype} {tuple(ids.shape)}")
    real = (ids != PAD_ID).to(embeddings.dtype)[:, :, None]
    return (embeddings * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp_min(1)


def encode_pooled(tokenizer, text_encoder, prompts: str | list[str]) -> torch.Tensor:
    """pool_embeddings of the prompts' embeddings (B, 1, hidden): what a pooled-conditioned pipeline is handed
    as prompt_embeds (t2i.pipeline_images(..., pooled=True))."""
    _checks.module(text_encoder, "text_encoder")
    ids = tokenize(tokenizer, prompts).to(text_encoder.device)
    return pool_embeddings(text_encoder(ids)[0], ids)


def prompt_problems(tokenizer, prompt: str) -> list[str]:
    """What the model will not see as written: unknown words (-> [UNK]) and words cut off by the length limit."""
    _check_tokenizer(tokenizer)
    prompt = _checks.text(prompt, "prompt")
    normalizer = tokenizer.backend_tokenizer.normalizer
    words = (normalizer.normalize_str(prompt) if normalizer is not None else prompt).split()
    problems = []
    unk = tokenizer.unk_token_id
    unknown = [w for w in words if unk in tokenizer(w, add_special_tokens=False).input_ids]
    if unknown:
        problems.append(f"unknown words become [UNK]: {', '.join(repr(w) for w in unknown)}")
    room = tokenizer.model_max_length - 2
    pieces = tokenizer(prompt, add_special_tokens=False).input_ids
    if len(pieces) > room:
        if len(pieces) == len(words):   # one token per word (the word-level tokenizers)
            problems.append(f"the prompt has {len(words)} words but only {room} fit; dropped: "
                            f"{' '.join(words[room:])!r}")
        else:
            problems.append(f"the prompt has {len(pieces)} tokens but only {room} fit; dropped: "
                            f"{' '.join(tokenizer.convert_ids_to_tokens(pieces[room:]))!r}")
    return problems


def _check_prompts(prompts: str | list[str]) -> list[str]:
    return _checks.prompts(prompts, "prompts")


def _check_tokenizer(tokenizer) -> None:
    if not callable(tokenizer) or not all(hasattr(tokenizer, a) for a in ("model_max_length", "get_vocab",
                                                                          "save_pretrained")):
        raise ValueError(f"tokenizer must be a transformers tokenizer (build_tokenizer), got {type(tokenizer).__name__}")
