"""Write notebooks/17_other_generators.ipynb (unexecuted); then:
python tools/execute_lesson.py notebooks/17_other_generators.ipynb"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from prose import read_prose

md, code = new_markdown_cell, new_code_cell
HERE = Path(__file__).resolve().parent
PROSE = read_prose("prose_17.md")   # result-dependent paragraphs, kept next to this file

cells = [
    md("""# Lesson 17: The other generators: GANs and VAEs against diffusion

Diffusion was not the first way to make pictures from noise. From 2014 to about 2021 the best image generators
were **GANs** (generative adversarial networks: StyleGAN's faces that "do not exist"), and the **VAE** of lesson 06
is a generator in its own right, not only a compressor. They draw a picture in *one* pass of a network, where
diffusion needs tens. The usual summary is "GANs are faster but mode-collapse". This lesson measures that summary
instead of repeating it: on digits, with the **same generator network** (about a million parameters, matched to
the digits U-Net) trained two ways, against the book's own diffusion and flow models.

**What you will learn**
- the GAN's two-player objective and the VAE's evidence lower bound, each written out and checked against the
  package;
- what each generator draws, measured with 95% intervals: fidelity, class coverage, diversity within a class,
  roughness, and samples per second;
- what mode collapse is and whether it shows here, watched over the GAN's training;
- why diffusion won for images, from these numbers; and what "normalizing flows give exact likelihoods" means,
  and how flow matching differs from them.
"""),
    code("""import json
import time

import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from diffusion_lessons import book, generators as gen
from diffusion_lessons.data import NUM_DIGIT_CLASSES, load_digits
from diffusion_lessons.device import by_profile, pick_device
from diffusion_lessons.evaluation import class_coverage, measure_digits, train_digit_classifier
from diffusion_lessons.flow import sample_with_flow_scheduler
from diffusion_lessons.measure import record_matches_model
from diffusion_lessons.models import count_parameters
from diffusion_lessons.plotting import new_figure, show_images
from diffusion_lessons.pretrained import ROOT, load_pretrained
from diffusion_lessons.sampling import sample
from diffusion_lessons.stats import Estimate, bootstrap_interval

book.show_time("17_other_generators")
device = pick_device()
folder = ROOT / "digits-gan-vae"
record = json.loads((folder / "measurements.json").read_text())
recipe = json.loads((folder / "recipe.json").read_text())
print("the shipped measurements were made on these weights:", record_matches_model(record, folder))
print(f"trained by: {recipe['command']}")
print(f"  GAN {recipe['gan']['steps']} steps in {recipe['gan']['wall_time_s'] / 60:.1f} min (its loss, critic + "
      f"generator: {recipe['gan']['first_loss']:.2f} at the first step, {recipe['gan']['final_loss']:.2f} over the last "
      f"100), VAE {recipe['vae']['steps']} steps in {recipe['vae']['wall_time_s'] / 60:.1f} min, on {recipe['hardware']}")
flow_record = json.loads((ROOT / "digits-flow" / "recipe.json").read_text())
print(f"  for comparison, digits-flow: {flow_record['steps']} steps, {flow_record['wall_time_s'] / 60:.0f} min of training "
      f"on {flow_record['hardware']} (its record)")
print(f"  a GAN whose critic cannot tell real from fake (sigmoid 1/2 everywhere) scores critic + generator = "
      f"3 ln 2 = {3 * torch.log(torch.tensor(2.0)).item():.2f}")
gan = gen.DigitsGenerator.from_pretrained(folder / "generator", use_safetensors=True).to(device).eval()
decoder = gen.DigitsGenerator.from_pretrained(folder / "vae_decoder", use_safetensors=True).to(device).eval()
critic = gen.DigitsCritic.from_pretrained(folder / "critic", use_safetensors=True).to(device).eval()
encoder = gen.DigitsEncoder.from_pretrained(folder / "vae_encoder", use_safetensors=True).to(device).eval()
unet, ddim = load_pretrained("digits", device)
flow_unet, flow_scheduler = load_pretrained("digits-flow", device)
reflow_unet, reflow_scheduler = load_pretrained("digits-reflow", device)
print(f"parameters: GAN generator {count_parameters(gan):,} (its critic {count_parameters(critic):,}), "
      f"VAE decoder {count_parameters(decoder):,} (its encoder {count_parameters(encoder):,}), "
      f"digits U-Net {count_parameters(unet):,}")"""),
    md("""## 1. Two ways to train one network

Both generators are the same network $G(z, y)$: a code $z \\sim \\mathcal N(0, I)$ of 64 numbers and a label $y$
go through a linear layer to a $256 \\times 4 \\times 4$ block, then two transposed convolutions up to
$16 \\times 16$ (the DCGAN design of Radford et al. 2016). One evaluation, one digit. What differs is the signal that
teaches it.

**The GAN** (Goodfellow et al. 2014) adds a second network, the critic $D(x, y)$, which outputs a logit: high for
real digits, low for generated ones. The two play a game:

$$\\min_G \\max_D \\; \\mathbb E_{x, y}\\big[\\log \\sigma(D(x, y))\\big] + \\mathbb E_{z, y}\\big[\\log\\big(1 - \\sigma(D(G(z, y), y))\\big)\\big].$$

The critic's loss is the binary cross-entropy of telling the two apart; the generator uses the *non-saturating*
form, $-\\log \\sigma(D(G(z, y), y))$, which gives it strong gradients exactly when the critic wins easily (early in
training). There is no target picture anywhere: the generator only learns what the critic currently dislikes.

**The VAE** (Kingma & Welling 2014, lesson 06) adds an encoder $q(z \\mid x, y) = \\mathcal N(\\mu, \\sigma^2)$ and
maximises the evidence lower bound. With a Gaussian decoder of standard deviation $\\sigma_x$ the loss per digit is,
up to a constant,

$$\\frac{\\lVert x - G(z, y) \\rVert^2}{2 \\sigma_x^2} + \\mathrm{KL}\\big(q(z \\mid x, y)\\,\\|\\,\\mathcal N(0, I)\\big),
\\qquad z = \\mu + \\sigma \\epsilon,$$

a regression onto the digit plus a price for codes that stray from the prior. To sample, decode $z$ drawn from the
prior. Written out by hand on one batch and compared with the package:"""),
    code("""# NBVAL_CHECK_OUTPUT
x, labels = load_digits("train")
x, labels = x[:64].to(device), labels[:64].to(device)
z = torch.randn(64, gen.Z_DIM, generator=torch.Generator().manual_seed(0)).to(device)
with torch.no_grad():
    fake = gan(z, labels)
    real_logit, fake_logit = critic(x, labels), critic(fake, labels)
    critic_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                   + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    generator_loss = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
    package = gen.gan_losses(gen.GanPair(gan, critic), x, labels, z)
    print("GAN critic loss    by hand vs package:", torch.allclose(critic_loss, package[0], atol=1e-5))
    print("GAN generator loss by hand vs package:", torch.allclose(generator_loss, package[1], atol=1e-5))
    mu, logvar = encoder(x, labels)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    recon = ((x - decoder(mu + (0.5 * logvar).exp() * z, labels)) ** 2).flatten(1).sum(1).mean() / (2 * gen.VAE_SIGMA ** 2)
    package = gen.vae_loss(gen.DigitsVAE(encoder, decoder), x, labels, z)
    print("VAE reconstruction by hand vs package:", torch.allclose(recon, package[0], rtol=1e-5))
    print("VAE KL (torch.distributions) vs package:", torch.allclose(kl, package[1], rtol=1e-5))"""),
    md("""The recipe (`python -m diffusion_lessons.train digits-gan-vae`) trains both in the book's one training loop.
The GAN's two networks sit in one module with one optimizer: the critic's loss sees the fake digits *detached*, and
the generator's loss sees the critic through a detached copy of its weights, so each network receives only its own
gradient and both take a step together (simultaneous updates; the classic DCGAN alternates them). Adam with
$\\beta_1 = 0.5$ and a small learning rate, as DCGAN recommends, and an average of the weights (EMA) for sampling.

## 2. What they draw

The same ten digits asked of each generator, with the book's diffusion model (lesson 04, DDIM) and flow model
(lesson 08, Euler), each with 20 steps (enough for them, lesson 09) at guidance 3 as in their lessons, and the reflowed flow model at **one** step,
which makes it a one-evaluation generator like the GAN:"""),
    code("""PER_LABEL = by_profile(quick=20, full=50)
STEPS = 20      # the diffusion and flow models' steps (lesson 09: enough for these models)
asked = torch.arange(NUM_DIGIT_CLASSES).repeat_interleave(PER_LABEL)


def seeded():
    return torch.Generator().manual_seed(0)


def draw(name: str) -> torch.Tensor:
    if name == "GAN":
        return gen.generate(gan, asked, seeded())
    if name == "VAE":
        return gen.generate(decoder, asked, seeded())
    if name == "diffusion, 20 steps":
        return sample(unet, ddim, asked, steps=STEPS, guidance_scale=3.0, generator=seeded(), progress=False).cpu()
    if name == "flow, 20 steps":
        return sample_with_flow_scheduler(flow_unet, flow_scheduler, asked, STEPS, 3.0, generator=seeded()).cpu()
    return sample_with_flow_scheduler(reflow_unet, reflow_scheduler, asked, 1, 3.0, generator=seeded()).cpu()


GENERATORS = {"GAN": 1, "VAE": 1, "diffusion, 20 steps": 40, "flow, 20 steps": 40, "reflow, 1 step": 2}
SHORT = {"GAN": "GAN", "VAE": "VAE", "diffusion, 20 steps": "diffusion", "flow, 20 steps": "flow",
         "reflow, 1 step": "reflow"}
drawn, seconds = {}, {}
for name in GENERATORS:
    start = time.perf_counter()
    drawn[name] = draw(name).clamp(-1, 1)
    seconds[name] = time.perf_counter() - start
pick = torch.arange(NUM_DIGIT_CLASSES) * PER_LABEL
show_images(torch.cat([drawn[name][pick + k] for name in GENERATORS for k in range(2)]), ncols=10, size=0.75,
            titles=[SHORT[name] if i == 0 and k == 0 else "" for name in GENERATORS for k in range(2) for i in range(10)],
            suptitle="two samples of each digit 0-9 from each generator (same seed)")"""),
    code("""classifier = train_digit_classifier()
real, real_labels = load_digits("test")


def edge(images: torch.Tensor) -> torch.Tensor:   # mean absolute difference of neighbouring pixels, per image
    return ((images[..., 1:] - images[..., :-1]).abs().mean((1, 2, 3))
            + (images[..., 1:, :] - images[..., :-1, :]).abs().mean((1, 2, 3))) / 2


def sharpness(images: torch.Tensor):   # edge strength relative to real digits' (1 = as crisp), bootstrap interval
    return bootstrap_interval(edge(images) / edge(real).mean())


found = {}
for name, images, wanted in [*((n, drawn[n], asked) for n in GENERATORS), ("real (held out)", real, real_labels)]:
    found[name] = measure_digits(images, wanted, classifier)
    found[name]["coverage"] = class_coverage(images, wanted, classifier)
    found[name]["sharpness"] = sharpness(images)


def cell(e, digits=3) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


print(f"n = {len(asked)} samples per generator ({PER_LABEL} of each digit), {len(real)} held-out real digits; "
      f"95% intervals; network evaluations per sample (guidance doubles them); samples/s on this machine")
COLUMNS = ("fidelity", "coverage", "diversity", "sharpness", "rough")
print(f"{'':<20}{'evals':>6}" + "".join(f"{c:>23}" for c in COLUMNS) + f"{'samples/s':>11}")
for name, f in found.items():
    evals = GENERATORS.get(name, "")
    speed = f"{len(asked) / seconds[name]:,.0f}" if name in seconds else ""
    print(f"{name:<20}{evals!s:>6}" + "".join(f"{cell(f[c]):>23}" for c in COLUMNS) + f"{speed:>11}")
unguided = Estimate(**flow_record["quality"]["settings"]["steps_50/guidance_1/diffusers"]["diversity"])
with_guidance = Estimate(**flow_record["quality"]["settings"]["steps_50/guidance_3/diffusers"]["diversity"])
print(f"the flow model in its recipe's record (50 steps, same seed and n): diversity {cell(with_guidance)} at guidance 3, "
      f"{cell(unguided)} without guidance (s = 1)")"""),
    md("""*Fidelity*: the share of samples that the book's digit classifier reads as the digit asked for. *Coverage*: the
share of the ten digits that a generator draws right at least half the time. *Diversity*: the mean distance between
two samples of the same digit, relative to the same figure for real digits (1 = as varied as real digits), measured
on the 20 main directions of variation of the real training digits (a fixed projection, not the classifier).
*Sharpness*: the mean difference between neighbouring pixels, relative to real digits' (below 1: softer strokes than
real). *Rough*: the share of samples with fine pixel speckle that no real digit has (what is left after a digit is
smoothed to the 8x8 grid the data came from and back). Samples per second is this machine's speed for the batch
above, not a benchmark. The recipe measured the GAN and the VAE the same way and with the same seed when it trained
them; the table's rows agree with its record:"""),
    code("""# NBVAL_CHECK_OUTPUT
for name, key in (("GAN", "gan"), ("VAE", "vae")):
    same = all(abs(found[name][k].value - record[key][r]["value"]) < 1e-3 for k, r in
               (("fidelity", "fidelity"), ("coverage", "class_coverage"), ("diversity", "diversity"), ("rough", "rough")))
    print(f"{name}: the live row equals the recipe's record:", same)"""),
    code("""# NBVAL_CHECK_OUTPUT
def apart_above(a, b) -> bool:      # a is larger and the 95% intervals do not overlap
    return a.value > b.value and not a.overlaps(b)


gan_f, vae_f, flow_f, diff_f, real_f = (found[k] for k in ("GAN", "VAE", "flow, 20 steps", "diffusion, 20 steps",
                                                          "real (held out)"))
print("checked on the table (a difference counts when the 95% intervals do not overlap):")
print("GAN fidelity no different from the flow model's:", gan_f["fidelity"].overlaps(flow_f["fidelity"]))
print("VAE fidelity no different from the flow model's:", vae_f["fidelity"].overlaps(flow_f["fidelity"]))
print("every generator draws every digit:", all(found[k]["coverage"].value == 1.0 for k in GENERATORS))
print("GAN more varied than the guided flow model:", apart_above(gan_f["diversity"], flow_f["diversity"]))
print("GAN more varied than the guided diffusion model:", apart_above(gan_f["diversity"], diff_f["diversity"]))
print("the flow model more varied without guidance than with it (its record):", apart_above(unguided, with_guidance))
# the same generator weights, other codes: the raw GAN at the last checkpoint of its history (seed 1) and in the
# record's final measurement (seed 0)
again = Estimate(**record["gan_history"][-1]["diversity"])
print("two draws of codes from the same GAN give overlapping diversity intervals:",
      again.overlaps(Estimate(**record["gan_raw"]["diversity"])))
print("VAE softer than real digits:", apart_above(real_f["sharpness"], vae_f["sharpness"]))
print("GAN softer than real digits:", apart_above(real_f["sharpness"], gan_f["sharpness"]))
print("no rough sample from the GAN, the VAE or the 20-step models:",
      all(found[k]["rough"].value == 0.0 for k in ("GAN", "VAE", "diffusion, 20 steps", "flow, 20 steps")))"""),
    md(PROSE["table"]),
    md("""## 3. Mode collapse, watched

A GAN's generator is never told to cover the data; it is only told to fool the current critic. If one kind of
picture fools it well, nothing stops the generator from drawing only that: **mode collapse**, the loss of whole
kinds of output (a digit, a style of a digit) that the data has. The recipe watched for it: every
1/12 of the training it asked the (not averaged) generator for 20 samples of each digit from one fixed set of codes,
and measured them."""),
    code("""history = record["gan_history"]
steps = [h["step"] for h in history]
fig = new_figure(9, 3.2)
ax1, ax2 = fig.subplots(1, 2)
for ax, key, label in ((ax1, "fidelity", "fidelity"), (ax2, "diversity", "diversity (real = 1)")):
    vals = [h[key] for h in history]
    ax.errorbar(steps, [v["value"] for v in vals], yerr=[[v["value"] - v["low"] for v in vals],
                                                         [v["high"] - v["value"] for v in vals]],
                fmt="o-", capsize=3, color="C1")
    ax.set(xlabel="GAN training step", ylabel=label, title=f"{label}, n = {vals[0]['n']} a point")
ax2.axhline(1.0, color="grey", ls=":", lw=1)

fig"""),
    code("""pictures = load_file(folder / "gan_history.safetensors")
shown = [f"step_{s}" for s in (steps[0], steps[len(steps) // 3], steps[2 * len(steps) // 3], steps[-1])]
rows = []
for key in shown:
    images = pictures[key].float() / 127.5 - 1
    per = images.shape[0] // NUM_DIGIT_CLASSES     # the samples of each digit, digit by digit
    rows.append(images.view(NUM_DIGIT_CLASSES, per, 1, 16, 16)[:, 0])           # the first sample of each digit
    rows.append(images.view(NUM_DIGIT_CLASSES, per, 1, 16, 16)[3, :10])
show_images(torch.cat(rows), ncols=10, size=0.75,
            titles=[f"{k.replace('_', ' ')}" if i == 0 and j == 0 else "" for k in shown for j in range(2)
                    for i in range(10)],
            suptitle="the raw GAN generator over training: one sample of each digit, then ten 3s (same codes)")"""),
    code("""# NBVAL_CHECK_OUTPUT
first, last = history[0], history[-1]
est = {k: (Estimate(**first[k]), Estimate(**last[k])) for k in ("fidelity", "diversity")}
print(f"conditional GAN, raw generator, n = {first['fidelity']['n']} per point:")
print("fidelity at least 0.95 at every point:", all(h["fidelity"]["value"] >= 0.95 for h in history))
print("diversity at the last point above the first:", apart_above(est["diversity"][1], est["diversity"][0]))
print("diversity never falls below the first point's interval:",
      all(h["diversity"]["value"] >= first["diversity"]["low"] for h in history))"""),
    md(PROSE["collapse"]),
    md("""### Without the labels

The label hands the generator the split of the data into ten digits, and the critic checks each digit separately:
its output adds to a general real-or-fake score the match between its features and a learned vector for the digit
asked for (the *label projection* of Miyato and Koyama 2018), so a good 3 cannot pass for a 7. Take the labels away and the generator must find the ten digits on its own: the
classic setting for mode collapse. The same recipe with `--unconditional` (every label 0, the same networks, steps
and settings, no VAE) trained that GAN once; its record is kept in `benchmarks/gan-collapse/`. Over its training,
the digits its samples are read as:"""),
    code("""collapse = ROOT.parents[1] / "benchmarks" / "gan-collapse"
unc = json.loads((collapse / "measurements.json").read_text())
unc_recipe = json.loads((collapse / "recipe.json").read_text())
print(f"trained by: {unc_recipe['command']} ({unc_recipe['gan']['wall_time_s'] / 60:.1f} min on {unc_recipe['hardware']})")
unc_steps = [h["step"] for h in unc["gan_history"]]
shares = torch.tensor([[h["shares"][str(d)]["value"] for d in range(NUM_DIGIT_CLASSES)] for h in unc["gan_history"]])
fig = new_figure(9, 3.3)
ax1, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.5, 1]))
im = ax1.imshow(shares.T, aspect="auto", cmap="viridis", vmin=0, vmax=max(0.3, shares.max().item()),
                extent=(0, len(unc_steps), NUM_DIGIT_CLASSES - 0.5, -0.5))
ax1.set(xticks=[i + 0.5 for i in range(len(unc_steps))], xticklabels=[f"{s // 1000}k" if s % 1000 == 0 else "" for s in unc_steps],
        yticks=range(NUM_DIGIT_CLASSES), xlabel="training step", ylabel="digit read",
        title=f"share of each digit among {unc['gan_history'][0]['shares']['0']['n']} samples")
fig.colorbar(im, ax=ax1, shrink=0.8)
ax2.plot(unc_steps, [h["digits_drawn"] for h in unc["gan_history"]], "o-", color="C1")
ax2.set(ylim=(0, 10.5), xlabel="training step", ylabel="digits drawn at least once", title="digits drawn")
fig"""),
    code("""unc_pictures = load_file(collapse / "gan_history.safetensors")
keys = [f"step_{s}" for s in (unc_steps[0], unc_steps[len(unc_steps) // 2], unc_steps[-1])]
show_images(torch.cat([unc_pictures[k][:10].float() / 127.5 - 1 for k in keys]), ncols=10, size=0.75,
            titles=[k.replace("_", " ") if i == 0 else "" for k in keys for i in range(10)],
            suptitle="the unconditional GAN's first 10 samples (the same codes) at three points of its training")"""),
    code("""# NBVAL_CHECK_OUTPUT
final = unc["gan"]
print(f"the trained unconditional GAN (EMA weights), {final['diversity']['n']} samples: "
      f"{final['digits_drawn']} of 10 digits drawn at least once")
for d in range(NUM_DIGIT_CLASSES):
    e = final["shares"][str(d)]
    print(f"  {d}: {e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]", end="" if d % 5 < 4 else "\\n")
top = [max(range(NUM_DIGIT_CLASSES), key=lambda d: h["shares"][str(d)]["value"]) for h in unc["gan_history"]]
print("every sample read as one and the same digit at every checkpoint:",
      all(h["digits_drawn"] == 1 for h in unc["gan_history"]))
print("diversity between samples below a fifth of real digits' at every checkpoint:",
      all(h["diversity"]["high"] < 0.2 for h in unc["gan_history"]), f"(last: {cell(Estimate(**unc['gan_history'][-1]['diversity']))})")
print("the digit that one picture is read as changes during training:", len(set(top)) > 1, f"(in order: {top})")
print("a digit's interval lies wholly below 1 in 20 (half a fair share):",
      any(final["shares"][str(d)]["high"] < 0.05 for d in range(NUM_DIGIT_CLASSES)))
print("a digit's interval lies wholly above 1 in 5 (twice a fair share):",
      any(final["shares"][str(d)]["low"] > 0.2 for d in range(NUM_DIGIT_CLASSES)))"""),
    md(PROSE["unconditional"]),
    md("""## 4. What each trades, and why diffusion won

| | GAN | VAE | diffusion / flow |
|---|---|---|---|
| training signal | a second network's opinion | reconstruction + prior | regression onto a known target (noise, velocity) |
| training | a game: unstable, needs tuning, no loss that says "better" | stable, one loss | stable, one loss that falls as samples improve |
| coverage | only what fools the critic: can drop modes | every training image is reconstructed: covers | every training image is a target: covers |
| sharpness | sharp | blurry (the Gaussian likelihood averages) | sharp |
| sampling | one evaluation | one evaluation | tens of evaluations (a few after reflow or distillation) |

""" + PROSE["why"]),
    md("""## 5. Normalizing flows, and how flow matching differs

A **normalizing flow** (Dinh et al. 2017, RealNVP; Kingma & Dhariwal 2018, Glow) is a generator $x = f(z)$ whose
network is *invertible*, built from layers whose Jacobian determinant is cheap (coupling layers change half the
numbers by an affine map of the other half). Then the change-of-variables formula gives the **exact likelihood**
of any picture,

$$\\log p(x) = \\log p_z\\big(f^{-1}(x)\\big) + \\log \\left| \\det \\frac{\\partial f^{-1}(x)}{\\partial x} \\right|,$$

and training maximises it directly: no critic, no bound. The price is the architecture: every layer must be
invertible with a tractable determinant, the code has as many numbers as the picture, and such networks needed to
be very large to draw good pictures. The likelihood they give is exact, but a good likelihood did not mean good
pictures.

**Flow matching** (lesson 08) also learns a map from noise to data, but as a *continuous* flow: a velocity field
$v(x, t)$ whose ODE carries noise to pictures (a continuous normalizing flow, Chen et al. 2018). It drops both of the
old constraints. The network is any network (a U-Net, a transformer), because the map is invertible by
construction (an ODE run backwards), not by design of the layers; and training never simulates the ODE or computes
a determinant: it regresses $v$ onto the straight-line target $\\epsilon - x_0$, a plain mean-squared error. A
likelihood can still be computed afterwards (integrating the divergence of $v$ along the path), but it is not what
training optimises. Flow matching keeps the "flow" and throws away the part that made normalizing flows hard.

## Exercises

1. **The truncation trick.** Draw the GAN's digits from $z$ scaled by 0.5 (`gan(0.5 * z, labels)`) and measure
   fidelity and diversity again. What does each do, and why does a smaller code trade one for the other?
2. **A sharper VAE?** Retrain with a smaller likelihood width (`VAE_SIGMA = 0.1` in `generators.py`, into your own
   `--out`): the reconstruction term weighs four times more. Measure fidelity, diversity and the KL term. Why do the
   prior's samples not simply get sharper?
3. **Matched evaluations.** The reflowed flow model drew its digits in one step. Draw the flow model (not reflowed)
   with 1, 2 and 4 Euler steps and put the rows in the table. How many evaluations does it need to match the GAN?
"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python (diffusion-lessons)",
                                                        "language": "python", "name": "diffusion-lessons"}})
path = HERE.parents[1] / "notebooks" / "17_other_generators.ipynb"
nbformat.write(nb, path)
print("wrote", path)
