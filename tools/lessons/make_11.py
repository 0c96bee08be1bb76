"""Write notebooks/11_editing.ipynb (unexecuted); then:
python tools/execute_lesson.py notebooks/11_editing.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_11.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 11: Editing by partial noising: img2img, inversion and inpainting

Part III starts from the reader's frustration: the generator will not draw what you mean. What people actually do
about it is *edit*: start from their own picture instead of noise (img2img), or repaint only a region and keep the
rest ("Generative Fill" in Photoshop is diffusion inpainting). Neither needs a new idea beyond lessons 02-07: both are
the same denoising loop, started somewhere else or with a mask in it. This lesson writes each out, checks it against
diffusers' real pipelines, and measures what it trades, on the book's captioned-shapes model of lesson 07.

**What you will learn**
- img2img (SDEdit): `strength` is how far back into the noise the picture is sent, and what that trades between
  keeping the picture and obeying the new prompt, measured;
- DDIM inversion: running the deterministic sampler backwards to find the noise that draws a given picture, and
  editing by re-sampling it with a changed prompt;
- inpainting two ways: the blending trick on the ordinary model, and a dedicated 9-channel inpainting U-Net as
  Stable Diffusion's inpainting model has, measured side by side on two edits.
"""),
    code("""import json

import torch
import transformers

transformers.logging.set_verbosity_error()   # no notices about image processors the book's pipelines never use
from diffusers import DDIMInverseScheduler, StableDiffusionImg2ImgPipeline  # noqa: E402

from diffusion_lessons import book, data, editing, inpainting, latents, text
from diffusion_lessons.device import by_profile, pick_device
from diffusion_lessons.evaluation import read_shapes
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.plotting import new_figure, show_images
from diffusion_lessons.pretrained import ROOT
from diffusion_lessons.stats import bootstrap_interval, proportion
from diffusion_lessons.t2i import load_pipeline

book.show_time("11_editing")
device = pick_device()
pipe = load_pipeline(ROOT / "shapes-t2i", device)
inpaint_folder = ROOT / "shapes-inpaint"
record = json.loads((inpaint_folder / "measurements.json").read_text())
recipe = json.loads((inpaint_folder / "recipe.json").read_text())
print("the shipped inpainting measurements were made on these weights:", record_matches_model(record, inpaint_folder))
print(f"inpainting U-Net trained by: {recipe['command']} ({recipe['steps']} steps, "
      f"{recipe['total_time_s'] / 60:.1f} min on {recipe['hardware']})")
N = by_profile(32, 96)   # pictures per measured setting: more on a GPU"""),
    md("""## 1. img2img, written out

A text-to-image model starts from pure noise at the last timestep. img2img (Meng et al. 2022, "SDEdit") starts from
*your* picture instead: encode it to latents $z_0$, noise them to an intermediate timestep $t_0$ with the forward
process of lesson 02, and run only the rest of the denoising loop, with the new prompt:

$$z_{t_0} = \\sqrt{\\bar\\alpha_{t_0}}\\, z_0 + \\sqrt{1-\\bar\\alpha_{t_0}}\\, \\varepsilon, \\qquad
\\text{then the usual guided DDIM steps from } t_0 \\text{ down.}$$

diffusers calls the starting point `strength`: with 25 steps and strength 0.6 it keeps the last
$\\lfloor 25 \\times 0.6 \\rfloor = 15$ of the 25 timesteps, so $t_0$ is the 15th from the end. Strength 1.0 starts at the
first timestep of the 25 (t = 961 with this scheduler's spacing), where about 8% of the picture's latents remain:
nearly, not exactly, pure noise (exercise 2); 0.2 keeps most of it. Below, the loop by hand with the scheduler, then the package
(`editing.img2img`, the package's one loop started at $z_{t_0}$), then diffusers' `StableDiffusionImg2ImgPipeline`
built from the same parts. Same generator seed, same numbers."""),
    code("""source = data.make_shapes(1, caption_style="plain", generator=torch.Generator().manual_seed(3))
picture, prompt = source.images.to(device), "a blue triangle on a white background"
print("the picture:", source.captions[0], "| the new prompt:", prompt)
steps, strength, scale = 25, 0.6, 7.5


@torch.no_grad()
def img2img_by_hand(picture, prompt, strength, seed):
    g = torch.Generator().manual_seed(seed)
    sched = pipe.scheduler
    sched.set_timesteps(steps)
    kept = int(steps * strength)
    timesteps = sched.timesteps[steps - kept:]                      # the last `kept` timesteps
    z0 = latents.encode(pipe.vae, picture, g)                         # the picture's latents (a posterior sample)
    noise = torch.randn(z0.shape, generator=g).to(device)
    z = sched.add_noise(z0, noise, timesteps[:1])                     # sqrt(abar) z0 + sqrt(1 - abar) eps
    cond = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [prompt])
    empty = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""])
    for t in timesteps:                                               # the guided loop of lesson 07
        eps_c, eps_u = pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([cond, empty])).sample.chunk(2)
        z = sched.step(eps_u + scale * (eps_c - eps_u), t, z).prev_sample
    return latents.decode(pipe.vae, z).clamp(-1, 1)


by_hand = img2img_by_hand(picture, prompt, strength, seed=0)
ours = editing.img2img(pipe, picture, prompt, strength, steps, scale, torch.Generator().manual_seed(0))
i2i = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
i2i.set_progress_bar_config(disable=True)
theirs = i2i(prompt, image=(picture + 1) / 2, strength=strength, num_inference_steps=steps, guidance_scale=scale,
             generator=torch.Generator().manual_seed(0), output_type="pt").images.to(device) * 2 - 1
print(f"by hand vs package: max |difference| {(by_hand - ours).abs().max():.1e}; "
      f"package vs diffusers' img2img pipeline: {(ours - theirs).abs().max():.1e}")
show_images([picture[0], by_hand[0], ours[0], theirs[0]],
            titles=["the picture", "by hand", "editing.img2img", "diffusers"], size=1.8)"""),
    md("""## 2. What strength trades, measured

Every edit has two goals that pull apart: keep the picture (here: where the shape is and how big) and obey the new
prompt (here: another color *and* another shape on the same background). We measure both on the same pictures at five
strengths, with the book's reader (lesson 07):

- **kept**: the intersection over union (IoU) of the shape's region before and after (pixels far from the background);
- **obeyed**: the share of pictures read as the asked color and the asked shape, with its Wilson 95% interval."""),
    code("""def strength_sweep(n, strengths=(0.2, 0.4, 0.6, 0.8, 1.0), seed=0):
    tasks = inpainting.edit_tasks(n, seed=seed + 40)["replace"]       # asks another color and shape
    pictures, asked = tasks["images"].to(device), tasks["wanted"]
    shape_of = lambda x: (((x.cpu() + 1) / 2 - ((x.cpu()[:, :, :1, :1] + 1) / 2)).norm(dim=1) > 0.5)  # far from the corner
    rows, examples = {}, {}
    for s in strengths:
        out = editing.img2img(pipe, pictures, tasks["prompts"], s, steps, scale, torch.Generator().manual_seed(seed))
        reads = read_shapes(out)
        overlap = inpainting.iou(shape_of(out), shape_of(pictures))
        rows[s] = dict(kept=bootstrap_interval(overlap.numpy(), seed=seed),
                       obeyed=proportion([r["color"] == w["color"] and r["shape"] == w["shape"]
                                          for r, w in zip(reads, asked)]))
        examples[s] = out[:4].cpu()
    return rows, examples, tasks


sweep, examples, sweep_tasks = strength_sweep(N)
print(f"{'strength':>8}  {'kept: IoU with the original shape':>36}  {'obeyed: asked color and shape':>34}")
for s, row in sweep.items():
    print(f"{s:>8.1f}  {str(row['kept']):>36}  {str(row['obeyed']):>34}")
fig = new_figure(5.5, 3.2)
ax = fig.add_subplot(1, 1, 1)
for key, color in (("kept", "tab:blue"), ("obeyed", "tab:red")):
    xs = list(sweep)
    ax.errorbar(xs, [sweep[s][key].value for s in xs], color=color, marker="o", capsize=3, label=key,
                yerr=[[sweep[s][key].value - sweep[s][key].low for s in xs], [sweep[s][key].high - sweep[s][key].value for s in xs]])
ax.set_xlabel("strength"); ax.set_ylabel("share / IoU (95% intervals)"); ax.set_ylim(-0.05, 1.05); ax.legend()
ax.set_title(f"img2img: keep the picture or obey the prompt (n = {N} per strength)")
fig"""),
    code("""show_images([sweep_tasks["images"][i] for i in range(4)] + [examples[s][i] for s in examples for i in range(4)], ncols=4,
            titles=[p.replace(" on a", "\\non a") for p in sweep_tasks["prompts"][:4]] + [f"strength {s}" for s in examples for _ in range(4)],
            size=1.5)"""),
    md(PROSE["strength"]),
    md("""## 3. DDIM inversion: the noise that draws your picture

img2img throws fresh noise at the picture, so even at low strength details change at random. A cleaner route exists
because DDIM's step (lesson 04, $\\eta = 0$) is deterministic: run it *backwards*, from the picture up to noise, and
sampling from that noise with the same prompt should draw the picture again. Going up from $t$ to the next timestep
$t'$ uses the noise predicted from the current latent (the one approximation: the prediction at $t'$ cannot be known
before reaching $t'$):

$$\\hat z_0 = \\frac{z_t - \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon_\\theta(z_t)}{\\sqrt{\\bar\\alpha_t}}, \\qquad
z_{t'} = \\sqrt{\\bar\\alpha_{t'}}\\,\\hat z_0 + \\sqrt{1-\\bar\\alpha_{t'}}\\,\\varepsilon_\\theta(z_t).$$

The package's `editing.ddim_invert` does exactly this; diffusers ships it as `DDIMInverseScheduler` (told to start
where the pipeline's DDIM ends). First the check, then how well the picture comes back against the number of steps,
without guidance and with it."""),
    code("""pics = data.make_shapes(16, caption_style="plain", generator=torch.Generator().manual_seed(5))
images, captions = pics.images.to(device), pics.captions
z_T = editing.ddim_invert(pipe, images[:2], captions[:2], 20)
inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=False)
inverse.set_timesteps(20)
with torch.no_grad():
    z = latents.encode(pipe.vae, images[:2], sample=False)
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, captions[:2])
    for t in inverse.timesteps:
        z = inverse.step(pipe.unet(z, t, encoder_hidden_states=emb).sample, t, z).prev_sample
print(f"package vs diffusers' DDIMInverseScheduler after 20 steps: max |difference| {(z - z_T).abs().max():.1e}")

with torch.no_grad():
    floor = (latents.reconstruct(pipe.vae, images) - images).abs().mean(dim=(1, 2, 3)) / 2
errors = {}
for g in (1.0, 7.5):
    for n_steps in (5, 10, 25, 50):
        back = editing.sample_from(pipe, editing.ddim_invert(pipe, images, captions, n_steps, g), captions, n_steps, g)
        errors[(g, n_steps)] = bootstrap_interval(((back - images).abs().mean(dim=(1, 2, 3)) / 2).cpu().numpy())
print(f"mean absolute error per pixel (RGB in [0, 1]), n = {len(images)} pictures, bootstrap 95% intervals")
print(f"  the VAE's own round trip (the floor): {bootstrap_interval(floor.cpu().numpy())}")
for (g, n_steps), e in errors.items():
    print(f"  guidance {g:>3}, {n_steps:>2} steps: {e}")"""),
    md(PROSE["inversion"]),
    code("""edits = [c.replace(a["color"], "green" if a["color"] != "green" else "blue")
         for c, a in zip(captions[:6], pics.attributes[:6])]
z_T = editing.ddim_invert(pipe, images[:6], captions[:6], 25)
edited = editing.sample_from(pipe, z_T, edits, 25, 3.0)
fresh = editing.img2img(pipe, images[:6], edits, 0.8, 25, 3.0, torch.Generator().manual_seed(0))
show_images(list(images[:6].cpu()) + list(edited.cpu()) + list(fresh.cpu()), ncols=6, size=1.4,
            titles=[f"{a['color']} (original)" for a in pics.attributes[:6]] +
                   [f"inverted, '{e.split()[1]}'" for e in edits] + ["img2img 0.8" for _ in edits])"""),
    md("""The middle row re-samples each picture's own inverted noise with one word changed (the color), at guidance 3.
The bottom row is img2img at strength 0.8 with the same prompts, from fresh noise. Inversion keeps the layout because
the noise *is* the layout: it was found from this picture. This is the idea behind prompt-to-prompt (Hertz et al. 2022)
and null-text inversion (Mokady et al. 2023), which also fix the drift that guidance adds on the way back.

## 4. Inpainting, way (a): the blending trick

To repaint a region, put a mask in the loop. With the ordinary 4-channel model, after every denoising step replace
the latents outside the mask by the picture's own latents noised to the *next* timestep:

$$z_t \\leftarrow (1 - m)\\, \\big(\\sqrt{\\bar\\alpha_{t'}}\\, z_0 + \\sqrt{1-\\bar\\alpha_{t'}}\\, \\varepsilon\\big) + m\\, z_t
\\qquad (m = 1 \\text{ where we repaint, at latent size}).$$

The model never sees the mask: it only keeps finding the known part already in place. diffusers'
`StableDiffusionInpaintPipeline` does this whenever its U-Net has 4 input channels. Below, the loop by hand against
the pipeline, on a picture whose shape's box is masked and a new shape asked for. The box is grown to whole 4 x 4
cells, because the blend is applied to the latents, at the latent size (8 x 8)."""),
    code("""edit = inpainting.edit_tasks(4, seed=7)
ask, box = edit["replace"], edit["replace"]["masks"].to(device)
blend_pipe = inpainting.inpaint_pipeline(pipe)                     # the base model's 4-channel U-Net


@torch.no_grad()
def blend_by_hand(picture, mask, prompt, seed):
    g = torch.Generator().manual_seed(seed)
    sched = pipe.scheduler
    sched.set_timesteps(steps)
    z_image = latents.encode(pipe.vae, picture, g)                               # the picture's latents
    noise = torch.randn(z_image.shape, generator=g).to(device)
    m = torch.nn.functional.interpolate(mask, size=z_image.shape[-2:])           # the mask at latent size
    z = noise * sched.init_noise_sigma                                           # strength 1: from pure noise
    cond = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [prompt])
    empty = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, [""])
    for i, t in enumerate(sched.timesteps):
        eps_c, eps_u = pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([cond, empty])).sample.chunk(2)
        z = sched.step(eps_u + scale * (eps_c - eps_u), t, z).prev_sample
        if i < len(sched.timesteps) - 1:                                         # keep the known part, re-noised
            known = sched.add_noise(z_image, noise, sched.timesteps[i + 1:i + 2])
        else:
            known = z_image
        z = (1 - m) * known + m * z
    return latents.decode(pipe.vae, z).clamp(-1, 1)


mine = blend_by_hand(ask["images"][:1].to(device), box[:1], ask["prompts"][0], seed=0)
theirs = inpainting.inpaint(blend_pipe, ask["images"][:1].to(device), box[:1], ask["prompts"][0], steps, scale,
                            torch.Generator().manual_seed(0))
print(f"blending by hand vs StableDiffusionInpaintPipeline (4-channel U-Net): max |difference| "
      f"{(mine - theirs).abs().max():.1e}")
show_images([ask["images"][0], box[0].cpu().repeat(3, 1, 1) * 2 - 1, mine[0].cpu(), theirs[0].cpu()], size=1.8,
            titles=["the picture", "mask (white: repaint)", "by hand", "diffusers"],
            suptitle=ask["prompts"][0])"""),
    md("""## 5. Inpainting, way (b): a model that sees the mask

Stable Diffusion's inpainting model takes **9 input channels**: the 4 noisy latents, the mask downsampled to the
latent size (1), and the latents of the masked picture (4, the picture with the masked part set to grey). It is
fine-tuned from the text-to-image model with random masks; the weights of the 5 new input channels start at zero, so
before fine-tuning the widened U-Net computes exactly what the base U-Net computes, whatever the mask and the known
picture (checked below), and fine-tuning starts from the base model's weights. The book's recipe
(`python -m diffusion_lessons.train shapes-inpaint`) does this to the shipped U-Net.

One change from Stable Diffusion's own inpainting models, which keep their base model's target $\\epsilon$: the book's
inpainting U-Net learns to predict $v = \\sqrt{\\bar\\alpha_t}\\,\\epsilon - \\sqrt{1-\\bar\\alpha_t}\\,z_0$
(Salimans and Ho 2022); its saved scheduler says `prediction_type="v_prediction"`, and the pipeline converts. The
reason is the outline. The first denoising steps, at high noise, decide where the shape's edges go, and there a
network that predicts $\\epsilon$ barely feels an outline drawn wrong. Written in what the network sees, the noise is
$\\epsilon = (z_t - \\sqrt{\\bar\\alpha_t}\\, z_0)/\\sqrt{1-\\bar\\alpha_t}$, so an error $\\delta$ in the
picture's latents $z_0$ moves the $\\epsilon$ target by only $\\sqrt{\\mathrm{SNR}_t}\\,\\delta$ (printed below for
the first step), while it moves the $v$ target by $\\delta/\\sqrt{1-\\bar\\alpha_t}$, at least all of $\\delta$. At
high noise $v$ is almost $-z_0$: the network is asked directly for the picture's latents, whose outline the known box
shows it; at low noise $v$ is almost $\\epsilon$. Since the widened U-Net's output is read as $v$ from the first step
on, fine-tuning has two things to learn: to use the mask and the known picture, and to predict $v$. This lesson does
not measure $\\epsilon$ against $v$; exercise 6 does."""),
    code("""wide = inpainting.inpaint_unet(pipe.unet)
print(f"conv_in: {tuple(pipe.unet.conv_in.weight.shape)} -> {tuple(wide.conv_in.weight.shape)}; "
      f"the new channels' largest weight: {wide.conv_in.weight.detach()[:, 4:].abs().max():.1f}")
with torch.no_grad():
    z_t, t = torch.randn(2, 4, 8, 8, device=device), torch.tensor([500, 500], device=device)
    emb = text.encode_prompts(pipe.tokenizer, pipe.text_encoder, captions[:2])
    extra = torch.randn(2, 5, 8, 8, device=device)                     # any mask and masked latents
    base_out = pipe.unet(z_t, t, encoder_hidden_states=emb).sample
    wide_out = wide(torch.cat([z_t, extra], dim=1), t, encoder_hidden_states=emb).sample
print(f"before fine-tuning, 9-channel vs base output: max |difference| {(base_out - wide_out).abs().max():.1e}")
inpaint_pipe = inpainting.load_inpaint_pipeline(inpaint_folder, device)   # StableDiffusionInpaintPipeline.from_pretrained
print(f"the shipped inpainting pipeline: {type(inpaint_pipe).__name__}, U-Net with "
      f"{inpaint_pipe.unet.config.in_channels} input channels; vae/, text_encoder/, tokenizer/ shared with shapes-t2i")
print(f"training masks: {recipe['data']['mask_odds']} ({recipe['data']['swap_share_of_outside']:.0%} of the 'outside' "
      f"masks show the shape on the other background)")
inpaint_pipe.scheduler.set_timesteps(steps)
first = int(inpaint_pipe.scheduler.timesteps[0])
abar = float(inpaint_pipe.scheduler.alphas_cumprod[first])
print(f"it predicts {inpaint_pipe.scheduler.config.prediction_type}; at the first of {steps} steps, t = {first}: an "
      f"error in z_0 moves the eps target by sqrt(SNR) = {(abar / (1 - abar)) ** 0.5:.3f} of it, the v target by "
      f"1 / sqrt(1 - abar) = {(1 - abar) ** -0.5:.3f} of it")"""),
    md("""## 6. The two ways, measured side by side

Two edits, each on the same pictures for both ways (the shipped record, made by the recipe on 96 pictures per edit):

- **replace**: the shape's box masked, the prompt asks another color and another shape. Measured: the asked color and
  the asked shape read inside the mask, the outside kept (mean change at most 24/255 per pixel), and the seam (the
  mean color jump across the mask's border).
- **background**: everything *but* the shape's box masked, the prompt asks the other background. Measured: the new
  background read, and the shape kept (its IoU with the original shape at least 0.8; the mean IoU too). The target
  this book set for a dedicated inpainting model: the new background in at least 90% of pictures and a mean IoU of
  at least 0.8.
- **keep**, a control: the background edit's pictures and masks, but each prompt is the picture's own caption, so
  nothing is to change. It separates "the model cannot turn one background into another" from "the model cannot
  keep what it is shown"."""),
    code("""def cell(row):
    return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}]" if isinstance(row, dict) else f"{row:.3f}"


ways = {"blending (base U-Net)": record["blending_base_model"], "inpainting U-Net (9 channels)": record["inpainting_unet"]}
n = record["inpainting_unet"]["settings"]["n"]
print(f"n = {n} pictures per edit, {record['inpainting_unet']['settings']['num_inference_steps']} steps, guidance "
      f"{record['inpainting_unet']['settings']['guidance_scale']}; shares with Wilson 95% intervals, the mean IoU "
      f"with a bootstrap 95% interval")
for task, keys in (("replace", ("asked_color", "asked_shape", "outside_kept", "mean_outside_change", "mean_seam")),
                   ("background", ("new_background", "shape_kept", "mean_iou", "mean_seam")),
                   ("keep", ("background_right", "shape_kept", "mean_iou", "mean_seam"))):
    print(f"\\n{task}:")
    print(f"  {'':<22}" + "".join(f"{w:>32}" for w in ways))
    for key in keys:
        print(f"  {key:<22}" + "".join(f"{cell(m[task][key]):>32}" for m in ways.values()))"""),
    code("""live = inpainting.edit_tasks(6, seed=11)
rows, titles = [], []
for task in ("replace", "background"):
    t = live[task]
    a = inpainting.inpaint(blend_pipe, t["images"].to(device), t["masks"].to(device), t["prompts"], steps, scale,
                           torch.Generator().manual_seed(0)).cpu()
    b = inpainting.inpaint(inpaint_pipe, t["images"].to(device), t["masks"].to(device), t["prompts"], steps, scale,
                           torch.Generator().manual_seed(0)).cpu()
    rows += list(t["images"]) + list(t["masks"].repeat(1, 3, 1, 1) * 2 - 1) + list(a) + list(b)
    titles += [f"asked: {p.split()[1]} {p.split()[2]}\\non {p.split()[5]}" for p in t["prompts"]] + ["mask"] * 6 + \\
        ["blending"] * 6 + ["9-channel"] * 6
show_images(rows, titles=titles, ncols=6, size=1.35)"""),
    md(PROSE["inpainting"]),
    md("""## Exercises

1. In section 2 the prompt was obeyed at every strength, so only the layout side of the trade shows. Which
   strength would you use to change a picture's colors but keep its layout, and what would you measure to choose
   on your own photographs?
2. img2img at strength 1.0 and plain text to image both start at the first timestep. Are their pictures the same for
   the same seed? (Hints: what remains of the picture at t = 961, and what does img2img draw from the generator?)
3. Why does guidance make DDIM inversion worse (section 3)? Think about what the one approximation in the inversion
   formula does when the predicted noise is multiplied by 7.5.
4. The blending trick keeps the known region exactly, yet it failed the background edit. Look at the pictures: what
   did it draw, and why can a model that never sees the mask not do better?
5. The recipe shows the inpainting U-Net, most of the time, the shape on the *other* background in the known box.
   What would the background edit look like without that, and why?
6. Set `PREDICTION_TYPE = "epsilon"` in `diffusion_lessons/recipes/shapes_inpaint.py` (the base model's own
   target; change it back afterwards), train with `python -m diffusion_lessons.train shapes-inpaint --profile quick
   --seed 0 --out runs/inpaint-eps` (about a quarter of an hour on a laptop CPU; the shipped record was made the same
   way) and compare its `runs/inpaint-eps/measurements.json` with the shipped one on the background edit and the
   keep control. Then draw both models' pictures of section 6 (`inpainting.load_inpaint_pipeline("runs/inpaint-eps",
   device)`): where do they differ, in the shape's place or in its outline?
"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                         "language": "python", "name": "diffusion-lessons"},
                                          "language_info": {"name": "python"}})
nbformat.write(nb, HERE.parent.parent / "notebooks" / "11_editing.ipynb")
print("wrote notebooks/11_editing.ipynb")
