"""Write notebooks/16_bias.ipynb (unexecuted); then: python tools/execute_lesson.py notebooks/16_bias.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_16.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 16: Bias in, bias out, and memorization

Ask a large image generator for "a CEO" and count what comes back: mostly white men, more so than among real
CEOs. The usual explanation is that the training pictures lean that way and the model learns the lean. That is
true but vague: *how much* of the lean comes out, does the sampler make it worse, and which of the fixes people
use actually work? This lesson answers those questions on a world small enough to train on a laptop, where the
lean is set by us and every output can be read back exactly.

The world is the one-shape world of lessons 06 and 07 with one new word. Most captions name the color
("a blue square on a black background") and are balanced over the four colors. A quarter of the captions use a
**role word** instead: "a boss shape on a white background". The pictures behind "boss" are **red 80% of the
time**, the way the pictures behind "CEO" lean one way. The book ships the lesson-07 text-to-image model trained on
this data (`shapes-boss`, `python -m diffusion_lessons.train shapes-boss`), and we measure what it draws.

**What you will learn**
- how a skew in the data becomes a skew in the outputs, measured with 95% intervals;
- whether classifier-free guidance (lesson 05) amplifies the majority beyond the data's 80%;
- which fixes work, measured: naming the attribute in the prompt, a negative prompt, and rebalancing the data;
- what of this transfers to large models, and what does not;
- when a generator copies its training pictures instead of making new ones: the same model trained on 10, 100 and
  1,000 digits, measured against held-out digits, and what duplicated training pictures do.
"""),
    code("""import json

import torch

from diffusion_lessons import bias, book, data, t2i
from diffusion_lessons.device import by_profile, make_generator, pick_device
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.plotting import new_figure, show_images
from diffusion_lessons.pretrained import ROOT
from diffusion_lessons.stats import Estimate

book.show_time("16_bias")
device = pick_device()
N_LIVE = by_profile(quick=40, full=200)     # live pictures per setting; the record holds 200 each
folder = ROOT / "shapes-boss"
pipe = t2i.load_pipeline(folder, device)
record = json.loads((folder / "measurements.json").read_text())
print("the shipped measurements were made on these weights:", record_matches_model(record, folder))
recipe = json.loads((folder / "recipe.json").read_text())
print(f"trained by: {recipe['command']} ({recipe['steps']} steps, {recipe['wall_time_s'] / 60:.0f} min on "
      f"{recipe['hardware']})")"""),
    md("""## 1. A world with a lean

`bias.make_role_shapes(n)` makes the training set: three quarters ordinary captioned shapes (lesson 06's
`make_shapes`), one quarter role pictures. A role picture is red with probability 0.8, otherwise green, blue or
yellow with equal odds; 30% of role captions also name the color ("a green boss shape on a white background"),
the rest do not. Every caption that names a color tells the truth. Here is a sample of it, with the shares
counted (each with its 95% Wilson interval, as everywhere in this book):"""),
    code("""# NBVAL_CHECK_OUTPUT
world = bias.make_role_shapes(2000, generator=make_generator(0))
groups = {
    "ordinary captions": [a for a in world.attributes if not a["role"]],
    "'boss', color named": [a for c, a in zip(world.captions, world.attributes) if a["role"] and c.split()[1] != "boss"],
    "'boss', no color": [a for c, a in zip(world.captions, world.attributes) if a["role"] and c.split()[1] == "boss"],
}
print(f"{'':<22}{'n':>6}" + "".join(f"{c:>22}" for c in data.COLORS))
for name, rows in groups.items():
    shares = bias.color_shares([a["color"] for a in rows])
    print(f"{name:<22}{len(rows):>6}" + "".join(f"{f'{e.value:.2f} [{e.low:.2f}, {e.high:.2f}]':>22}"
                                                for c, e in shares.items() if c != "none"))"""),
    code("""boss = [i for i, a in enumerate(world.attributes) if a["role"]][:12]
plain = [i for i, a in enumerate(world.attributes) if not a["role"]][:12]
show_images(torch.cat([world.images[boss], world.images[plain]]), ncols=12, size=0.9,
            titles=[("boss: " if world.attributes[i]["role"] else "")
                    + (data.parse_caption(world.captions[i])["color"] or "?") for i in boss + plain],
            suptitle="top: role pictures, titled by the color their caption names ('?': none); "
                     "bottom: ordinary pictures, by theirs")"""),
    md("""The model reads the prompt through its own word-level tokenizer (lesson 07): "boss" is one token, and the
prompt "a boss shape on a white background" names no color at all. Whatever color the model draws for it can only
come from what "boss" went with in training:"""),
    code("""# NBVAL_CHECK_OUTPUT
for prompt in (bias.ROLE_PROMPT, bias.role_caption("white", "blue"), "a red circle on a white background"):
    ids = pipe.tokenizer(prompt).input_ids
    print(f"{prompt!r:44} -> {pipe.tokenizer.convert_ids_to_tokens(ids)}")"""),
    md("""## 2. What comes out, and what guidance does to it

We sample the role prompt from the same starting noise at guidance scales 1 (no guidance: the model's plain
conditional prediction), 3 and 7.5 (Stable Diffusion's default), and read each picture's color with the reader of
lesson 07 (`evaluation.read_shapes`: the shape's median pixel, named by the nearest of the four colors)."""),
    code("""SCALES = (1.0, 3.0, 7.5)
live = {}
for scale in SCALES:
    live[scale] = t2i.pipeline_images(pipe, [bias.ROLE_PROMPT], make_generator(1), N_LIVE, guidance_scale=scale,
                                      num_inference_steps=25).cpu()
print(f"live, n = {N_LIVE} per scale; 95% intervals")
for scale in SCALES:
    shares = bias.color_shares(live[scale])
    print(f"s = {scale:<4g}" + "".join(f"{c:>8} {e.value:.2f} [{e.low:.2f}, {e.high:.2f}]" for c, e in shares.items()
                                       if c != "none" and e.value > 0))"""),
    code("""show_images(torch.cat([live[s][:12] for s in SCALES]), ncols=12, size=0.9,
            titles=[f"s = {s:g}" if i == 0 else "" for s in SCALES for i in range(12)],
            suptitle=f"'{bias.ROLE_PROMPT}': the same 12 starting noises at three guidance scales")"""),
    md("""Forty pictures give wide intervals. The model's record holds the same measurement on 200 pictures per scale
(made by the recipe, from one seed, 25 DDIM steps), next to the share of red among the role pictures it was trained
on:"""),
    code("""rows = {float(s): Estimate(value=r["share"], low=r["low"], high=r["high"], n=r["n"])
        for s, r in record["role_prompt_red_share"].items()}
trained = Estimate(**{("value" if k == "share" else k): v
                      for k, v in record["training_set"]["red_share_of_uncolored_role_captions"].items()})
print(f"red share, role prompt, recorded (n per scale, 95% intervals):")
print(f"  in the training pictures of 'a boss shape ...' : {trained.value:.3f} [{trained.low:.3f}, {trained.high:.3f}], "
      f"n = {trained.n}")
for scale, e in rows.items():
    print(f"  generated at guidance {scale:<4g}                 : {e.value:.3f} [{e.low:.3f}, {e.high:.3f}], n = {e.n}")
fig = new_figure(6.5, 3.4)
ax = fig.subplots()
xs = list(rows)
ax.errorbar(xs, [rows[s].value for s in xs], yerr=[[rows[s].value - rows[s].low for s in xs],
                                                    [rows[s].high - rows[s].value for s in xs]],
            fmt="o-", color="C3", capsize=4, label="generated (95% interval)")
ax.axhspan(trained.low, trained.high, color="grey", alpha=0.25, label="training pictures of the role caption")
ax.axhline(0.25, color="grey", ls=":", lw=1, label="a balanced world (1 in 4)")
ax.set(xlabel="guidance scale", ylabel="share of red", ylim=(0, 1.02), xticks=xs,
       title=f"'{bias.ROLE_PROMPT}'")
ax.legend(fontsize=8, loc="lower right")
fig"""),
    code("""# NBVAL_CHECK_OUTPUT
def above(a: Estimate, b: Estimate) -> bool:      # a is larger and the 95% intervals do not overlap
    return a.value > b.value and not a.overlaps(b)


print("checked on the recorded figures (a difference counts when the 95% intervals do not overlap):")
print("no guidance (s = 1) draws red less often than the training pictures are red:", above(trained, rows[1.0]))
print("guidance 3 draws red more often than the training pictures are red:", above(rows[3.0], trained))
print("guidance 7.5 draws red more often than guidance 3:", above(rows[7.5], rows[3.0]))
print("guidance 7.5: every picture red:", rows[7.5].value == 1.0)"""),
    md("""**Reading it.** Without guidance ($s = 1$) the model draws red a little *less* often than its
training pictures are red, with the intervals apart: a small model after a short training run learned the lean but
spreads some probability over the other colors. Guidance turns the lean into a monopoly. At $s = 3$, the scale this
book samples digits with, nearly every boss is red; at $s = 7.5$, Stable Diffusion's default, every one of them is.
Bias in, *more* bias out: the setting that makes pictures crisp and faithful to the prompt is the one that
amplifies a majority.

Why would guidance do this? Classifier-free guidance pushes each step along $\\epsilon_{\\text{cond}} -
\\epsilon_{\\text{uncond}}$ (lesson 05). Ho and Salimans read it through Bayes' rule: at scale $s$ the sampler
draws, roughly, from $p(x \\mid c)\\, p(c \\mid x)^{s-1}$, the model's pictures for the prompt $c$ re-weighted by how
well the prompt can be *guessed back* from the picture. A red shape is the picture from which "boss" is easiest to
guess (four in five role pictures are red, one in four of the others), so every step past $s = 1$ up-weights red,
and at large $s$ little else survives. Guidance sharpens a distribution towards what is typical of the prompt, and
a majority is what is typical.
"""),
    md("""## 3. What a user can do about it

Three fixes people reach for, each measured by the recipe on 200 pictures per setting:

1. **Say what you want.** Name the attribute in the prompt: "a blue boss shape on a white background". The model
   saw such captions (30% of the role captions name the color), so the color word carries its own evidence.
2. **A negative prompt.** Replace the empty prompt of guidance by "a red boss shape on a white background", so
   that guidance pushes *away* from the majority (lesson 05 did this with a negative digit).
3. **Rebalance the data.** Train again with the role pictures balanced over the four colors
   (`python -m diffusion_lessons.train shapes-boss --red-share 0.25`, half an hour on this CPU); that run's
   measurements are kept in `benchmarks/bias/rebalanced.json`."""),
    code("""def share_row(row: dict) -> str:
    return f"{row['share']:.3f} [{row['low']:.3f}, {row['high']:.3f}], n = {row['n']}"


named = record["named_prompt_colors"]["3.0"]
print(f"named: '{record['named_prompt']}', guidance 3")
print(f"  blue {share_row(named['blue'])}; red {share_row(named['red'])}")
print(f"negative prompt '{record['negative_prompt']}' against the role prompt:")
for scale, row in record["negative_prompt_colors"].items():
    print(f"  guidance {scale:<4}: red {share_row(row['red'])}   (without it: {share_row(record['role_prompt_red_share'][scale])})")
rebalanced = json.loads((ROOT.parents[1] / "benchmarks" / "bias" / "rebalanced.json").read_text())
print(f"rebalanced data ({rebalanced['command']}); red share of its color-less role pictures "
      f"{share_row(rebalanced['training_set']['red_share_of_uncolored_role_captions'])}:")
for scale, row in rebalanced["role_prompt_colors"].items():
    print(f"  guidance {scale:<4}: " + "; ".join(f"{c} {share_row(r)}" for c, r in row.items() if c != "none"))
at_75 = {c: r for c, r in rebalanced["role_prompt_colors"]["7.5"].items() if c != "none"}
top = max(at_75, key=lambda c: at_75[c]["share"])
print("rebalanced: red's interval holds 1 in 4 at every scale:",
      all(r["red"]["low"] <= 0.25 <= r["red"]["high"] for r in rebalanced["role_prompt_colors"].values()))
print(f"rebalanced, guidance 7.5: the commonest color ({top}) above 1 in 4, interval apart:", at_75[top]["low"] > 0.25)"""),
    code("""named_live = t2i.pipeline_images(pipe, [record["named_prompt"]], make_generator(1), 12, guidance_scale=3.0,
                                 num_inference_steps=25).cpu()
negative_live = t2i.pipeline_images(pipe, [bias.ROLE_PROMPT], make_generator(1), 12, guidance_scale=3.0,
                                    num_inference_steps=25, negative_prompt=[record["negative_prompt"]]).cpu()
show_images(torch.cat([live[3.0][:12], named_live, negative_live]), ncols=12, size=0.9,
            titles=[t if i == 0 else "" for t in ("role", "blue named", "negative") for i in range(12)],
            suptitle="guidance 3, the same 12 starting noises: the role prompt, the color named, a negative prompt")"""),
    code("""# NBVAL_CHECK_OUTPUT
negative = {float(s): Estimate(value=r["red"]["share"], low=r["red"]["low"], high=r["red"]["high"], n=r["red"]["n"])
            for s, r in record["negative_prompt_colors"].items()}
print("checked on the recorded figures:")
print("color named: every picture blue:", named["blue"]["share"] == 1.0)
print("negative prompt at guidance 3: red in fewer than half the pictures:", negative[3.0].high < 0.5)
print("negative prompt at guidance 7.5: red below a balanced world's 1 in 4:", negative[7.5].high < 0.25)"""),
    md("""Naming the attribute works completely here: asked for a blue boss, the model draws a blue one every time. It
had the evidence: some role captions name their color, and "blue" goes with blue pictures throughout the data.
The negative prompt works too, but it is a blunt tool. It does not ask for balance; it pushes away from red as hard
as the scale says. At guidance 3 red falls from nearly every picture to fewer than half; at 7.5 it overshoots, below
the one-in-four of a balanced world, so the bias is not removed but turned around. The right strength would depend
on the prompt and the model, which a user cannot see.

Rebalancing works at the source: trained on role pictures balanced over the four colors, the model draws red for
the role prompt about one time in four at every scale (each of red's intervals holds one in four). It does not make
guidance neutral. At 7.5 one color rises above one in four with its interval apart, though the data hold no
majority for it: guidance amplifies whatever preference the trained model happens to have, learned from a skew or
left by the accidents of a short training run. With a majority in the data, that preference is the majority. The
fixes therefore combine: data without the lean, the attribute named when it matters, and no more guidance than the
picture needs."""),
    md("""## 4. What transfers to large models

The mechanism transfers: a word that co-occurs with one attribute in the training captions carries that attribute
into the pictures, even when the prompt never names it, and classifier-free guidance, used by every large
generator, pushes towards the typical. The sizes do not transfer: a web-scale model's lean depends on its captions,
its filtering and its fine-tuning, and on choices we did not model here (prompt rewriting by a language model,
deliberate diversity in the training of commercial systems). The way to find out is the one used here: fix a
prompt, draw a few hundred pictures from a fixed seed, read one attribute off each, and report the share with its
interval against a reference share. Studies of the large models do exactly this (e.g. Bianchi et al. 2023, "Easily
Accessible Text-to-Image Generation Amplifies Demographic Stereotypes at Large Scale"; Luccioni et al. 2023,
"Stable Bias").
"""),
    md("""## 5. Memorization: copying instead of creating

The second thing a generator learns from its data is the data itself. A model that has seen few pictures, or the
same picture many times, can learn to reproduce them: it *copies* instead of creating. Carlini et al. (2023,
"Extracting Training Data from Diffusion Models") pulled near-exact copies of training images out of Stable
Diffusion, most of them pictures that appeared many times in its training set; Somepalli et al. (2023) found
copied layouts and objects in ordinary use.

To see when copying happens we train **the same model on different amounts of data**. The recipe
`python -m diffusion_lessons.train digits-memorize` trains the digits U-Net of lesson 08 (flow matching,
unconditional this time: every label is the null label) four times, with the same number of steps and the same
batch: on **10**, **100** and **1,000** digits of the training split, and once more on the 1,000 with **10 of them
repeated** many times, the duplicated pictures of a web scrape in miniature.

**The copy test.** How close is "a copy"? Pixel distances depend on the world, so we use a scale-free test (Yoon
et al. 2023): a sample *copies* a training image when its distance to the nearest training image is at most a
third of its distance to the second nearest. A new picture, such as a real digit the model never saw, usually has
several training images at similar distances and fails the test. That gives the baseline: the held-out digits of
the test split, measured in exactly the same way against each training set, should almost never count as copies.
The distances are root-mean-square pixel differences, found by brute force (`memorization.nearest_neighbours`)."""),
    code("""from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

from diffusion_lessons import memorization
from diffusion_lessons.data import load_digits

mem_folder = ROOT / "digits-memorize"
mem = json.loads((mem_folder / "measurements.json").read_text())
mem_recipe = json.loads((mem_folder / "recipe.json").read_text())
print("the shipped measurements were made on these weights:", record_matches_model(mem, mem_folder))
print(f"trained by: {mem_recipe['command']} ({mem_recipe['total_time_s'] / 60:.0f} min in all on "
      f"{mem_recipe['hardware']})")
RUNS = list(mem["runs"])
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(mem_folder / "scheduler")
unets = {run: UNet2DModel.from_pretrained(mem_folder / run / "unet", use_safetensors=True).eval() for run in RUNS}
digits_train, _ = load_digits("train")
held_out, _ = load_digits("test")
train_sets = {run: digits_train[torch.tensor(mem["runs"][run]["training_rows"])] for run in RUNS}
for run in RUNS:
    info = mem_recipe["data"]["runs"][run]
    print(f"{run:>10}: {info['distinct']:>5} distinct digits, {info['images']:>5} training rows "
          + (f"({info['duplicated']} of them repeated, {info['copies_each']} times each)" if info["duplicated"] else ""))"""),
    code("""N_MEM = by_profile(quick=100, full=500)      # live samples per model; the record holds 500 each
mem_live = {run: memorization.draw_samples(unets[run], scheduler, N_MEM, seed=1) for run in RUNS}
rows, titles = [], []
for run in RUNS[:3]:
    d, idx = memorization.nearest_neighbours(mem_live[run][:10], train_sets[run])
    rows += [mem_live[run][:10], train_sets[run][idx[:, 0]]]
    titles += [f"{run}" if i == 0 else "" for i in range(10)] + [f"{v:.2f}" for v in d[:, 0].tolist()]
show_images(torch.cat(rows), ncols=10, size=0.8, titles=titles,
            suptitle="each model's first 10 samples, and under each its nearest training digit (RMS distance)")"""),
    md("""Read the pairs of rows. The model trained on 10 digits draws its training digits back, nearly pixel for
pixel. The one trained on 1,000 draws digits whose nearest training image is visibly a *different* picture of
the same digit. Now the measurement, on the 500 samples per model of the record, each share with its 95% interval,
and the median distance to the nearest training image next to the same distance for held-out real digits:"""),
    code("""# NBVAL_CHECK_OUTPUT
def fmt(row: dict) -> str:
    return f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


print(f"{'run':>10} {'copies among samples':>24} {'copies among held-out':>24} {'median NN dist, samples':>26} "
      f"{'held-out':>22}")
for run in RUNS:
    r = mem["runs"][run]
    print(f"{run:>10} {fmt(r['sample_copy_share']):>24} {fmt(r['held_out_copy_share']):>24} "
          f"{fmt(r['sample_nn_distance']):>26} {fmt(r['held_out_nn_distance']):>22}")
print(f"n = {mem['runs']['n10']['sample_copy_share']['n']} samples per model, "
      f"{mem['runs']['n10']['held_out_copy_share']['n']} held-out digits; 95% intervals")"""),
    code("""fig = new_figure(10, 3.3)
axes = fig.subplots(1, 4, gridspec_kw=dict(width_ratios=[1, 1, 1, 1.2]))
bins = torch.linspace(0, 0.8, 41)
for ax, run in zip(axes, RUNS[:3]):
    d_s, _ = memorization.nearest_neighbours(mem_live[run], train_sets[run])
    d_h, _ = memorization.nearest_neighbours(held_out, train_sets[run])
    ax.hist(d_h[:, 0], bins=bins, alpha=0.5, density=True, color="grey", label="held-out real")
    ax.hist(d_s[:, 0], bins=bins, alpha=0.6, density=True, color="C0", label="samples")
    ax.set(title=f"trained on {run[1:]}", xlabel="nearest-training distance", yticks=[])
axes[0].set_ylabel("share of images (density)")
axes[0].legend(fontsize=7)
sizes = [int(run[1:]) for run in RUNS[:3]]
for key, color, label in (("sample_copy_share", "C0", "samples"), ("held_out_copy_share", "grey", "held-out real")):
    vals = [mem["runs"][run][key] for run in RUNS[:3]]
    axes[3].errorbar(sizes, [v["value"] for v in vals], yerr=[[v["value"] - v["low"] for v in vals],
                                                             [v["high"] - v["value"] for v in vals]],
                     fmt="o-", capsize=4, color=color, label=label)
axes[3].set(xscale="log", xlabel="training digits", ylabel="share that copies a training digit", ylim=(-0.02, 1.02),
            title="copy share (95% intervals)")
axes[3].legend(fontsize=7)

fig"""),
    code("""# NBVAL_CHECK_OUTPUT
def est(row: dict) -> Estimate:
    return Estimate(row["value"], row["low"], row["high"], row["n"])


r = {run: {k: est(v) for k, v in mem["runs"][run].items() if isinstance(v, dict)} for run in RUNS}
print("checked on the recorded figures (a difference counts when the 95% intervals do not overlap):")
print("n10: every sample passes the copy test:", r["n10"]["sample_copy_share"].value == 1.0)
print("n100: fewer copies than n10 and more than n1000:",
      above(r["n10"]["sample_copy_share"], r["n100"]["sample_copy_share"])
      and above(r["n100"]["sample_copy_share"], r["n1000"]["sample_copy_share"]))
print("n100: copies among a minority of samples (upper bound below one half):", r["n100"]["sample_copy_share"].high < 0.5)
print("n1000: copy share no different from held-out real digits':",
      r["n1000"]["sample_copy_share"].overlaps(r["n1000"]["held_out_copy_share"]))
for run in RUNS[:3]:
    print(f"{run}: samples closer to the training digits than held-out real digits are:",
          above(r[run]["held_out_nn_distance"], r[run]["sample_nn_distance"]))
print("n1000: samples further from the training digits than held-out real digits are:",
      above(r["n1000"]["sample_nn_distance"], r["n1000"]["held_out_nn_distance"]))"""),
    md(PROSE["copying"]),
    md("""## 6. Duplicates: what a web scrape does

Large training sets are not clean: the same picture (a famous painting, a product photo, a meme) appears
hundreds of times. The `n1000-dup` run is the `n1000` run with 10 of its 1,000 digits repeated, so that each of
those 10 is drawn as often as dozens of ordinary ones. The model has enough distinct digits to generalise; does it
still copy the repeated ones?"""),
    code("""# NBVAL_CHECK_OUTPUT
print(f"{'':>10} {'nearest training digit is one of the ten':>42} {'copies of one of the ten':>26} "
      f"{'copies of another':>18} {'the ten, share of training rows':>33}")
for run in ("n1000", "n1000-dup"):
    m = mem["runs"][run]
    n = m["nearest_is_repeated"]["n"]
    copies = f"{m['copies_of_repeated']} of {n}", f"{m['copies_of_others']} of {n}"
    print(f"{run:>10} {fmt(m['nearest_is_repeated']):>42} {copies[0]:>26} {copies[1]:>18} "
          f"{m['repeated_share_of_training_rows']:>33.3f}")
each = mem_recipe["data"]["runs"]["n1000-dup"]["copies_each"]
print(f"the ten: the digits repeated in n1000-dup ({each} times each in all); n1000 has them once, like every digit")
n1000 = r["n1000"]["nearest_is_repeated"]
print("n1000: the ten are the nearest digit of as many samples as their share of the digits predicts:",
      n1000.low <= mem["runs"]["n1000"]["repeated_share_of_training_rows"] <= n1000.high)
print("the repeated digits draw more samples to them than without repetition:",
      above(r["n1000-dup"]["nearest_is_repeated"], r["n1000"]["nearest_is_repeated"]))
print("... but fewer than their share of the training rows:",
      r["n1000-dup"]["nearest_is_repeated"].high < mem["runs"]["n1000-dup"]["repeated_share_of_training_rows"])
print("n1000-dup: copy share no different from n1000's:",
      r["n1000-dup"]["sample_copy_share"].overlaps(r["n1000"]["sample_copy_share"]))"""),
    code("""repeated = torch.tensor(mem["runs"]["n1000-dup"]["duplicated_rows"])
dup_train = digits_train[repeated]
flags = memorization.copy_flags(mem_live["n1000-dup"], train_sets["n1000-dup"])
d, idx = memorization.nearest_neighbours(mem_live["n1000-dup"], train_sets["n1000-dup"])
rows_near = torch.nonzero(torch.isin(torch.tensor(mem["runs"]["n1000-dup"]["training_rows"])[idx[:, 0]],
                                     repeated)).flatten()[:10].tolist()
show_images(torch.cat([dup_train, mem_live["n1000-dup"][rows_near],
                       train_sets["n1000-dup"][idx[rows_near, 0]]]), ncols=10, size=0.8,
            titles=["repeated" if i == 0 else "" for i in range(10)]
                   + [f"{d[i, 0]:.2f}" + (" copy" if flags[i] else "") for i in rows_near]
                   + ["its nearest" if i == 0 else "" for i in range(len(rows_near))],
            suptitle=f"top: the 10 repeated digits; middle: n1000-dup samples nearest to one of them; bottom: which one")"""),
    md(PROSE["duplicates"]),
    md("""## Exercises

1. **The threshold of amplification.** Sample the role prompt at guidance 1.5, 2 and 5 with
   `bias.role_color_shares(pipe, [1.5, 2.0, 5.0], n=100)` and add the points to the figure of section 2. Where does
   the red share first rise above the band of the training pictures?
2. **A weaker lean.** Train with `--red-share 0.5 --out runs/boss50` (half an hour) and measure the role prompt at
   guidance 1 and 7.5 (its `measurements.json`). Is the amplification a fixed number of points, or a fixed factor
   of the lean?
3. **Blame the sampler?** The record uses 25 DDIM steps. Measure guidance 7.5 with 10 and 50 steps: does the
   number of steps change the red share, within the intervals?
4. **How strict is "a copy"?** Run the copy test on the live samples of section 5 with a looser and a stricter
   ratio (`memorization.copy_flags(samples, train, ratio=0.5)` and `ratio=0.2`), for the three training-set sizes and
   for the held-out digits. Does the order of the three runs depend on the threshold?

**5. Wilson's interval.** Every share in this lesson carries Wilson's 95% interval. Complete `wilson_by_hand(k, n)`
(the formula is in the task). `ex.check` runs your function and the book's on five random inputs and says
"correct", or shows the first difference. Stuck? `ex.show_hint()`; the book's answer: `ex.show_solution()`."""),
    code("""from diffusion_lessons.exercise_bank.lesson16 import EXERCISES

ex = next(e for e in EXERCISES if e.name == "Wilson interval")
ex.describe()


def wilson_by_hand(k, n):
    ...  # your code here


ex.check(wilson_by_hand);"""),
    md("""**6. What guidance would do, ideally.** Section 2 read classifier-free guidance as sampling from
$p(x \\mid c)\\, p(c \\mid x)^{s-1}$ for the prompt $c$. For a model that has learned the colors exactly, that
turns the share of each color $k$ into $p(k \\mid c)\\,\\big(p(k \\mid c) / p(k)\\big)^{s-1}$, normalised over the
colors. Here $p(k \\mid c)$ is the share of color $k$ among the pictures of the prompt (`p_cond`), and $p(k)$ its share
among *all* training pictures (`p_uncond`): what the unconditional prediction, learned from the captions dropped in
training, stands for. Complete `guided_shares(p_cond, p_uncond, scale)`, then try it with the world's numbers (red 0.8
of the role pictures; red's share of all the pictures, counted in section 1): how close does the ideal come to the
red share the record measured at $s = 3$ (section 2)?"""),
    code("""ex = next(e for e in EXERCISES if e.name == "guided shares")
ex.describe()


def guided_shares(p_cond, p_uncond, scale):
    ...  # your code here


ex.check(guided_shares);"""),
    md("""**7. The copy test.** Complete `copy_flags_by_hand(queries, references)` (flattened images, one per row): the
ratio test of section 5, with the root-mean-square distance."""),
    code("""ex = next(e for e in EXERCISES if e.name == "copy test")
ex.describe()


def copy_flags_by_hand(queries, references):
    ...  # your code here


ex.check(copy_flags_by_hand);"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                        "language": "python", "name": "diffusion-lessons"}})
path = Path(__file__).resolve().parents[2] / "notebooks" / "16_bias.ipynb"
nbformat.write(nb, path)
print("wrote", path)
