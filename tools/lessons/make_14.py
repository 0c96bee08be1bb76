"""Write notebooks/14_spelling.ipynb (unexecuted); then:
python tools/execute_lesson.py notebooks/14_spelling.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_14.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 14: Why it can't spell

Ask an image generator for a sign that says CAT and you may get CAT, CTA, or letter-like squiggles. The usual
explanation waves at "tokenization". This lesson measures it instead: three text-to-image models, identical in
everything except how the sign's word reaches the text encoder, trained with the same data, seed and budget on a
world where the answer can be read off the picture. Then a fourth, identical to the character-level one except in
what its U-Net is trained to predict, shows that the tokenizer is not the whole story.

**What you will learn**
- what a word-level, a BPE and a character-level tokenizer hand the model for a word they saw and one they never saw;
- how to tell the text side's limit from the image side's (can the decoder even draw the letters?);
- how well each model spells, seen and unseen words apart, with intervals, and where the letters go wrong;
- why the same tokenizer spells or scrambles depending on the training target (noise or v), measured;
- what users can do about it: a character-aware text encoder, and repainting the word afterwards.
"""),
    code("""import json
import random
import warnings

import matplotlib.pyplot as plt
import torch

from diffusion_lessons import book, inpainting, latents, signs, text
from diffusion_lessons.device import pick_device
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.plotting import show_images
from diffusion_lessons.pretrained import ROOT
from diffusion_lessons.t2i import load_pipeline, pipeline_images

book.show_time("14_spelling")
device = pick_device()
KINDS = ("word", "bpe", "char")
pipes = {k: load_pipeline(ROOT / f"signs-{k}", device) for k in KINDS}
records = {k: json.loads((ROOT / f"signs-{k}" / "measurements.json").read_text()) for k in KINDS}
recipes = {k: json.loads((ROOT / f"signs-{k}" / "recipe.json").read_text()) for k in KINDS}
for k in KINDS:
    r = recipes[k]
    print(f"signs-{k}: {r['command']}\\n    {r['wall_time_s'] / 60:.1f} min on {r['hardware']}; the measurements "
          f"match the shipped weights: {record_matches_model(records[k], ROOT / f'signs-{k}')}")
print("all three U-Nets predict:", {k: pipes[k].scheduler.config.prediction_type for k in KINDS})
train_words = (ROOT / "signs-char" / "train_words.txt").read_text().split()
seen, unseen = signs.split_words(len(train_words), seed=recipes["char"]["seed"])
assert seen == train_words
mixed_seen, mixed_unseen = (random.Random(0).sample(w, len(w)) for w in (seen, unseen))  # examples, any letters
steps, scale = records["char"]["settings"]["num_inference_steps"], records["char"]["settings"]["guidance_scale"]
g = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731"""),
    md("""## 1. The signs world, and a reader that reads it

The world is fixed so that anyone can rebuild it: a 64 x 32 white sign with a word of exactly three capital
letters in black DejaVu Sans Bold at size 16 (the font file matplotlib ships), centred with PIL's
`ImageDraw.text((32, 16), word, anchor="mm")`. The caption is "a sign that says ABC". Of the 26³ = 17,576 words,
3,000 random ones are the training words; the other 14,576 are never seen in training.

The reader is template matching against the font's glyphs: each letter drawn alone is a template, and a picture
reads as the three glyphs, placed left to right anywhere along the sign, that together explain the most ink (found
exactly by dynamic programming over the columns). Because each glyph may sit anywhere, a word drawn a pixel or two
off its place still reads as what it shows. Letter accuracy compares the read word with the asked one letter by
letter; "any order" counts an asked letter as right wherever in the word it appears."""),
    code("""check = signs.make_signs(300, signs.all_words(), g(5))
read = signs.read_signs(check.images)
print(f"the reader on 300 clean renders: {sum(r == w for r, w in zip(read, check.words))} of 300 read right")
noisy = (check.images + 0.5 * torch.randn(check.images.shape, generator=g(6))).clamp(-1, 1)
print("... with strong noise added (std 0.5 of the [-1, 1] range), letters right:",
      signs.spelling(noisy, check.words)["letters"])
examples = mixed_seen[:4] + mixed_unseen[:4]
show_images(signs.render(examples), titles=[f"{w} (seen)" for w in mixed_seen[:4]] +
            [f"{w} (unseen)" for w in mixed_unseen[:4]],
            ncols=4, size=2.2)"""),
    md("""## 2. What each tokenizer hands the model

The three models share the caption, the U-Net, the text encoder's size and the training. They differ in one
place: the tokenizer and the text encoder's input layer (one learned vector per token).

- **word-level**: each training word is one token. A word it never saw becomes `[UNK]`, so *every* unseen word
  reaches the model as the same token.
- **BPE** (byte-pair encoding, Sennrich et al. 2016; what CLIP and GPT use): start from single characters and
  merge the most frequent adjacent pair again and again, here to 400 tokens, learned from the training captions.
  A word becomes a few pieces; an unseen word is spelled in pieces the model has seen elsewhere.
- **character-level**: one token per letter (ByT5, Xue et al. 2022, goes one step further: one per byte)."""),
    code("""tokenizers = {k: pipes[k].tokenizer for k in KINDS}
print("what the book says when a prompt has a word the tokenizer does not know:",
      text.prompt_problems(tokenizers["word"], signs.caption(unseen[0])))
# Asking the word model for unseen words on purpose is this lesson's experiment, so the warning that
# pipeline_images gives for each such prompt is switched off from here on.
warnings.filterwarnings("ignore", message="prompt 'a sign that says")
for word, where in ((seen[0], "seen"), (unseen[0], "unseen")):
    print(f"'{signs.caption(word)}' ({where} word)")
    for k in KINDS:
        print(f"  {k:>5}: {' '.join(signs.tokens(tokenizers[k], signs.caption(word))[5 if k != 'char' else 18:-1])}"
              f"   ({len(tokenizers[k])} tokens in the vocabulary)")"""),
    md("""BPE, written out. The tokenizer stores its merges in the order it learned them. To split a word, start from
its characters (with `▁` for the space before it) and apply the earliest-learned merge that fits, until none does.
By hand, against the `tokenizers` library:"""),
    code("""model = json.loads(tokenizers["bpe"].backend_tokenizer.to_str())["model"]
rank = {tuple(m.split(" ") if isinstance(m, str) else m): i for i, m in enumerate(model["merges"])}


def bpe_by_hand(word):
    pieces = ["▁"] + list(word)
    while True:
        pairs = [(rank.get((a, b), len(rank)), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        best, i = min(pairs)
        if best == len(rank):
            return pieces
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]


words = mixed_seen[:300] + mixed_unseen[:300]
library = [signs.tokens(tokenizers["bpe"], signs.caption(w))[5:-1] for w in words]
print("by hand == library on", sum(bpe_by_hand(w) == t for w, t in zip(words, library)), "of", len(words), "words")
print(f"the first merges learned: {model['merges'][:8]}")
pieces = [signs.tokens(tokenizers["bpe"], signs.caption(w))[5:-1] for w in seen]
longest = max(len(p.lstrip("▁")) for t in pieces for p in t)
print(f"all {len(seen)} training words: {sum(len(t) == 1 for t in pieces)} are one token; "
      f"{sum(map(len, pieces)) / len(pieces):.2f} pieces per word on average; the longest piece has {longest} letters")"""),
    md("""## 3. The image side first: can the decoder even draw the letters?

All three models draw through the same VAE (trained by `python -m diffusion_lessons.train signs-vae` on the
training signs; the three folders share one copy of it on disk). Its latents are 4 x 8 x 16, one latent cell per 4 x 4
pixels, and a letter is about 10 pixels wide. If the VAE's round trip already loses letters, no text encoder can
fix that. The reader on the VAE's reconstructions:"""),
    code("""vae_record = json.loads((ROOT / "signs-char" / "recipe-vae.json").read_text())
for where in ("seen", "unseen"):
    q = vae_record["quality"][where]
    print(f"VAE round trip, {where:>6} words: letters {q['letters']['value']:.3f} [{q['letters']['low']:.3f}, "
          f"{q['letters']['high']:.3f}], whole words {q['words']['value']:.3f} (n = {q['words']['n']})")
sample = signs.render(mixed_unseen[10:16])
with torch.no_grad():
    back = latents.reconstruct(pipes["char"].vae, sample.to(device)).clamp(-1, 1).cpu()
show_images(torch.stack([x for pair in zip(sample, back) for x in pair]), ncols=4, size=2.2,
            titles=[t for w in mixed_unseen[10:16] for t in (w, "VAE round trip")])"""),
    md(PROSE["vae"]),
    md("""## 4. The pictures

Each model, asked for four words it was trained on and four it never saw (25 steps, guidance 7.5, the same seed for
all three). The title is what the reader reads."""),
    code("""asked = mixed_seen[100:104] + mixed_unseen[100:104]
rows, titles = [], []
for k in KINDS:
    images = pipeline_images(pipes[k], [signs.caption(w) for w in asked], g(1), num_inference_steps=steps,
                             guidance_scale=scale).cpu()
    rows.append(images)
    titles += [f"{k}: {w}\\nread {r}" for w, r in zip(asked, signs.read_signs(images))]
show_images(torch.cat(rows), titles=titles, ncols=8, size=1.9,
            suptitle="asked: 4 seen words (left), 4 unseen words (right)")"""),
    md(PROSE["pictures"]),
    md("""## 5. How well each model spells, measured

The recipes measured each model on 64 seen and 64 unseen words (one picture each, 25 steps, guidance 7.5). Letter
accuracy has a bootstrap interval over the pictures (a picture's three letters are not independent); whole-word
accuracy a Wilson interval."""),
    code("""fmt = lambda e: f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"  # noqa: E731


def spelling_table(rows):
    \"\"\"rows: {label: a signs record}; one line per model, seen and unseen for each measure.\"\"\"
    width = max(map(len, rows)) + 2
    print(f"{'':<{width}}{'letters':>36}{'whole words':>36}{'letters, any order':>36}")
    print(f"{'model':<{width}}" + f"{'seen':>18}{'unseen':>18}" * 3)
    for label, r in rows.items():
        print(f"{label:<{width}}" + "".join(f"{fmt(r['seen'][m]):>18}{fmt(r['unseen'][m]):>18}"
                                          for m in ("letters", "words", "letters_any_order")))


spelling_table({f"signs-{k}": records[k] for k in KINDS})
print(f"n = {records['char']['seen']['words']['n']} words per cell; chance for a letter is 1/26 = {1 / 26:.2f}")
fig, ax = plt.subplots(figsize=(7, 3.2))
for j, where in enumerate(("seen", "unseen")):
    for i, k in enumerate(KINDS):
        e = records[k][where]["letters"]
        x = i + (j - 0.5) * 0.35
        ax.bar(x, e["value"], 0.33, color=("tab:blue", "tab:orange")[j], label=where if i == 0 else None)
        ax.errorbar(x, e["value"], [[e["value"] - e["low"]], [e["high"] - e["value"]]], color="k", capsize=3)
ax.set_xticks(range(3), [f"signs-{k}" for k in KINDS])
ax.set_ylabel("letter accuracy")
ax.set_ylim(0, 1.05)
ax.axhline(1 / 26, color="grey", ls=":", label="chance")
ax.legend(loc="upper left", fontsize=8)
ax.set_title("letter accuracy, seen and unseen words (95% intervals)")
plt.show()
word_unseen, char_unseen = records["word"]["unseen"]["letters"], records["char"]["unseen"]["letters"]
print("do the unseen-word intervals of signs-word and signs-char overlap?",
      word_unseen["low"] <= char_unseen["high"] and char_unseen["low"] <= word_unseen["high"])"""),
    md(PROSE["table"]),
    md("""## 6. Where the letters go wrong

Per position (first, middle, last letter) on unseen words, and the letters each model confuses most often."""),
    code("""for k in KINDS:
    positions = records[k]["unseen"]["positions"]
    counts = signs.confusions(records[k]["unseen"]["read"], records[k]["unseen"]["asked"])
    wrong = [(int(counts[a, b]), signs.LETTERS[a], signs.LETTERS[b]) for a in range(26) for b in range(26)
             if a != b and counts[a, b] > 0]
    top = ", ".join(f"{a}->{b} ({n})" for n, a, b in sorted(wrong, reverse=True)[:5])
    print(f"signs-{k:<5} unseen, by position: " + "  ".join(fmt(p) for p in positions))
    print(f"{'':>12}most frequent confusions (asked->read): {top or 'none'}")"""),
    md(PROSE["positions"]),
    md("""## 7. The other half of the story: what the U-Net is trained to predict

The three models above learn to predict $v = \\sqrt{\\bar\\alpha_t}\\,\\epsilon - \\sqrt{1-\\bar\\alpha_t}\\,z_0$
(Salimans and Ho 2022; lesson 03), not the noise $\\epsilon$ that Stable Diffusion 1.x predicts. `signs-char-eps` is the
character-level model trained by the same recipe, seed, data and steps, but predicting the noise
(`--prediction-type epsilon`): one change in the recipe, everything else the same (the two were trained on different
days and CPUs, as their records say). Its record and the shipped signs-char's:"""),
    code("""pipes["char-eps"] = load_pipeline(ROOT / "signs-char-eps", device)
records["char-eps"] = json.loads((ROOT / "signs-char-eps" / "measurements.json").read_text())
recipes["char-eps"] = json.loads((ROOT / "signs-char-eps" / "recipe.json").read_text())
print(f"signs-char-eps: {recipes['char-eps']['command']}\\n    {recipes['char-eps']['wall_time_s'] / 60:.1f} min on "
      f"{recipes['char-eps']['hardware']} (signs-char: on {recipes['char']['hardware']}); the measurements match "
      f"the shipped weights: "
      f"{record_matches_model(records['char-eps'], ROOT / 'signs-char-eps')}")
spelling_table({"signs-char-eps (predicts eps)": records["char-eps"], "signs-char (predicts v)": records["char"]})
print("unseen, by position (eps):", "  ".join(fmt(p) for p in records["char-eps"]["unseen"]["positions"]))
asked = mixed_unseen[400:408]
rows = [pipeline_images(pipes[k], [signs.caption(w) for w in asked], g(4), num_inference_steps=steps,
                        guidance_scale=scale).cpu() for k in ("char-eps", "char")]
show_images(torch.cat(rows), ncols=8, size=1.9,
            titles=[f"{k}: {w}\\nread {r}" for k, images in zip(("char-eps", "char"), rows)
                    for w, r in zip(asked, signs.read_signs(images))],
            suptitle="eight unseen words: predicting the noise (top), predicting v (bottom); same seed")"""),
    md(PROSE["eps_vs_v"]),
    md("""**Why the target matters, written out.** A network that predicts the noise also says what it thinks the clean
latents are: $\\hat z_0 = (z_t - \\sqrt{1-\\bar\\alpha_t}\\,\\hat\\epsilon)/\\sqrt{\\bar\\alpha_t}$. Turn it around: a
network whose idea of the sign is off by $\\delta = \\hat z_0 - z_0$ outputs
$\\hat\\epsilon - \\epsilon = -\\sqrt{\\bar\\alpha_t/(1-\\bar\\alpha_t)}\\,\\delta$, so the noise loss charges
$\\mathrm{SNR}_t\\,\\|\\delta\\|^2$, where $\\mathrm{SNR}_t = \\bar\\alpha_t/(1-\\bar\\alpha_t)$. In a $v$ output the
same error gives $\\hat v - v = \\sqrt{\\bar\\alpha_t}\\,(\\hat\\epsilon - \\epsilon) - \\sqrt{1-\\bar\\alpha_t}\\,\\delta =
-\\delta/\\sqrt{1-\\bar\\alpha_t}$ (using $\\bar\\alpha_t + (1-\\bar\\alpha_t) = 1$), which costs
$(\\mathrm{SNR}_t + 1)\\,\\|\\delta\\|^2$. At low noise the two weights are almost equal (the SNR is large). At high
noise the SNR is almost 0: a noise-predicting model is hardly charged at all for putting a letter in the wrong
place, while a $v$-predicting one pays at least what a loss on $z_0$ itself would charge (a weight of 1). Below,
an identity check of that algebra with the package's own training targets (not a measurement of the two networks),
the SNR checked against diffusers' `compute_snr`, and the two weights by noise level."""),
    code("""from diffusers.training_utils import compute_snr

from diffusion_lessons.schedules import make_schedule
from diffusion_lessons.training import loss_target

schedule = make_schedule("scaled_linear")                  # the schedule every signs model is trained on
t_all = torch.arange(1000)
snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
reference = compute_snr(pipes["char"].scheduler, t_all)
print(f"SNR_t by hand vs diffusers' compute_snr: max relative difference {((snr - reference) / reference).abs().max():.1e}")
z0, eps = torch.randn(4, 4, 8, 16, generator=g(7)), torch.randn(4, 4, 8, 16, generator=g(8))
delta = 0.1 * torch.randn(z0.shape, generator=g(9))
for t in (960, 500, 100):
    tt = torch.full((4,), t)
    abar = schedule.alphas_cumprod[t]
    z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    eps_wrong = (z_t - abar.sqrt() * (z0 + delta)) / (1 - abar).sqrt()   # the noise that goes with z0 + delta
    cost = {kind: ((loss_target(schedule, z0 + delta, eps_wrong, tt, kind) - loss_target(schedule, z0, eps, tt, kind))
                   ** 2).sum() / (delta ** 2).sum() for kind in ("epsilon", "v_prediction")}
    print(f"t = {t}: an error in z0 costs {cost['epsilon']:.3f} x in the noise loss (SNR = {snr[t]:.3f}), "
          f"{cost['v_prediction']:.3f} x in the v loss (SNR + 1 = {snr[t] + 1:.3f})")
pipes["char"].scheduler.set_timesteps(steps)
first = pipes["char"].scheduler.timesteps[:5].tolist()
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.semilogy(t_all, snr, label="predicting the noise: SNR_t")
ax.semilogy(t_all, snr + 1, label="predicting v: SNR_t + 1")
ax.scatter(first + first, torch.cat([snr[first], (snr + 1)[first]]), color="k", s=12, zorder=3,
           label=f"the first 5 of {steps} sampling steps")
ax.set_xlabel("timestep t (higher = noisier)")
ax.set_ylabel("cost of an error in z0")
ax.set_title("what each training target charges for a wrong picture, by noise level")
ax.legend(fontsize=8)
plt.show()"""),
    md("""Near the first sampling step the noise loss charges an error in the picture under a hundredth of what the $v$
loss charges (the printed t = 960 line). Those first, noisiest steps are where the coarse structure of a picture is
settled (Choi et al. 2022 find that coarse structure is learned at the highest noise levels), and where a letter
sits is coarse structure. In $z_0$ terms most of the noise loss's weight falls where the letters are already
visible. We did not measure at which step each of the two models settles its letters; exercise 8 does.

**Beyond this world.** The target is chosen by whoever trains the model, not by its user, but it is part of the
history of spelling: Stable Diffusion 1.x predicts the noise, Stable Diffusion 2's 768-pixel models predict $v$, and
SD3 and FLUX are trained by flow matching (lesson 08): with $x_\\sigma = (1-\\sigma)\\,x_0 + \\sigma\\,\\epsilon$ its
target is $\\epsilon - x_0$ (lesson 08's velocity, not this section's $v$), which charges an error in the picture
$1/\\sigma^2$ times, never less than a loss on $x_0$ itself. The large models that spell well also changed their
text side (bigger or character-aware encoders, section 8), so their history cannot separate the two causes; this
lesson's pair of models, one change apart, can."""),
    md("""## 8. What users can do about it

**A character-aware text encoder.** Section 5 is the case for it, with the target held at $v$ (section 7): the only
change between signs-word and signs-char is how the word is tokenized. Large models took the same route. Liu et al. (2022, "Character-Aware
Models Improve Visual Text Rendering") showed that adding a character-level encoder (ByT5) to a model with a
word-piece encoder fixes much of its spelling; they also found Imagen, with its far larger T5-XXL encoder, spelling
better than CLIP-based models, and later models that condition on the glyphs themselves (rendered text as a control
image, as lesson 12's ControlNet takes a silhouette) go further.

**Repainting the word afterwards.** A user who likes a picture but not its text can mask the text and repaint it
with a model that spells, keeping the rest (lesson 11's inpainting). Here: signs-word's pictures of unseen words,
the word's box masked, repainted by signs-char with the blending trick of lesson 11 (diffusers'
`StableDiffusionInpaintPipeline` on its 4-channel U-Net). In this world the word is most of the picture, so the
repaint is close to a fresh sign; on a photograph the rest would be kept."""),
    code("""words = mixed_unseen[200:224]
prompts = [signs.caption(w) for w in words]
before = pipeline_images(pipes["word"], prompts, g(2), num_inference_steps=steps, guidance_scale=scale).cpu()
mask = torch.zeros(1, 1, signs.HEIGHT, signs.WIDTH)
mask[..., 4:28, 4:60] = 1.0                               # the word's box, in whole 4-pixel latent cells
repaint = inpainting.inpaint_pipeline(pipes["char"])
after = inpainting.inpaint(repaint, before.to(device), mask.to(device), prompts, steps, scale, g(3)).cpu()
b, a = signs.spelling(before, words), signs.spelling(after, words)
print(f"letters right before: {b['letters']}, after repainting with signs-char: {a['letters']}")
print(f"whole words right before: {b['words']}, after: {a['words']}")
show_images(torch.cat([before[:6], after[:6]]), ncols=6, size=1.9,
            titles=[f"signs-word: {w}\\nread {r}" for w, r in zip(words, b["read"])][:6] +
                   [f"repainted: {w}\\nread {r}" for w, r in zip(words, a["read"])][:6])"""),
    md(PROSE["repaint"]),
    md("""## Exercises

1. Tokenize "a sign that says QQQ" with each of the three tokenizers. Is QQQ a training word? What does the word
   model receive, and what would it receive for "XYZ"?
2. The BPE tokenizer has 400 tokens. Predict what happens to the seen/unseen gap with 4,000 tokens (hint: how many
   training words would become single tokens?). Build one with `signs.bpe_tokenizer(train_words, 4000)` and count.
3. Chance for a letter in its place is 1/26. What is chance for the "any order" measure, where an asked letter
   counts wherever it appears among the three read? Compare with the word model's unseen-word row.
4. Section 3 measured the VAE's round trip. Design the check you would run before training a model to render
   size-8 text in this world.
5. In section 8 the mask covers the whole word. What would you expect if it covered only the last letter, and the
   prompt still named the whole word?
6. Section 7's plot says the noise loss charges almost nothing for a wrong picture at t = 960. Show that weighting
   each example's noise loss by (SNR_t + 1) / SNR_t charges an error in z0 exactly what the v loss charges. Why
   might training with that weight still behave differently from predicting v? (Hint: how large can the weight
   get, and what does the network's output have to look like at t = 999?)
7. Train the word-level model's noise-predicting twin (`python -m diffusion_lessons.train signs-word
   --prediction-type epsilon --vae diffusion_lessons/pretrained/signs-char --out runs/signs-word-eps`, about half an
   hour on a laptop CPU) and compare its unseen-word letters with signs-word's. Does the target matter when the
   tokenizer hides the letters?
8. At which step does each model settle its letters? Run signs-char and signs-char-eps on the same unseen words and
   seed, read the reader's word from the model's own clean-picture estimate at each of the 25 steps
   (`DDIMScheduler.step` returns it as `pred_original_sample`: wrap the pipeline scheduler's `step` to keep it, then
   decode it with the VAE), and plot the share of letters already right against the step.
"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                         "language": "python", "name": "diffusion-lessons"},
                                          "language_info": {"name": "python"}})
nbformat.write(nb, HERE.parent.parent / "notebooks" / "14_spelling.ipynb")
print("wrote notebooks/14_spelling.ipynb")
