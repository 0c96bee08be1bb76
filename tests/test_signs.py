"""The signs world of lesson 14: renderer, reader, word split, the three tokenizers, bad inputs."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from diffusion_lessons import signs


@pytest.fixture(scope="module")
def split():
    return signs.split_words()


def test_render_matches_the_fixed_world():
    """Written out from the world's definition with PIL directly, not through the package."""
    import matplotlib

    font = ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans-Bold.ttf", 16)
    for word in ("CAT", "WMW", "IJQ"):
        image = Image.new("RGB", (64, 32), "white")
        ImageDraw.Draw(image).text((32, 16), word, fill="black", font=font, anchor="mm")
        expected = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        got = signs.render(word)[0]
        assert got.shape == (3, 32, 64)
        assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(signs.render(["CAT", "DOG"]), signs.render(["CAT", "DOG"]))
    x = signs.render("OXO")
    assert x.min() == -1 and x.max() == 1 and (x == 1).float().mean() > 0.7   # white, some black ink


def test_split_words_is_fixed_disjoint_and_complete(split):
    train, unseen = split
    assert len(train) == signs.N_TRAIN_WORDS and len(train) + len(unseen) == signs.N_WORDS == 17576
    assert not set(train) & set(unseen) and sorted(train + unseen) == signs.all_words()
    assert signs.split_words() == split
    assert signs.split_words(seed=1)[0] != train


def test_reader_reads_the_renderer_perfectly(split):
    train, unseen = split
    words = train[::60] + unseen[::300] + ["AAA", "ZZZ", "MWM", "III"]
    assert signs.read_signs(signs.render(words)) == words
    score = signs.spelling(signs.render(words), words)
    assert score["letters"].value == 1.0 and score["words"].value == 1.0
    assert all(p.value == 1.0 for p in score["positions"])


def test_reader_reads_a_wrong_picture_as_wrong():
    score = signs.spelling(signs.render(["CAT", "DOG", "SUN"]), ["CAR", "DIG", "RUN"])
    assert score["read"] == ["CAT", "DOG", "SUN"]
    assert score["words"].value == 0.0
    assert abs(score["letters"].value - 2 / 3) < 1e-9
    assert [p.value for p in score["positions"]] == [2 / 3, 2 / 3, 2 / 3]
    blank = torch.ones(4, 3, 32, 64)
    assert signs.spelling(blank, ["CAT", "DOG", "SUN", "BOX"])["words"].value == 0.0
    drawn = signs.render(["TAC", "CAT"])   # the right letters in the wrong order: right in any order only
    score = signs.spelling(drawn, ["CAT", "CAT"])
    assert score["letters"].value == 2 / 3 and score["letters_any_order"].value == 1.0
    counts = signs.confusions(["CAT"], ["CAR"])
    assert counts.sum() == 3 and counts[signs.LETTERS.index("R"), signs.LETTERS.index("T")] == 1


def test_make_signs_is_seeded(split):
    train, _ = split
    a = signs.make_signs(16, train, torch.Generator().manual_seed(3))
    b = signs.make_signs(16, train, torch.Generator().manual_seed(3))
    assert a.words == b.words and torch.equal(a.images, b.images)
    assert set(a.words) <= set(train) and a.captions[0] == f"a sign that says {a.words[0]}"
    assert torch.equal(a.images[0], signs.render(a.words[0])[0])


@pytest.mark.parametrize("kind", signs.TOKENIZERS)
def test_tokenizers_round_trip_and_pad_as_the_pipeline_asks(kind, split):
    train, unseen = split
    tok = signs.build_tokenizer(kind, train)
    for word in (train[0], train[-1]):
        ids = tok(signs.caption(word)).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == signs.caption(word)
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    padded = tok([signs.caption(unseen[0])], padding="max_length", max_length=tok.model_max_length,
                 truncation=True).input_ids[0]
    assert len(padded) == signs.MAX_LENGTH and tok.eos_token_id in padded
    unseen_tokens = signs.tokens(tok, signs.caption(unseen[0]))
    if kind == "word":
        assert unseen_tokens[-2] == "[UNK]"
        assert signs.tokens(tok, signs.caption(unseen[1])) == unseen_tokens   # every unseen word looks the same
    else:
        assert "[UNK]" not in unseen_tokens
        assert tok.decode(tok(signs.caption(unseen[0])).input_ids, skip_special_tokens=True) \
            == signs.caption(unseen[0])
    if kind == "char":
        assert unseen_tokens[-4:-1] == list(unseen[0])


def test_bpe_learns_pieces_not_every_word(split):
    train, _ = split
    tok = signs.bpe_tokenizer(train)
    assert len(tok) <= signs.BPE_VOCAB_SIZE
    pieces = [signs.tokens(tok, signs.caption(w))[5:-1] for w in train[:200]]
    assert all("".join(p).lstrip("▁") == w for p, w in zip(pieces, train[:200]))
    assert any(len(p) > 1 for p in pieces)         # split words
    assert signs.tokens(tok, "a sign that says")[1:5] == ["▁a", "▁sign", "▁that", "▁says"]


@pytest.mark.parametrize("word", ["ABCD", "abc", "AB", "A1C", "ÄBC", 123, None])
def test_bad_words_get_a_clear_error(word):
    with pytest.raises(ValueError, match="word must be exactly 3 capital letters A-Z"):
        signs.caption(word)
    with pytest.raises(ValueError, match="words must be exactly 3 capital letters"):
        signs.render([word, "CAT"] if isinstance(word, str) else [word])


def test_bad_inputs_name_the_argument(split):
    train, _ = split
    with pytest.raises(ValueError, match="images must be a float tensor"):
        signs.read_signs(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="asked must name one word per image"):
        signs.spelling(signs.render(["CAT", "DOG"]), ["CAT"])
    with pytest.raises(ValueError, match="kind must be one of"):
        signs.build_tokenizer("sentencepiece", train)
    with pytest.raises(ValueError, match="train_words must be given"):
        signs.build_tokenizer("word")
    with pytest.raises(ValueError, match="n_train must be"):
        signs.split_words(0)
