"""Write notebooks/15_composition.ipynb (unexecuted); then:
python tools/execute_lesson.py notebooks/15_composition.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_15.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 15: Why it mixes up your description

Ask for "a red circle and a blue square" and an image generator may give you a blue circle and a red square, two
red things, or one shape. People say these models "have a hard time understanding simple instructions". This lesson
measures how hard, on a world where the answer can be read off the picture: a text-to-image model trained by the
book on scenes of one to three shapes, asked to bind colors to shapes, to place one shape left of another, and to
count. Then the same model with a different kind of text encoder, the words' attention inside the U-Net, and what
a user can do about it.

**What you will learn**
- how to read a composed picture automatically, and why the VAE is checked first;
- how often a small model binds, relates and counts right, with intervals, and which mistake it makes most
  (not the famous swapped colors);
- what a causal (CLIP-style) and a bidirectional (T5-style) text encoder of the same size change, and what the U-Net
  loses when it sees one pooled vector instead of the token sequence;
- what word order, guidance and cross-attention tell you about where a word acts;
- what users can do: reword, guide, prompt each object in its own region, and what a 4x wider text encoder buys.
"""),
    code("""import json
import warnings

import matplotlib.pyplot as plt
import torch

from diffusion_lessons import attention, book, inpainting, latents, scenes, stats, text
from diffusion_lessons.device import pick_device
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.plotting import show_images
from diffusion_lessons.pretrained import ROOT
from diffusion_lessons.t2i import load_pipeline, pipeline_images

book.show_time("15_composition")
device = pick_device()
MODELS = {"bidirectional": "scenes-t2i", "causal": "scenes-t2i-causal"}
pipes = {k: load_pipeline(ROOT / f, device) for k, f in MODELS.items()}
records = {k: json.loads((ROOT / f / "measurements.json").read_text()) for k, f in MODELS.items()}
recipes = {k: json.loads((ROOT / f / "recipe.json").read_text()) for k, f in MODELS.items()}
for k, f in MODELS.items():
    r = recipes[k]
    print(f"{f} ({k} encoder, {type(pipes[k].text_encoder).__name__}): {r['command']}\\n    "
          f"{r['wall_time_s'] / 60:.1f} min on {r['hardware']}, final training loss {r['final_loss']:.3f}; the "
          f"measurements match the shipped weights: "
          f"{record_matches_model(records[k], ROOT / f)}")
settings = records["bidirectional"]["settings"]
steps, scale = settings["num_inference_steps"], settings["guidance_scale"]
g = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731
fmt = lambda e: f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"  # noqa: E731"""),
    md("""## 1. The scenes world, and a reader that checks a description

The world is fixed: 64 x 64 pictures, a white or black background, one to three shapes (circle, square, triangle in
red, green, blue or yellow) of radius 0.09 to 0.14 of the side, apart from each other and from the border. The
captions come in four kinds:
- **single**: "a red circle on a white background";
- **binding**: "a red circle and a blue square on a white background" (two shapes, different in shape *and* color,
  so the only way to be right is to give each shape its own color);
- **relation**: "a red circle left of a blue square on a black background" (left of, right of, above, below,
  judged by the shapes' centres);
- **counting**: "two red circles on a white background", "three ...".

The reader finds the shapes as connected regions of pixels that differ from the background. Each region's color is
the palette color nearest its mean; its shape is the best of the three shapes drawn with the region's area and
centre (the lesson-07 reader's template fit, per region); its position is the fitted centre. A picture is **right**
when the background is right, exactly the asked shapes in the asked colors are there and nothing else, and the
relation holds. For the two-shape captions the reader also flags **swapped**: both shapes there, each in the other's
color, the classic binding failure."""),
    code("""check = scenes.make_scenes(400, generator=g(5))
verdicts = scenes.score(check.images, check.scenes)
print("the reader on 400 clean renders, share right per kind:",
      {k: v["right"].value for k, v in verdicts.items()})
examples = [scenes.random_scene(kind, g(i)) for i, kind in enumerate(scenes.KINDS * 2)]
swapped = scenes.Scene("binding", "white", [scenes.Thing("circle", "red"), scenes.Thing("square", "blue")])
b = examples[1]
wrong = scenes.Scene("binding", b.background, [scenes.Thing(t.shape, u.color, t.cx, t.cy, t.r)
                                               for t, u in zip(b.things, b.things[::-1])])
print("the same caption read against its colors swapped between the shapes:",
      scenes.check(scenes.read_scenes(scenes.render(wrong))[0], b))
show_images(scenes.render(examples + [wrong]), ncols=3, size=2.6,
            titles=[s.caption.replace(" on a", "\\non a") for s in examples] + ["asked: " + b.caption.replace(
                " on a", "\\non a") + "\\n(drawn swapped)"])"""),
    md("""## 2. The image side first: can the decoder draw a scene?

Both models draw through one VAE: lesson 06's autoencoder, which is fully convolutional, fine-tuned on scenes by
`python -m diffusion_lessons.train scenes-vae` (its 4 x 16 x 16 latents hold a 64 x 64 picture). If its round trip
already loses a color or a shape, no text encoder can be blamed for it."""),
    code("""vae_record = json.loads((ROOT / "scenes-t2i" / "recipe-vae.json").read_text())
q = vae_record["quality"]
print(f"scenes-vae: {vae_record['command']} ({vae_record['wall_time_s'] / 60:.1f} min), started from "
      f"{vae_record['vae']['started_from']}")
for kind, v in q["reader_on_reconstructions"].items():
    print(f"  reader on its round trips, {kind:<9} right {fmt(v['right'])}  (n = {v['right']['n']})")
sample = check.images[:6]
with torch.no_grad():
    back = latents.reconstruct(pipes["bidirectional"].vae, sample.to(device)).clamp(-1, 1).cpu()
show_images(torch.stack([x for pair in zip(sample, back) for x in pair]), ncols=6, size=1.8,
            titles=["scene", "VAE round trip"] * 6)"""),
    md(PROSE["vae"]),
    md("""## 3. The pictures

The shipped model (`scenes-t2i`, the bidirectional encoder) and its causal twin, asked the same twelve captions with
the same seed (25 steps, guidance 7.5). Each title is the model and the reader's verdict; the captions are the
numbered list, in reading order, once per model. Both models were trained with the same seed and data and sample
from the same starting noise, so their layouts often match; the differences are the encoder's. A wrong two-shape
picture is titled by what went wrong with its objects (`scenes.object_mistake`, section 6).

Both U-Nets predict v rather than the noise (`--prediction-type v_prediction`, the recipe's default), for the reason
lesson 11 gave its inpainting model: where the noise is high, v is almost the clean latents, so the loss insists on
*where* the shapes go, the decision made in the first steps; a noise target barely feels a misplaced shape there
(lesson 14 measured what it does to spelling). Exercise 6 trains the noise-predicting twin."""),
    code("""asked = [s for kind in ("binding", "relation", "counting") for s in
         [scenes.random_scene(kind, g(50 + i)) for i in range(4)]]
def verdict(reading, scene):
    c = scenes.check(reading, scene)
    if c["right"] or scene.kind not in ("binding", "relation"):
        return "right" if c["right"] else "wrong"
    mistake = scenes.object_mistake(reading, scene)            # what went wrong with the two objects
    return mistake if mistake != "none" else ("background wrong" if not c["background"] else "relation wrong")
rows, titles = [], []
for k in MODELS:
    images = pipeline_images(pipes[k], [s.caption for s in asked], g(1), num_inference_steps=steps,
                             guidance_scale=scale).cpu()
    rows.append(images)
    titles += [f"{k}: {verdict(r, s)}" for r, s in zip(scenes.read_scenes(images), asked)]
print("\\n".join(f"{i + 1:>2}. {s.caption}" for i, s in enumerate(asked)))
show_images(torch.cat(rows), titles=titles, ncols=6, size=1.9,
            suptitle="captions 1-12 in order: bidirectional model (rows 1-2), causal model (rows 3-4)")"""),
    md("""## 4. How often it is right, measured

Each recipe measured its model on 64 captions of each kind drawn by a fixed seed (32 single-shape captions), one
picture each, 25 steps, guidance 7.5; Wilson 95% intervals. Dotted: the targets the book set for its model when
the lesson was planned (binding 0.8, relations and counting 0.7; none for single shapes)."""),
    code("""TARGETS = {"binding": 0.8, "relation": 0.7, "counting": 0.7}
print(f"{'':<18}" + "".join(f"{k + ' encoder':>28}" for k in MODELS))
for kind in scenes.KINDS:
    print(f"{kind:<18}" + "".join(f"{fmt(records[k]['main'][kind]['right']):>28}" for k in MODELS)
          + f"   n = {records['bidirectional']['main'][kind]['right']['n']}")
for kind in ("binding", "relation"):
    print(f"{kind + ', swapped':<18}" + "".join(f"{fmt(records[k]['main'][kind]['swapped']):>28}"
                                              for k in MODELS))
fig, ax = plt.subplots(figsize=(7.5, 3.2))
for j, k in enumerate(MODELS):
    for i, kind in enumerate(scenes.KINDS):
        e = records[k]["main"][kind]["right"]
        x = i + (j - 0.5) * 0.36
        ax.bar(x, e["value"], 0.34, color=("tab:blue", "tab:orange")[j], label=k if i == 0 else None)
        ax.errorbar(x, e["value"], [[e["value"] - e["low"]], [e["high"] - e["value"]]], color="k", capsize=3)
for i, kind in enumerate(scenes.KINDS):
    if kind in TARGETS:
        ax.hlines(TARGETS[kind], i - 0.4, i + 0.4, colors="grey", linestyles=":")
ax.set_xticks(range(4), scenes.KINDS)
ax.set_ylabel("share right")
ax.set_ylim(0, 1.05)
ax.legend(title="text encoder", fontsize=8, loc="upper right")
ax.set_title("whole description right, per caption kind (95% intervals; dotted: targets)")
plt.show()"""),
    md(PROSE["table"]),
    md("""## 5. Causal against bidirectional: what each word can see

A CLIP text encoder is causal: each token attends only to the tokens before it, so in "a red circle and a blue
square" the vector of "red" cannot know that a circle follows, and the U-Net must find the binding in the later
tokens. A T5 encoder is bidirectional (Imagen uses T5 alone; SD3 and FLUX add T5 next to CLIP): every token sees the whole caption.
The two shipped encoders have the same width (64), depth (2 layers), heads (4) and nearly the same parameter count;
they also differ in how they encode position (CLIP: a learned vector per position; T5: relative-position biases),
so the comparison is between the two families as they are built, not a mask switched on and off.

Change only one word near the end ('white' becomes 'black') and see which positions' outputs change:"""),
    code("""a_caption = "a red circle and a blue square on a white background"
b_caption = "a red circle and a blue square on a black background"
labels = attention.token_labels(pipes["causal"].tokenizer, a_caption)
n_tokens = labels.index("[EOS]") + 1
fig, ax = plt.subplots(figsize=(7.5, 2.6))
for j, k in enumerate(MODELS):
    with torch.no_grad():
        out = text.encode_prompts(pipes[k].tokenizer, pipes[k].text_encoder, [a_caption, b_caption]).cpu()
    change = (out[0] - out[1]).norm(dim=-1)[:n_tokens] / out[0].norm(dim=-1)[:n_tokens]
    ax.bar([i + (j - 0.5) * 0.4 for i in range(n_tokens)], change, 0.38, color=("tab:blue", "tab:orange")[j],
           label=k)
ax.set_xticks(range(n_tokens), labels[:n_tokens], rotation=45, fontsize=8)
ax.set_ylabel("relative change")
ax.set_title("each token's output when only 'white' becomes 'black'")
ax.legend(fontsize=8)
plt.show()"""),
    md(PROSE["encoders"]),
    md("""**One vector for the whole caption.** A CLIP text encoder also hands out a *pooled* vector, one summary of the
whole caption (Stable Diffusion 1 ignores it; SDXL and SD3 feed it to the denoiser next to the token sequence, never
instead of it). What if the U-Net saw only a summary? The same recipe, encoder, seed, data and steps as the shipped
model, but the U-Net cross-attends to one vector, the mean of the encoder's token states (`text.pool_embeddings`;
`python -m diffusion_lessons.train scenes-t2i --conditioning pooled`, shipped as `scenes-t2i-pooled`). It is drawn
with plain diffusers by handing the pipeline that vector as `prompt_embeds` (`pipeline_images(..., pooled=True)`).
The encoder can still mix every word into the one vector; what the U-Net loses is a separate vector per word for
each part of the picture to look up."""),
    code("""pooled_pipe = load_pipeline(ROOT / "scenes-t2i-pooled", device)
pooled_record = json.loads((ROOT / "scenes-t2i-pooled" / "measurements.json").read_text())
pooled_recipe = json.loads((ROOT / "scenes-t2i-pooled" / "recipe.json").read_text())
print(f"scenes-t2i-pooled: {pooled_recipe['command']}\\n    {pooled_recipe['wall_time_s'] / 60:.1f} min, final "
      f"training loss {pooled_recipe['final_loss']:.3f} (token sequence: {recipes['bidirectional']['final_loss']:.3f});"
      f" the measurements match the shipped weights: {record_matches_model(pooled_record, ROOT / 'scenes-t2i-pooled')}")
print(f"\\n{'':<18}{'token sequence':>28}{'pooled vector':>28}")
for kind in scenes.KINDS:
    print(f"{kind:<18}{fmt(records['bidirectional']['main'][kind]['right']):>28}"
          f"{fmt(pooled_record['main'][kind]['right']):>28}   n = {pooled_record['main'][kind]['right']['n']}")
for kind in ("binding", "relation"):
    print(f"{kind + ', swapped':<18}{fmt(records['bidirectional']['main'][kind]['swapped']):>28}"
          f"{fmt(pooled_record['main'][kind]['swapped']):>28}")
chosen = [scenes.random_scene(kind, g(60 + i)) for kind in ("single", "binding", "counting") for i in range(2)]
both = [pipeline_images(pipes["bidirectional"], [s.caption for s in chosen], g(6), num_inference_steps=steps,
                        guidance_scale=scale).cpu(),
        pipeline_images(pooled_pipe, [s.caption for s in chosen], g(6), num_inference_steps=steps,
                        guidance_scale=scale, pooled=True).cpu()]
print("\\n".join(f"{i + 1}. {s.caption}" for i, s in enumerate(chosen)))
show_images(torch.cat(both), ncols=6, size=1.9,
            titles=[f"{w}: {verdict(r, s)}" for w, images in zip(("sequence", "pooled"), both)
                    for r, s in zip(scenes.read_scenes(images), chosen)],
            suptitle="captions 1-6, the same seed: token sequence (top), pooled vector (bottom)")"""),
    md(PROSE["pooled"]),
    md("""## 6. Where it goes wrong

The records keep each picture's verdict, so the failures can be broken down. First, for the 128 two-shape
captions of each model (binding and relation together; the two encoders and section 5's pooled model), what happened to the two objects, one label per picture
(`scenes.object_mistake`): both right; **colors swapped**; **shape copied**, both shapes in their own asked colors
but drawn as the same shape, one object's shape leaking into the other (often called *attribute leakage*);
**color copied**, the mirror image; **shape missing**, one object left out (what Chefer et al. 2023 call
*catastrophic neglect*); an **extra shape**; or some **other** mixture."""),
    code("""columns = {"bidirectional encoder": records["bidirectional"], "causal encoder": records["causal"],
           "pooled vector": pooled_record}
two_shape = {k: r["main"]["binding"]["mistake"] + r["main"]["relation"]["mistake"] for k, r in columns.items()}
print(f"{'the two objects':<18}" + "".join(f"{k:>26}" for k in columns))
for m in scenes.MISTAKES:
    label = "both right" if m == "none" else m
    print(f"{label:<18}" + "".join(f"{fmt(stats.proportion([x == m for x in two_shape[k]]).as_dict()):>26}"
                                   for k in columns))
print(f"{'':<18}" + "".join(f"{'n = ' + str(len(two_shape[k])):>26}" for k in columns))"""),
    md("""Then relations by their word, counting by the number asked, and the share right against how long the caption
is (which here goes with its kind, so it is a description, not a controlled experiment)."""),
    code("""def share(flags):
    return stats.proportion(flags) if flags else "none asked"
for k in MODELS:
    main = records[k]["main"]
    rel = main["relation"]
    by_word = {w: share([f for f, c in zip(rel["right"]["each"], rel["captions"]) if f" {w} " in c])
               for w in scenes.RELATIONS}
    cnt = main["counting"]
    by_number = {n: share([f for f, c in zip(cnt["right"]["each"], cnt["captions"]) if c.startswith(n)])
                 for n in scenes.NUMBERS.values()}
    print(f"{k} encoder")
    print("  relations by word:  " + "   ".join(f"{w}: {e}" for w, e in by_word.items()))
    print("  counting by number: " + "   ".join(f"{n}: {e}" for n, e in by_number.items()))
    print("  objects right but the relation wrong: "
          f"{share([o and not r for o, r in zip(rel['objects']['each'], rel['relation']['each'])])}")
print()
print(f"{'kind':<10}{'words':>7}{'shapes':>8}" + "".join(f"{k:>28}" for k in MODELS))
for kind in scenes.KINDS:
    captions = records["bidirectional"]["main"][kind]["captions"]
    words = sorted({len(c.split()) for c in captions})
    shapes = {"single": "1", "binding": "2", "relation": "2", "counting": "2-3"}[kind]
    span = f"{words[0]}-{words[-1]}" if len(words) > 1 else str(words[0])
    print(f"{kind:<10}{span:>7}"
          f"{shapes:>8}" + "".join(f"{fmt(records[k]['main'][kind]['right']):>28}" for k in MODELS))"""),
    md(PROSE["failures"]),
    md("""## 7. Word order: the same picture, described the other way round

"A red circle left of a blue square" and "a blue square right of a red circle" ask for the same picture, as do
"a red circle and a blue square" and "a blue square and a red circle". The recipes asked each model for the same 64
scenes both ways (same seeds), so any difference is the wording's."""),
    code("""for k in MODELS:
    for kind in ("binding", "relation"):
        first, other = records[k]["main"][kind]["right"], records[k]["reworded"][kind]["right"]
        both = share([a and b for a, b in zip(first["each"], other["each"])])
        agree = share([a == b for a, b in zip(first["each"], other["each"])])
        print(f"{k:>13} {kind:<9} as written {fmt(first)}   reworded {fmt(other)}\\n{'':>24}right both ways "
              f"{both}   same verdict either way {agree}")
example = records["bidirectional"]["main"]["relation"]["captions"][0]
print("\\nfor example:", example, "->", records["bidirectional"]["reworded"]["relation"]["captions"][0])"""),
    md(PROSE["reworded"]),
    md("""## 8. Guidance scale

Classifier-free guidance (lesson 05) pushes the picture towards what the caption adds over the empty prompt. Does a
stronger push help composition? The same captions at four scales:"""),
    code("""fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for ax, k in zip(axes, MODELS):
    sweep = records[k]["guidance"]
    scales = sorted(sweep, key=float)
    for kind, color in zip(("binding", "relation", "counting"), ("tab:blue", "tab:green", "tab:red")):
        e = [sweep[s][kind] for s in scales]
        x = [float(s) for s in scales]
        ax.errorbar(x, [v["value"] for v in e], [[v["value"] - v["low"] for v in e], [v["high"] - v["value"]
                                                                                   for v in e]],
                    marker="o", capsize=3, color=color, label=kind)
    ax.set_xlabel("guidance scale")
    ax.set_title(f"{k} encoder")
axes[0].set_ylabel("share right")
axes[0].set_ylim(0, 1.05)
axes[0].legend(fontsize=8)
plt.show()
for k in MODELS:
    sweep = records[k]["guidance"]
    print(f"{k} encoder" + "".join(f"{'scale ' + sc:>20}" for sc in sorted(sweep, key=float)))
    for kind in ("binding", "relation", "counting"):
        print(f"  {kind:<11}" + "".join(f"{fmt(sweep[sc][kind]):>20}" for sc in sorted(sweep, key=float)))"""),
    md(PROSE["guidance"]),
    md("""## 9. Where each word acts: cross-attention maps, with a control

Inside the U-Net every latent pixel attends over the caption's tokens (the `attn2` layers at 8 x 8, 4 x 4 and in
the middle). Averaging those attention weights over heads, layers and the 25 steps gives one map per token: where in
the picture that word was looked at. `attention.trajectory` runs the pipeline once and keeps the latents of each
step; `attention.word_maps` replays the U-Net on those latents with any caption and records the maps.

The control: a map could follow a word, or just its *position* in the caption. Replaying the reworded caption ("a
blue square and a red circle") on the same trajectory keeps the picture fixed and moves each word to another
position. If "red" still lands on the red shape, the map follows the word. In the figure, lighter means more
attention; each map is scaled to its own maximum."""),
    code("""def inside(maps, labels, word, thing, size=64):
    \"\"\"Share of a word's attention that falls on a read shape's disc (radius from its area).\"\"\"
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = ((xx - thing["cx"]) ** 2 + (yy - thing["cy"]) ** 2) <= thing["area"] / 3.14159
    m = maps[labels.index(word)]
    return float(m[disc].sum() / m.sum())

pipe = pipes["bidirectional"]
rows, shown = [], []
for i in range(10):
    s = scenes.random_scene("binding", g(300 + i))
    run = attention.trajectory(pipe, s.caption, g(i), num_inference_steps=steps, guidance_scale=scale)
    things = scenes.read_scenes(run["image"][None])[0]["things"]
    by_color = {c.color: next((t for t in things if t["color"] == c.color), None) for c in s.things}
    if None in by_color.values():
        continue                                 # the picture lacks one of the two asked colors
    other = scenes.reworded(s).caption
    maps = {c: attention.word_maps(pipe, c, run, size=64) for c in (s.caption, other)}
    labels = {c: attention.token_labels(pipe.tokenizer, c) for c in (s.caption, other)}
    mine, rival = s.things[0].color, s.things[1].color
    for c in (s.caption, other):
        for word, theirs in ((mine, rival), (rival, mine)):
            rows.append(dict(caption="as written" if c == s.caption else "reworded", word=word,
                             position=labels[c].index(word),
                             on_own=inside(maps[c], labels[c], word, by_color[word]),
                             on_other=inside(maps[c], labels[c], word, by_color[theirs])))
    shown.append((s, other, run, maps, labels))
print(f"{len(shown)} of 10 pictures hold both asked colors; their color words, as written and reworded: "
      f"{len(rows)} maps")
for c in ("as written", "reworded"):
    flags = [r["on_own"] > r["on_other"] for r in rows if r["caption"] == c]
    print(f"  {c:<10}: a color word's map weighs more on the shape drawn in that color than on the other: "
          f"{share(flags)}")
s, other, run, maps, labels = shown[0]
words = [s.things[0].color, s.things[0].shape, s.things[1].color, s.things[1].shape]
panels = [run["image"]] + [maps[c][labels[c].index(w)][None].expand(3, -1, -1) * 2 / maps[c][labels[c].index(w)].max() - 1
                           for c in (s.caption, other) for w in words]
print("the picture's caption:", s.caption, "| reworded:", other)
show_images(torch.stack(panels), ncols=5, size=1.9,
            titles=["the picture"] + [f"'{w}' (token {labels[s.caption].index(w)})\\nas written" for w in words] +
                   [f"'{w}' (token {labels[other].index(w)})\\nreworded" for w in words])"""),
    md(PROSE["attention"]),
    md("""## 10. What users can do about it

**Reword and guide.** Sections 7 and 8 measured both: see there what they buy with this model.

**Prompt each object in its own region.** When one caption has to carry two bindings, give each object its own
caption and its own region. Start from an empty background, repaint the first object's box with "a red circle on a
white background", then the second object's box with its own single-shape caption (lesson 11's blending trick on
the same model, through diffusers' `StableDiffusionInpaintPipeline`). Lesson 12's ControlNet does the same job with a
silhouette instead of a box. Measured here on 24 binding captions, against asking for both at once:"""),
    code("""repaint = inpainting.inpaint_pipeline(pipe)
chosen = [scenes.random_scene("binding", g(700 + i)) for i in range(24)]
at_once = pipeline_images(pipe, [s.caption for s in chosen], g(7), num_inference_steps=steps,
                          guidance_scale=scale).cpu()
canvas = scenes.render([scenes.Scene("single", s.background, []) for s in chosen])
for j in range(2):
    geometry = torch.tensor([[s.things[j].cx, s.things[j].cy, s.things[j].r] for s in chosen])
    masks = inpainting.box_masks(geometry, image_size=scenes.SIZE, margin=3.0)
    prompts = [scenes.caption("single", [s.things[j]], s.background) for s in chosen]
    canvas = inpainting.inpaint(repaint, canvas.to(device), masks.to(device), prompts, steps, scale, g(8 + j)).cpu()
together = [scenes.check(r, s) for r, s in zip(scenes.read_scenes(at_once), chosen)]
print("the six pictures shown:\\n" + "\\n".join(f"{i + 1}. {s.caption}" for i, s in enumerate(chosen[:6])))
regions = [scenes.check(r, s) for r, s in zip(scenes.read_scenes(canvas), chosen)]
print(f"one caption for both shapes: right {share([c['right'] for c in together])}, "
      f"colors swapped {share([c['swapped'] for c in together])}")
print(f"one caption per region:      right {share([c['right'] for c in regions])}, "
      f"colors swapped {share([c['swapped'] for c in regions])}")
show_images(torch.cat([at_once[:6], canvas[:6]]), ncols=6, size=1.9,
            titles=[f"at once: {verdict(r, s)}" for r, s in zip(scenes.read_scenes(at_once[:6]), chosen)] +
                   [f"per region: {verdict(r, s)}" for r, s in zip(scenes.read_scenes(canvas[:6]), chosen)])"""),
    md(PROSE["per_object"]),
    md("""**A bigger text encoder.** The route large models took against composition failures is a bigger text
encoder (Imagen, Saharia et al. 2022, found scaling the frozen T5 mattered more than scaling the U-Net). The book
can train one more size within its budget: the same recipe with the bidirectional encoder four times as wide (256
instead of 64, feed-forward 1,024; the U-Net's cross-attention reads 256-wide vectors, nothing else changes), the
same seed, data and steps (`python -m diffusion_lessons.train scenes-t2i --encoder-width 256`), shipped as
`scenes-t2i-w256` and measured by the same code on the same captions:"""),
    code("""SIZES = {"width 64 (scenes-t2i)": "scenes-t2i", "width 256 (scenes-t2i-w256)": "scenes-t2i-w256"}
sized = {k: json.loads((ROOT / f / "measurements.json").read_text()) for k, f in SIZES.items()}
sized_recipes = {k: json.loads((ROOT / f / "recipe.json").read_text()) for k, f in SIZES.items()}
print(f"{'':<18}" + "".join(f"{k:>30}" for k in SIZES))
print(f"{'encoder params':<18}" + "".join(f"{r['models']['text_encoder']['parameters']:>30,}"
                                          for r in sized_recipes.values()))
for kind in scenes.KINDS:
    print(f"{kind:<18}" + "".join(f"{fmt(r['main'][kind]['right']):>30}" for r in sized.values())
          + f"   n = {sized['width 64 (scenes-t2i)']['main'][kind]['right']['n']}")
print(f"{'final loss':<18}" + "".join(f"{r['final_loss']:>30.3f}" for r in sized_recipes.values()))
print(f"{'training time':<18}" + "".join(f"{r['wall_time_s'] / 60:>26.1f} min" for r in sized_recipes.values()))
print(f"{'on':<18}" + "".join(f"{r['hardware'].split('(')[-1].rstrip(')'):>30}" for r in sized_recipes.values()))
print("matches the shipped weights:", record_matches_model(sized["width 256 (scenes-t2i-w256)"], ROOT / "scenes-t2i-w256"))
wide = load_pipeline(ROOT / "scenes-t2i-w256", device)
chosen = [scenes.random_scene("binding", g(900 + i)) for i in range(6)]
print("\\n".join(f"{i + 1}. {s.caption}" for i, s in enumerate(chosen)))
both = [pipeline_images(p, [s.caption for s in chosen], g(9), num_inference_steps=steps, guidance_scale=scale).cpu()
        for p in (pipe, wide)]
show_images(torch.cat(both), ncols=6, size=1.9,
            titles=[f"width {w}: {verdict(r, s)}" for w, images in zip((64, 256), both)
                    for r, s in zip(scenes.read_scenes(images), chosen)],
            suptitle="the same six binding captions and seed, encoder width 64 (top) and 256 (bottom)")"""),
    md(PROSE["bigger"]),
    md(PROSE["summary"]),
    md("""## Exercises
1. Write the caption "a green triangle above a red square on a black background" and its reworded twin. Which
   tokens can the causal encoder's vector for "green" depend on in each?
2. Counting is scored (section 1) as "exactly the asked number of the asked shape, nothing else". Write the
   looser score "at least the asked number" with `scenes.read_scenes` and compare on the pictures of section 3.
3. `scenes.object_mistake` files each wrong two-shape picture under one label. Draw the binding captions of
   section 4 again and look at the ones filed as "other": which mixtures of the named mistakes do they hold, and
   how would you count a picture that both copies a shape and drops the background?
4. Section 9's control replays a second caption on the first caption's trajectory. Why is that a fairer control than
   generating a new picture from the reworded caption?
5. Per-region prompting needs the regions. Where would they come from in a real application, and what does
   lesson 12's ControlNet add over boxes?
6. Train the noise-predicting twin of the shipped model (about 25 minutes on a laptop CPU):
   `python -m diffusion_lessons.train scenes-t2i --prediction-type epsilon --profile quick --seed 0 --vae
   diffusion_lessons/pretrained/scenes-t2i`; it measures itself at the end (`measurements.json` in its run
   folder). Compare its single-shape, counting and binding rows and its mistakes table with section 4's and
   section 6's. Which mistakes does predicting v remove, and which does it leave?
7. The wider encoder of section 10 learned language only from these captions. How could you give a text encoder
   a head start before it meets the pictures, using nothing but the captions of `scenes.make_scenes` (think of
   what T5 and CLIP were trained to do), and what would you measure to see whether it helped?
"""),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                         "language": "python", "name": "diffusion-lessons"},
                                          "language_info": {"name": "python"}})
nbformat.write(nb, HERE.parent.parent / "notebooks" / "15_composition.ipynb")
print("wrote notebooks/15_composition.ipynb")
