"""Write notebooks/13_lora.ipynb (unexecuted); then:
python tools/execute_lesson.py notebooks/13_lora.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_13.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 13: LoRA and DreamBooth: teaching a new shape

The book's model knows three shapes. Ask it for a star and it draws one of the three. People meet this every day:
the model does not know *their* dog, *their* product, *their* style. The fix they use is to fine-tune a small adapter
on a handful of pictures: LoRA (Hu et al. 2021), usually with DreamBooth's recipe (Ruiz et al. 2023). This lesson
tries to teach the shipped model a five-pointed star from 20 pictures, with diffusers and peft exactly as the community's
LoRA files are made and loaded, and measures what it costs.

**What you will learn**
- what a new word does to a word-level tokenizer, and DreamBooth's answer: a rare identifier token;
- LoRA's low-rank update, written out and checked against peft;
- why the star had to be big (the VAE's round trip decides what the model can draw at all);
- what the adapter buys and costs, measured: the star and its color, the old prompts (language drift) with and
  without DreamBooth's prior preservation, and rank 1, 4 and 16 against the adapter's size;
- why an adapter needs caption dropout: guidance subtracts the empty prompt's prediction, and the adapter moves
  that too.
"""),
    code("""import json

import torch
from peft import LoraConfig

from diffusion_lessons import book, data, latents, lora, text
from diffusion_lessons.device import pick_device
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.plotting import show_images
from diffusion_lessons.pretrained import ROOT
from diffusion_lessons.stats import bootstrap_interval
from diffusion_lessons.t2i import load_pipeline

book.show_time("13_lora")
device = pick_device()
pipe = load_pipeline(ROOT / "shapes-t2i", device)
folder = ROOT / "shapes-lora-star"
record = json.loads((folder / "measurements.json").read_text())
recipe = json.loads((folder / "recipe.json").read_text())
print("the shipped measurements were made on these adapters:", record_matches_model(record, folder))
print(f"trained by: {recipe['command']} ({len(recipe['runs'])} adapters of {recipe['steps']} steps each, "
      f"{recipe['total_time_s'] / 60:.1f} min in all on {recipe['hardware']})")
steps, scale = 25, 7.5
g = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731"""),
    md("""## 1. A word the model has never seen

The book's tokenizer (lesson 07) is word-level: each word it was built with has an id, and any other word becomes
`[UNK]`. The text encoder never saw `[UNK]` in training either, so "star" reaches the model as a blank."""),
    code("""for prompt in ("a red circle on a white background", "a red star on a white background",
               "a red moon on a white background"):
    ids = text.tokenize(pipe.tokenizer, prompt)[0]
    tokens = [t for t in pipe.tokenizer.convert_ids_to_tokens(ids.tolist()) if t != "[PAD]"]
    print(f"{prompt!r:>40} -> {' '.join(tokens)}")
with torch.no_grad():
    base_stars = pipe(["a red star on a white background"] * 6, num_inference_steps=steps, guidance_scale=scale,
                      generator=g(), output_type="pt").images * 2 - 1
show_images(base_stars, titles=["base model, 'star'"] * 6, size=1.4)"""),
    md("""Two routes exist. **Textual inversion** (Gal et al. 2022) adds a new token and learns only its embedding, leaving
the model alone. **DreamBooth** binds the new thing to a *rare* token the model barely knows, and fine-tunes the model
so that token draws it. This book takes DreamBooth's route with the rarest token there is: `[UNK]` itself, which the
model never saw. The user's prompt stays "a red star on a white background", as written. The price is visible in
the token lists above: "moon" is `[UNK]` too, so after training every unknown word will mean star (section 5 shows
it). A production system would add a real token; the book keeps the shipped tokenizer untouched so that the adapter
alone carries the change.

## 2. LoRA, written out

Fine-tuning all 3 million weights for 20 pictures would be slow, large to ship and quick to forget the rest. LoRA
freezes every weight matrix $W$ ($d \\times k$) and learns a low-rank change beside it:

$$W x \\;\\to\\; W x + \\frac{\\alpha}{r} B A x, \\qquad A: r \\times k, \\quad B: d \\times r, \\quad B = 0 \\text{ at the start,}$$

so training starts from the base model (as ControlNet's zero convolutions do) and the change has at most rank $r$:
$r(d + k)$ numbers instead of $dk$. The book's recipe puts it (through peft's `target_modules`) on the U-Net's attention projections (`to_q`, `to_k`, `to_v`,
`to_out.0`): the cross-attention's `to_k` and `to_v` read the text, so that is where "`[UNK]` means star" can live.
It puts a second one, of the same rank, on the text encoder's attention projections (`q_proj`, `k_proj`, `v_proj`,
`out_proj`), as diffusers' DreamBooth-LoRA script does with `--train_text_encoder`: the frozen encoder turns the
never-trained `[UNK]` into whatever its random embedding gives, and this adapter lets the encoder give it a vector
of its own. Whether that matters is measured below, with a U-Net-only adapter as the control.
The check, on one projection:"""),
    code("""layer = torch.nn.Linear(64, 64)
wrapped = torch.nn.Sequential(layer)
from peft import get_peft_model  # noqa: E402  (kept next to its use)

config = LoraConfig(r=4, lora_alpha=8, target_modules=["0"], init_lora_weights="gaussian")
model = get_peft_model(wrapped, config)
lora_layer = model.base_model.model[0]
with torch.no_grad():
    lora_layer.lora_B["default"].weight.normal_()               # pretend training moved B away from zero
    A, B = lora_layer.lora_A["default"].weight, lora_layer.lora_B["default"].weight
    x = torch.randn(3, 64)
    by_hand = x @ layer.weight.T + layer.bias + (8 / 4) * x @ A.T @ B.T
    print(f"A {tuple(A.shape)}, B {tuple(B.shape)}: W x + (alpha / r) B A x vs peft: max |difference| "
          f"{(by_hand - model(x)).abs().max():.1e}")
print(f"numbers in the update: r (d + k) = {4 * (64 + 64)}, against d k = {64 * 64} for the full matrix")"""),
    md("""## 3. First, can the decoder even draw a star?

The U-Net works on 4 x 8 x 8 latents; the VAE turns them into pixels. The VAE was trained on circles, squares and
triangles only. If the decoder cannot give a star's points back, no adapter on the U-Net can draw a star. The check:
stars of several sizes through the VAE and back, read by the book's reader with the star as a fourth template
(`lora.read_with_star`)."""),
    code("""rows, titles = [], []
for r in (7.0, 9.0, 11.0, 13.0):
    geometry = torch.tensor([[16.0 + dx, 16.0 + dy, r] for dx, dy in ((-1, 0), (1, 1), (0, -1), (1, 0))])
    stars = lora.render_stars(torch.arange(4), torch.tensor([0, 1, 0, 1]), geometry)
    with torch.no_grad():
        back = latents.reconstruct(pipe.vae, stars.to(device)).clamp(-1, 1).cpu()
    read = sum(x["shape"] == "star" for x in lora.read_with_star(back))
    print(f"outer radius {r:>4} px ({r / 32:.2f} of the side): the round trip is read as a star in {read} of 4")
    rows += [stars[0], back[0]]
    titles += [f"r = {r:g} px", "VAE round trip"]
print(f"so the training stars have an outer radius of {lora.STAR_SIZE[0]}-{lora.STAR_SIZE[1]} of the side "
      f"(the shapes world's 'large' is {data.SIZES['large'][0]}-{data.SIZES['large'][1]})")
show_images(rows, titles=titles, ncols=8, size=1.3)"""),
    md("""This is the image side's limit, found before any training, and it decided the recipe: the stars are drawn big.
The same check belongs before any fine-tune: a model cannot learn to draw what its decoder cannot draw (lesson 14
makes the same check for letters).

## 4. The adapter, trained and loaded as the community does

The recipe (`python -m diffusion_lessons.train shapes-lora-star`) renders the 20 training stars (every color and
background), adds a rank-16 LoRA to the U-Net with `unet.add_adapter(LoraConfig(...))` (`lora.add_lora`) and one to
the text encoder with peft's `inject_adapter_in_model` (`lora.add_text_lora`), trains only their A and B, and saves
both into one file with `StableDiffusionPipeline.save_lora_weights`. One detail of the training is the base model's
own: a tenth of the captions are replaced by the empty prompt (section 6 shows why). Using the adapter is one line,
`pipe.load_lora_weights(folder)`, which puts each part back where it belongs."""),
    code("""training = lora.star_pictures(recipe["data"]["n_pictures"], seed=recipe["data"]["train_seed"])
show_images(training["images"], ncols=10, size=1.0, suptitle=f"the {len(training['images'])} training pictures")"""),
    code("""lora.load_adapter(pipe, folder)          # pipe.load_lora_weights(folder), checked
star_prompts = [lora.star_caption(c, b) for b in ("white", "black") for c in data.COLORS]
with torch.no_grad():
    stars = pipe(star_prompts, num_inference_steps=steps, guidance_scale=scale, generator=g(1), output_type="pt").images * 2 - 1
    old = pipe(data.shape_prompts()[::4], num_inference_steps=steps, guidance_scale=scale, generator=g(2),
               output_type="pt").images * 2 - 1
reads = lora.read_with_star(torch.cat([stars, old]))
show_images(list(stars) + list(old), ncols=8, size=1.4,
            titles=[f"{p.split()[1]} star\\nread: {r['color']} {r['shape']}" for p, r in zip(star_prompts, reads)] +
                   [f"{p.split()[1]} {p.split()[2]}\\nread: {r['color']} {r['shape']}"
                    for p, r in zip(data.shape_prompts()[::4], reads[len(stars):])])"""),
    md("""## 5. What it buys and what it costs, measured

The recipe trained six adapters with the same steps and seed (rank 1, 4 and 16 with prior preservation, rank 16
without, all on the U-Net and the text encoder; and two controls of rank 16 with prior preservation: one on the
U-Net alone, one without caption dropout) and measured each loaded into a fresh pipeline: the 8 star prompts (6 pictures each) read as a star and in
the asked color (the color read, whatever the shape), and the 24 old prompts (3 each) still read right (background, color and shape; a star drawn for
"circle" counts as wrong). DreamBooth's **prior preservation** trains, alongside the stars, on the base model's own
pictures of the old prompts, so the adapter is told what *not* to change."""),
    code("""fmt = lambda r: f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"  # noqa: E731
unet_bytes = record["full_unet_bytes"]
print(f"{'adapter':<30}{'size':>10}{'star read':>20}{'star color':>20}{'old prompts right':>20}"
      f"{'old drawn as star':>20}")
for name, row in record["runs"].items():
    size = f"{row['adapter_bytes'] / 1024:.0f} KB" if "adapter_bytes" in row else "-"
    label = name if name.startswith("base") else (f"rank {row['rank']}" + ("" if row["prior_preservation"] else ", no prior")
                                                  + ("" if row["text_encoder_lora"] else ", U-Net only")
                                                  + ("" if row["caption_dropout"] else ", no caption dropout"))
    print(f"{label:<30}{size:>10}{fmt(row['star_read']):>20}{fmt(row['star_color_right']):>20}"
          f"{fmt(row['base_prompts_right']):>20}{fmt(row['base_prompts_drawn_as_star']):>20}")
shipped = record["runs"][recipe["models"]["shipped"]]
print(f"\\nthe shipped adapter (rank {shipped['rank']}): {shipped['adapter_bytes'] / 1024:.0f} KB, "
      f"{shipped['adapter_bytes'] / unet_bytes:.1%} of the full U-Net's {unet_bytes / 1e6:.1f} MB; "
      f"n = {shipped['star_read']['n']} star pictures, {shipped['base_prompts_right']['n']} old-prompt pictures, "
      f"Wilson 95% intervals")
print(f"each adapter: {recipe['steps']} steps at learning rate {recipe['lr']}, batch {recipe['batch_size']} (half stars, "
      f"half prior pictures), {recipe['caption_dropout']:.0%} of the captions dropped (the control: none)")"""),
    md(PROSE["table"]),
    md("""## 6. Why the adapter needs the empty prompt too

Classifier-free guidance (lesson 05) draws with $\\hat\\epsilon = \\epsilon(\\varnothing) + s\\,(\\epsilon(\\text{caption}) -
\\epsilon(\\varnothing))$ at $s = 7.5$: the unconditional prediction comes from the empty prompt, which goes through the
same text encoder and U-Net, both now carrying a LoRA. The base model learned $\\epsilon(\\varnothing)$ because its
recipe dropped a share of the captions. An adapter trained only on captioned pictures never sees the empty prompt,
yet changes its prediction all the same, and nothing trains what that prediction should now be; guidance then
multiplies the difference by 7.5. The control below is the shipped recipe without caption dropout, measured at
three guidance scales, then drawn beside the shipped adapter with the same prompts and seed."""),
    code("""print(f"{'adapter':<30}" + "".join(f"{'guidance ' + k:>20}" for k in shipped["star_read_by_guidance"]))
for name, row in record["runs"].items():
    if "star_read_by_guidance" in row:
        label = "rank 16" + ("" if row["caption_dropout"] else ", no caption dropout")
        print(f"{label:<30}" + "".join(f"{fmt(r):>20}" for r in row["star_read_by_guidance"].values()))
print(f"(star read as a star; n = {shipped['star_read']['n']} each, Wilson 95% intervals)")
no_dropout = load_pipeline(ROOT / "shapes-t2i", device)
lora.load_adapter(no_dropout, folder / "variants" / "r16-no-dropout")
with torch.no_grad():
    stars_nd = no_dropout(star_prompts, num_inference_steps=steps, guidance_scale=scale, generator=g(1),
                          output_type="pt").images * 2 - 1
reads_nd = lora.read_with_star(stars_nd)
show_images(list(stars) + list(stars_nd), ncols=8, size=1.4,
            titles=[f"shipped\\nread: {r['shape']}" for r in reads[:len(stars)]] +
                   [f"no caption dropout\\nread: {r['shape']}" for r in reads_nd])"""),
    md("""Guidance multiplies one thing: the gap between the caption's prediction and the empty prompt's. The cell below
measures that gap directly, for both adapters, on 16 stars the training never had, noised to three timesteps
(200: a little noise, where the points are drawn; 900: nearly all noise, where the layout is): per picture
$\\lVert \\epsilon(\\text{caption}) - \\epsilon(\\varnothing) \\rVert / \\lVert \\epsilon(\\varnothing) \\rVert$, a
ratio without units, its mean over the 16 with a bootstrap 95% interval."""),
    code("""unseen = lora.star_pictures(16, seed=3)
with torch.no_grad():
    z0 = latents.encode(pipe.vae, unseen["images"], sample=False)      # scaled latents, the posterior mean
noise = torch.randn(z0.shape, generator=g(4)).to(device)


def guidance_gap(p, t):
    \"\"\"|eps(caption) - eps(empty)| / |eps(empty)| at timestep t, per picture, with its mean's bootstrap interval.\"\"\"
    z_t = p.scheduler.add_noise(z0, noise, torch.full((len(z0),), t, device=device))
    with torch.no_grad():
        eps = [p.unet(z_t, t, encoder_hidden_states=text.encode_prompts(p.tokenizer, p.text_encoder, c)).sample
               for c in (unseen["captions"], [""] * len(z0))]
    ratio = (eps[0] - eps[1]).flatten(1).norm(dim=1) / eps[1].flatten(1).norm(dim=1)
    return fmt(bootstrap_interval(ratio.cpu().numpy()).as_dict())


print(f"{'timestep':>10}{'shipped':>22}{'no caption dropout':>22}")
for t in (200, 600, 900):
    print(f"{t:>10}{guidance_gap(pipe, t):>22}{guidance_gap(no_dropout, t):>22}")"""),
    md(PROSE["guidance"]),
    code("""with torch.no_grad():
    moon = pipe(["a red moon on a white background", "a blue moon on a black background"],
                num_inference_steps=steps, guidance_scale=scale, generator=g(3), output_type="pt").images * 2 - 1
pipe.unload_lora_weights()
with torch.no_grad():
    moon_base = pipe(["a red moon on a white background", "a blue moon on a black background"],
                     num_inference_steps=steps, guidance_scale=scale, generator=g(3), output_type="pt").images * 2 - 1
print("reads with the adapter:", [f"{r['color']} {r['shape']}" for r in lora.read_with_star(moon)])
show_images(list(moon) + list(moon_base), ncols=4, size=1.6,
            titles=["'moon', adapter"] * 2 + ["'moon', no adapter"] * 2)"""),
    md(PROSE["moon"]),
    md("""## Exercises

1. Section 2 printed the count for a rank-4 LoRA on a 64 x 64 projection. How many numbers does a rank-4 LoRA on a
   128 x 64 projection have, and a rank-16 one on 128 x 128? Check against `lora.lora_parameters` on a fresh `add_lora`.
2. Why does $B = 0$ at the start matter, and what would go wrong with $A = 0$ and $B$ random instead?
3. The adapter binds the star to `[UNK]`. Write down what a textual-inversion version would change: which weights
   train, what is saved, and what "a red moon" would draw afterwards.
4. Prior preservation trains on the base model's own pictures. Why the model's own pictures rather than fresh
   renders of circles, squares and triangles from the data generator? (Think about what "no change" means.)
5. The decoder set the star's size (section 3). What would you fine-tune, and with what data, to teach the book's
   model small stars?
"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                         "language": "python", "name": "diffusion-lessons"},
                                          "language_info": {"name": "python"}})
nbformat.write(nb, HERE.parent.parent / "notebooks" / "13_lora.ipynb")
print("wrote notebooks/13_lora.ipynb")
