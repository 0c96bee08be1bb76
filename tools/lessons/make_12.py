"""Write notebooks/12_controlnet.ipynb (unexecuted); then:
python tools/execute_lesson.py notebooks/12_controlnet.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_12.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 12: ControlNet: pinning the layout

A prompt says *what*; it is a poor way to say *where*. "A red circle at the top left" works in the book's world
because its captions use nine named places, but no caption can say "this exact outline". ControlNet (Zhang, Rao and
Agrawala 2023) lets the user hand the model a picture of the layout instead: a pose skeleton, an edge map, a depth
map, or here, the silhouette of the shape. This lesson builds one for the book's text-to-image model with diffusers'
real classes, shows why adding it leaves the base model intact, and measures how closely the drawn shape
follows the silhouette.

**What you will learn**
- what a ControlNet is: a trainable copy of the U-Net's encoder, fed the control image, joined to the locked U-Net
  by zero convolutions;
- why it starts as a no-op, verified: before training, the pipeline draws exactly what the base model draws;
- the conditioning scale, measured: the overlap between the silhouette and the drawn shape at scales 0, 0.5, 1, 1.5;
- what it does with control images it never saw in training.
"""),
    code("""import json

import torch

from diffusion_lessons import book, control, data, inpainting
from diffusion_lessons.device import pick_device
from diffusion_lessons.evaluation import read_shapes
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.models import count_parameters
from diffusion_lessons.plotting import new_figure, show_images
from diffusion_lessons.pretrained import ROOT
from diffusion_lessons.t2i import load_pipeline

book.show_time("12_controlnet")
device = pick_device()
pipe = load_pipeline(ROOT / "shapes-t2i", device)
folder = ROOT / "shapes-controlnet"
record = json.loads((folder / "measurements.json").read_text())
recipe = json.loads((folder / "recipe.json").read_text())
print("the shipped measurements were made on these weights:", record_matches_model(record, folder))
print(f"trained by: {recipe['command']} ({recipe['steps']} steps of batch {recipe['batch_size']}, "
      f"{recipe['total_time_s'] / 60:.1f} min on {recipe['hardware']})")
steps, scale = 25, 7.5"""),
    md("""## 1. The control image

The control image here is the shape's silhouette: white on black, RGB, at the picture's size (32 x 32). Training pairs
come free: every generated picture of the shapes world has its silhouette. At use, the user draws the silhouette and
the prompt says the rest (color, shape, background)."""),
    code("""tasks = control.control_tasks(8, seed=1)
show_images([c * 2 - 1 for c in tasks["control"]], titles=[p.replace(" on a", "\\non a") for p in tasks["prompts"]],
            ncols=8, size=1.4)"""),
    md("""## 2. A trainable copy joined by zeros

`ControlNetModel.from_unet(unet)` copies the U-Net's input convolution, time embedding, down blocks and middle
block, *with their weights*. The copy reads the noisy latents plus the control image, which a small convolutional
encoder shrinks to the latent size (three widths with two stride-2 convolutions: 32 -> 8, matching this VAE's 4x;
Stable Diffusion's 8x needs four widths and three stride-2 convolutions). The copy's outputs are added to the locked U-Net's skip connections and middle
block, each through a 1 x 1 convolution whose weights start at **zero**.

Zero convolutions are the whole trick: at the start every added feature is zero, so the pipeline draws exactly what
the base model draws, and the gradient still reaches the zero weights (the gradient of $W x$ with respect to $W$ is
$x$, not zero). Training can only move away from the base model as far as the loss asks. The check:"""),
    code("""fresh = control.build_controlnet(pipe.unet, seed=0).to(device)
print(f"a fresh ControlNet: {count_parameters(fresh):,} parameters (the U-Net: {count_parameters(pipe.unet):,}); "
      f"its zero convolutions' largest weights: {control.zero_convolutions(fresh)}")
untrained = control.controlnet_pipeline(pipe, fresh)
g = lambda: torch.Generator().manual_seed(0)   # noqa: E731
with_control = control.controlled(untrained, tasks["prompts"][:4], tasks["control"][:4].to(device), 1.0, steps, scale, g())
without = pipe(tasks["prompts"][:4], num_inference_steps=steps, guidance_scale=scale, generator=g(),
               output_type="pt").images.to(device) * 2 - 1
print(f"untrained ControlNet pipeline vs the base pipeline, same seed: max |difference| "
      f"{(with_control - without).abs().max():.1e}")"""),
    md("""## 3. The trained ControlNet at four conditioning scales

The recipe (`python -m diffusion_lessons.train shapes-controlnet`) trains only the copy, on captioned shapes with
their silhouettes, with the plain denoising loss: the locked U-Net, helped by the copy, must predict the noise. It is
loaded the way a user loads it: `StableDiffusionControlNetPipeline.from_pretrained("shapes-t2i",
controlnet=ControlNetModel.from_pretrained("shapes-controlnet"))`.

At use, `controlnet_conditioning_scale` multiplies everything the copy adds: 0 is the base model, 1 is what it was
trained at. Same prompts, same starting noise, four scales:"""),
    code("""cn_pipe = control.load_controlnet_pipeline(ROOT / "shapes-t2i", folder, device)
grid, titles = [c * 2 - 1 for c in tasks["control"][:6]], ["silhouette"] * 6
for s in control.SCALES:
    out = control.controlled(cn_pipe, tasks["prompts"][:6], tasks["control"][:6].to(device), s, steps, scale, g()).cpu()
    overlap = inpainting.iou(inpainting.silhouettes(out, tasks["colors"][:6]), tasks["control"][:6, 0] > 0.5)
    grid += list(out)
    titles += [f"scale {s:g}: IoU {v:.2f}" for v in overlap.tolist()]
show_images(grid, titles=titles, ncols=6, size=1.45)"""),
    md("""**Measured.** The recipe's record: for each scale, the intersection over union (IoU) between the silhouette and
the drawn shape (the pixels near the asked color), averaged over the prompts with a bootstrap 95% interval, the share
with IoU at least 0.8, and the share whose color the book's reader reads as asked. Scale 0 is the base model's free
placement, the baseline."""),
    code("""n = record["settings"]["n"]
print(f"n = {n} prompts, each with its own silhouette; {record['settings']['num_inference_steps']} steps, guidance "
      f"{record['settings']['guidance_scale']}; {record['settings']['starting_noise']}")
print(f"{'scale':>6}  {'mean IoU':>24}  {'IoU >= 0.8':>24}  {'color right':>24}")
fmt = lambda r: f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"  # noqa: E731
scales = [k for k, v in record.items() if isinstance(v, dict) and "mean_iou" in v]
for s in scales:
    row = record[s]
    print(f"{s:>6}  {fmt(row['mean_iou']):>24}  {fmt(row['iou_at_least_0_8']):>24}  {fmt(row['color_right']):>24}")
fig = new_figure(4.8, 3.0)
ax = fig.add_subplot(1, 1, 1)
xs = [float(s) for s in scales]
ax.errorbar(xs, [record[s]["mean_iou"]["value"] for s in scales], marker="o", capsize=3,
            yerr=[[record[s]["mean_iou"]["value"] - record[s]["mean_iou"]["low"] for s in scales],
                  [record[s]["mean_iou"]["high"] - record[s]["mean_iou"]["value"] for s in scales]])
ax.set_xlabel("controlnet_conditioning_scale"); ax.set_ylabel("mean IoU with the silhouette"); ax.set_ylim(0, 1)
ax.set_title(f"How closely the shape follows the silhouette (n = {n}, 95% intervals)")
fig"""),
    md(PROSE["scales"]),
    md("""## 4. Control images it never saw

Training only ever showed one silhouette of a named shape, at the world's sizes, with a prompt that names that shape.
What happens with two silhouettes, with a shape far smaller or bigger than any in training, or with a silhouette
that contradicts the prompt?"""),
    code("""def silhouette(shape, cx, cy, r):
    return control.silhouette_images(torch.tensor([data.SHAPES.index(shape)]), torch.tensor([[cx, cy, r]]))


odd = {
    "two circles": (silhouette("circle", 9.0, 9.0, 6.0) + silhouette("circle", 23.0, 22.0, 6.0)).clamp(0, 1),
    "a tiny square": silhouette("square", 16.0, 16.0, 2.5),
    "a huge triangle": silhouette("triangle", 16.0, 16.0, 15.0),
    "a square, prompt: circle": silhouette("square", 16.0, 16.0, 8.0),
}
prompts = ["a red circle on a white background", "a blue square on a black background",
           "a green triangle on a white background", "a yellow circle on a black background"]
controls = torch.cat(list(odd.values())).to(device)
outs = {s: control.controlled(cn_pipe, prompts, controls, s, steps, scale, g()).cpu() for s in (0.0, 1.0, 1.5)}
for name, read in zip(odd, read_shapes(outs[1.0])):
    print(f"{name:>26}: read as a {read['color']} {read['shape']} on {read['background']} at scale 1")
show_images(list(controls.cpu() * 2 - 1) + [o for s in outs for o in outs[s]], ncols=4, size=1.6,
            titles=list(odd) + [f"scale {s:g}" for s in outs for _ in prompts])"""),
    md(PROSE["unseen"]),
    md("""## Exercises

1. The zero convolutions start at zero. Why not start the *whole copy* at zero instead of copying the U-Net's
   weights? What would the first steps of training then have to learn?
2. At scale 1.5 the overlap is no worse than at 1 (section 3). Why might a scale above the training scale still work
   here, and what would you expect to break first if you kept raising it?
3. The pipeline runs the ControlNet on both halves of classifier-free guidance. What would change if the
   unconditional half got no control (diffusers' `guess_mode` is related)? Try it with `cn_pipe(..., guess_mode=True)`.
4. Design a control image for a task the book's world offers: what could tell the model the *color* layout instead
   of the outline? What would the recipe's training pairs be?
"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                         "language": "python", "name": "diffusion-lessons"},
                                          "language_info": {"name": "python"}})
nbformat.write(nb, HERE.parent.parent / "notebooks" / "12_controlnet.ipynb")
print("wrote notebooks/12_controlnet.ipynb")
