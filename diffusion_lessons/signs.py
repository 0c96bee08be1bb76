"""The signs world of lesson 14: a three-letter word on a sign, and a reader that reads it back.

The world is fixed, so anyone can render and read it the same way: 64 pixels wide, 32 high, RGB, white
background, a word of exactly three capital letters A-Z in black, DejaVu Sans Bold (the copy matplotlib ships,
matplotlib.get_data_path()/fonts/ttf/DejaVuSans-Bold.ttf) at size 16, drawn by PIL's
ImageDraw.text((32, 16), word, anchor="mm"). Caption: "a sign that says ABC".

Of the 26**3 = 17,576 words, `split_words` draws a few thousand training words from a seed; the rest are never
seen in training. The reader is template matching against the font's glyphs: each letter drawn alone is a
template, and a picture reads as the three glyphs, placed left to right anywhere along the sign, that explain
the most ink (`read_signs`). It reads the renderer's own output perfectly, and a word drawn a pixel or two off
its place still reads; letter accuracy compares the read word with the asked one letter by letter.

Three tokenizers that differ in one thing, how the sign's word reaches the text encoder:
- word-level (`word_tokenizer`): each training word one token; any other word is [UNK];
- BPE (`bpe_tokenizer`): byte-pair merges learned with the tokenizers library from the training captions;
- character-level (`char_tokenizer`): one token per letter.
Each is a transformers PreTrainedTokenizerFast with [PAD] [UNK] [BOS] [EOS] as ids 0-3, takes the caption as a
plain string and pads to MAX_LENGTH, as StableDiffusionPipeline calls it.
"""

from __future__ import annotations

import functools
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import _checks, stats

HEIGHT, WIDTH = 32, 64
FONT_SIZE = 16
LETTERS = string.ascii_uppercase
WORD_LENGTH = 3
N_WORDS = len(LETTERS) ** WORD_LENGTH     # 17,576
N_TRAIN_WORDS = 3000
CAPTION = "a sign that says {}"
MAX_LENGTH = 24                             # ids per caption; the char tokenizer needs 20 + [BOS] [EOS]
TOKENIZERS = ("word", "bpe", "char")
BPE_VOCAB_SIZE = 400
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def font_path() -> Path:
    """DejaVu Sans Bold as matplotlib ships it (installed with the book, so no download)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path()), FONT_SIZE)


def check_word(word, name: str = "word") -> str:
    """word, if it is exactly three capital letters A-Z; else a ValueError naming `name`."""
    if not isinstance(word, str) or len(word) != WORD_LENGTH or any(c not in LETTERS for c in word):
        raise ValueError(f"{name} must be exactly {WORD_LENGTH} capital letters A-Z (like 'CAT'), got {word!r}")
    return word


def _check_words(words, name: str = "words") -> list[str]:
    if isinstance(words, str):
        words = [words]
    if not isinstance(words, (list, tuple)) or not words:
        raise ValueError(f"{name} must be a word or a non-empty list of words, got {type(words).__name__}")
    return [check_word(w, name) for w in words]


def caption(word: str) -> str:
    """The world's caption: 'a sign that says ABC'."""
    return CAPTION.format(check_word(word))


def _render_grey(word: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("L", (WIDTH, HEIGHT), 255)
    ImageDraw.Draw(image).text((WIDTH // 2, HEIGHT // 2), word, fill=0, font=_font(), anchor="mm")
    return np.asarray(image, dtype=np.uint8)


def render(words: str | list[str]) -> torch.Tensor:
    """Signs (B, 3, 32, 64) in [-1, 1] (white 1, black -1), one per word; deterministic."""
    words = _check_words(words)
    grey = np.stack([_render_grey(w) for w in words]).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(grey)[:, None].expand(-1, 3, -1, -1).contiguous()


def all_words() -> list[str]:
    """The 17,576 words AAA ... ZZZ in order."""
    return [a + b + c for a in LETTERS for b in LETTERS for c in LETTERS]


def split_words(n_train: int = N_TRAIN_WORDS, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training words, unseen words): n_train words drawn without replacement from the seed, the rest unseen;
    both sorted."""
    n_train = _checks.integer(n_train, "n_train", 1, N_WORDS - 1)
    seed = _checks.seed(seed)
    words = all_words()
    order = torch.randperm(N_WORDS, generator=torch.Generator().manual_seed(seed)).tolist()
    train = sorted(words[i] for i in order[:n_train])
    chosen = set(train)
    return train, [w for w in words if w not in chosen]


@dataclass
class SignsData:
    """Rendered signs: images (N, 3, 32, 64) in [-1, 1], their words and captions."""

    images: torch.Tensor
    words: list[str]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.words)


def make_signs(n: int, words: list[str], generator: torch.Generator | None = None) -> SignsData:
    """n signs of words drawn uniformly (with replacement) from `words` by the generator."""
    n = _checks.integer(n, "n", 1)
    words = _check_words(words)
    generator = _checks.generator(generator)
    idx = torch.randint(0, len(words), (n,), generator=generator).tolist()
    chosen = [words[i] for i in idx]
    unique = sorted(set(chosen))
    rendered = dict(zip(unique, render(unique)))
    return SignsData(torch.stack([rendered[w] for w in chosen]), chosen, [caption(w) for w in chosen])


# --- the reader ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _glyphs() -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each letter drawn alone as the world draws a word (anchor "mm" fixes the vertical place for every text),
    cut to its ink's columns: templates (32, width) of ink in [0, 1], and their squared norms (26,)."""
    glyphs = []
    for letter in LETTERS:
        ink = 1 - torch.from_numpy(_render_grey(letter).copy()).float() / 255
        cols = torch.nonzero(ink.sum(0) > 0).flatten()
        glyphs.append(ink[:, int(cols[0]):int(cols[-1]) + 1].contiguous())
    return glyphs, torch.tensor([float((g ** 2).sum()) for g in glyphs])


def _ink(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point or images.ndim != 4 \
            or tuple(images.shape[1:]) != (3, HEIGHT, WIDTH):
        raise ValueError(f"{name} must be a float tensor (B, 3, {HEIGHT}, {WIDTH}) in [-1, 1] (signs), "
                         f"got {tuple(getattr(images, 'shape', ()))}")
    grey = images.detach().float().cpu().clamp(-1, 1).mean(1)
    return (1 - grey) / 2                                    # ink (B, 32, 64): 1 black, 0 white


def _gains(ink: torch.Tensor) -> torch.Tensor:
    """gain (B, 26, 64) of placing each letter's glyph with its left edge at each column (-inf where it does not
    fit), the best of a vertical shift of -1, 0 or +1 pixel: |I|^2 - |I - T|^2 over the glyph = 2 <I, T> - |T|^2."""
    glyphs, norms = _glyphs()
    shifted = torch.stack([torch.roll(ink, k, dims=1) for k in (-1, 0, 1)], 1)        # (B, 3, 32, 64)
    flat = shifted.reshape(-1, HEIGHT, WIDTH)                                          # rows become channels
    out = torch.full((len(ink), len(LETTERS), WIDTH), float("-inf"))
    for j, (glyph, norm) in enumerate(zip(glyphs, norms)):
        corr = torch.nn.functional.conv1d(flat, glyph[None])                           # (B * 3, 1, positions)
        gain = (2 * corr.reshape(len(ink), 3, -1) - norm).amax(1)
        out[:, j, :gain.shape[1]] = gain
    return out


@functools.lru_cache(maxsize=4)
def _cross(overlap: int) -> torch.Tensor:
    """(26, 26, overlap + 1): <T_a, T_b> with glyph b's left edge d columns before glyph a's right edge ends
    (d = 1 .. overlap; d = 0 unused): the ink the two would both claim, counted twice in a sum of gains."""
    glyphs, _ = _glyphs()
    out = torch.zeros(len(LETTERS), len(LETTERS), overlap + 1)
    for a, ga in enumerate(glyphs):
        for b, gb in enumerate(glyphs):
            for d in range(1, overlap + 1):
                n = min(d, gb.shape[1], ga.shape[1])
                out[a, b, d] = float((ga[:, -d:][:, :n] * gb[:, :n]).sum())
    return out


def read_signs(images: torch.Tensor, overlap: int = 4) -> list[str]:
    """The word each sign shows, read letter by letter: the three glyphs, placed left to right anywhere along the
    sign (each may overlap the one before by up to `overlap` columns, as the font's letters do), that together
    explain the most ink: |I|^2 - |I - T1 - T2 - T3|^2 at its largest, found exactly by dynamic programming."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and len(images) > 128:   # in chunks: less memory
        return [w for i in range(0, len(images), 128) for w in read_signs(images[i:i + 128], overlap)]
    return _read(images, overlap)


def _read(images: torch.Tensor, overlap: int) -> list[str]:
    """read_signs on one chunk."""
    ink = _ink(images)
    overlap = _checks.integer(overlap, "overlap", 0, 8)
    glyphs, _ = _glyphs()
    widths = torch.tensor([g.shape[1] for g in glyphs])
    gains, cross = _gains(ink), 2 * _cross(overlap)
    b, n, neg = len(ink), len(LETTERS), float("-inf")
    best = gains.clone()                                             # one letter: (B, 26, 64) by its start
    back = []
    for _ in range(WORD_LENGTH - 1):
        # the best earlier chain ending at or before each column, from the letter's start x and width
        ends = torch.full((b, WIDTH + 1), neg)
        end_arg = torch.zeros(b, WIDTH + 1, 2, dtype=torch.long)
        for j in range(n):
            w = int(widths[j])
            vals = best[:, j, :WIDTH + 1 - w]
            better = vals > ends[:, w:]
            ends[:, w:] = torch.where(better, vals, ends[:, w:])
            end_arg[:, w:][better] = torch.tensor([j, 0])
            end_arg[:, w:, 1] = torch.where(better, torch.arange(WIDTH + 1 - w)[None], end_arg[:, w:, 1])
        run, run_arg = ends.clone(), end_arg.clone()
        for e in range(1, WIDTH + 1):                                # prefix maximum: ends at or before e
            keep = run[:, e - 1] > run[:, e]
            run[:, e] = torch.where(keep, run[:, e - 1], run[:, e])
            run_arg[:, e] = torch.where(keep[:, None], run_arg[:, e - 1], run_arg[:, e])
        cand = run[:, None, :WIDTH].expand(b, n, WIDTH).clone()     # (B, next letter, its start)
        cand_arg = run_arg[:, None, :WIDTH].expand(b, n, WIDTH, 2).clone()
        for d in range(1, overlap + 1):                               # the earlier glyph ends d columns after x
            shifted = torch.full((b, n, WIDTH), neg)
            for j in range(n):
                shift = int(widths[j]) - d                            # x1 = x - shift
                if shift <= 0:
                    continue
                shifted[:, j, shift:] = best[:, j, :WIDTH - shift]
            total = shifted[:, :, None, :] - cross[None, :, :, d, None]   # (B, earlier, next, x)
            value, arg = total.max(1)
            better = value > cand
            cand = torch.where(better, value, cand)
            start = torch.arange(WIDTH)[None, None, :] - (widths[arg] - d)
            cand_arg = torch.where(better[..., None], torch.stack([arg, start], -1), cand_arg)
        best = gains + cand
        back.append(cand_arg)
    words = []
    flat = best.reshape(b, -1).argmax(1)
    for i in range(b):
        j, x = divmod(int(flat[i]), WIDTH)
        letters = [LETTERS[j]]
        for arg in reversed(back):
            j, x = arg[i, j, x].tolist()
            letters.append(LETTERS[j])
        words.append("".join(reversed(letters)))
    return words


def letter_matches(read: list[str], asked: list[str]) -> torch.Tensor:
    """(N, 3) booleans: letter i of the read word equals letter i of the asked word."""
    read, asked = _check_words(read, "read"), _check_words(asked, "asked")
    if len(read) != len(asked):
        raise ValueError(f"read and asked must have the same length, got {len(read)} and {len(asked)}")
    return torch.tensor([[r[i] == a[i] for i in range(WORD_LENGTH)] for r, a in zip(read, asked)])


def spelling(images: torch.Tensor, asked: list[str]) -> dict:
    """Read the signs and score them against the asked words: letter accuracy (interval by a bootstrap over the
    pictures, whose three letters are not independent), whole-word accuracy (Wilson), per-position letter
    accuracy (Wilson), letters right in any order (the share of the asked letters that the read word holds
    anywhere; bootstrap), with the words read."""
    asked = _check_words(asked, "asked")
    if len(asked) != len(images):
        raise ValueError(f"asked must name one word per image: {len(images)} images, {len(asked)} words")
    read = read_signs(images)
    match = letter_matches(read, asked)
    any_order = np.array([sum((Counter(r) & Counter(a)).values()) / WORD_LENGTH for r, a in zip(read, asked)])
    return dict(letters=_mean_interval(match.double().mean(1).numpy()), words=stats.proportion(match.all(1)),
                letters_any_order=_mean_interval(any_order),
                positions=[stats.proportion(match[:, i]) for i in range(WORD_LENGTH)], read=read)


def _mean_interval(per_image: np.ndarray) -> stats.Estimate:
    """The mean of per-picture shares with a bootstrap interval over the pictures (one picture: no interval)."""
    if len(per_image) > 1:
        return stats.bootstrap_interval(per_image)
    return stats.Estimate(float(per_image[0]), float(per_image[0]), float(per_image[0]), 1)


def confusions(read: list[str], asked: list[str]) -> torch.Tensor:
    """(26, 26) counts: row = asked letter, column = read letter, over every position."""
    letter_matches(read, asked)   # checks both lists
    counts = torch.zeros(len(LETTERS), len(LETTERS), dtype=torch.long)
    for r, a in zip(read, asked):
        for i in range(WORD_LENGTH):
            counts[LETTERS.index(a[i]), LETTERS.index(r[i])] += 1
    return counts


# --- tokenizers ---------------------------------------------------------------------------------------------

def _wrap(tok, max_length: int):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bos, eos = tok.token_to_id("[BOS]"), tok.token_to_id("[EOS]")
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                       special_tokens=[("[BOS]", bos), ("[EOS]", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]",
                                   pad_token="[PAD]", model_max_length=max_length)


def _caption_words() -> list[str]:
    return CAPTION.format("").split()


def word_tokenizer(train_words: list[str]):
    """Word-level: 'a', 'sign', 'that', 'says' and each training word one token; any other word -> [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = _check_words(train_words, "train_words")
    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *_caption_words(), *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _wrap(tok, MAX_LENGTH)


def bpe_tokenizer(train_words: list[str], vocab_size: int = BPE_VOCAB_SIZE):
    """BPE learned by the tokenizers library from the training captions (vocab_size tokens at most): frequent
    letter pairs and some whole words become tokens; an unseen word is spelled in the pieces it has. A word's
    first piece carries the space before it, shown as '▁' (sentencepiece's Metaspace), so decoding is exact."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    words = _check_words(train_words, "train_words")
    vocab_size = _checks.integer(vocab_size, "vocab_size", len(SPECIAL_TOKENS) + 2 * len(LETTERS) + 10)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=list(LETTERS), show_progress=False)
    tok.train_from_iterator([caption(w) for w in words], trainer=trainer)
    return _wrap(tok, MAX_LENGTH)


def char_tokenizer():
    """Character-level: one token per character, the spaces included (so decoding is exact)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate([*SPECIAL_TOKENS, " ", *string.ascii_lowercase, *LETTERS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok, MAX_LENGTH)


def build_tokenizer(kind: str, train_words: list[str] | None = None):
    """The tokenizer of kind 'word', 'bpe' or 'char' (train_words needed for 'word' and 'bpe')."""
    kind = _checks.choice(kind, "kind", TOKENIZERS)
    if kind == "char":
        return char_tokenizer()
    if train_words is None:
        raise ValueError(f"train_words must be given for the {kind!r} tokenizer (it learns its vocabulary)")
    return word_tokenizer(train_words) if kind == "word" else bpe_tokenizer(train_words)


def tokens(tokenizer, text: str) -> list[str]:
    """The tokens the text encoder receives for `text` ([BOS] ... [EOS], padding left out)."""
    text = _checks.text(text, "text")
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise ValueError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    return tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)
