"""Recipe of lesson 17's other generators: python -m diffusion_lessons.train digits-gan-vae.

Trains, on the digits training split (16x16, labels 0-9) with the book's one loop (training.train_loop), the
two one-evaluation generators of generators.py, each around the same DigitsGenerator (about 1.05 M
parameters, matched to the digits U-Net's 1.06 M):
  GAN: DigitsGenerator + DigitsCritic, non-saturating loss, simultaneous steps with one AdamW (lr 2e-4,
       betas (0.5, 0.999) as DCGAN, no weight decay, no clipping), EMA of the weights (0.999) for sampling.
       Every --gan-steps / HISTORY_POINTS steps the raw generator draws HISTORY_PER_LABEL digits of each label
       from one fixed code: fidelity and within-class diversity over training, and the pictures (mode
       collapse, if it comes, shows here).
  VAE: DigitsEncoder + DigitsGenerator as decoder, negative ELBO (Gaussian likelihood, sigma 0.2), AdamW
       (lr 1e-3) on a cosine, EMA 0.999; sampled from the prior N(0, I).
Both are measured like every digits model (evaluation.measure_digits: fidelity, rough, diversity; with
class_coverage), per_label samples of each digit from one seed. Writes into --out (default
./runs/digits-gan-vae-<timestamp>; the shipped diffusion_lessons/pretrained/digits-gan-vae/ only with
--force): generator/ and critic/ (the GAN), vae_encoder/ and vae_decoder/, gan_history.safetensors,
recipe.json, measurements.json and manifest.json, all at once.
--unconditional trains the GAN alone without labels (every label 0), lesson 17's mode-collapse run: its history
and measurement are the shares of the digits the samples are read as (read_shares), and there is no VAE.
"""

from __future__ import annotations

import argparse
import time

import torch

from .. import generators as gen
from ..data import NUM_DIGIT_CLASSES, load_digits
from ..device import seed_everything
from ..evaluation import class_coverage, measure_digits, train_digit_classifier, within_class_diversity_estimate
from ..models import count_parameters
from ..stats import proportion
from ..training import EMA, TrainingInterrupted, train_loop, training_device
from . import common
from .digits import data_record

NAME = "digits-gan-vae"
SETTINGS = {"quick": dict(gan_steps=6000, vae_steps=3000, batch_size=64),   # about 20 min on the idle 2-core CPU
            "full": dict(gan_steps=24000, vae_steps=12000, batch_size=128)}
GAN = dict(lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, max_grad_norm=None)
VAE = dict(lr=1e-3)
EMA_DECAY = 0.999
HISTORY_POINTS = 12
HISTORY_PER_LABEL = 20
PER_LABEL = 20
OUTPUTS = ("generator", "critic", "vae_encoder", "vae_decoder", "gan_history.safetensors", "recipe.json",
           "measurements.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.make_parser(NAME, __doc__, SETTINGS)
    parser.add_argument("--per-label", type=int, default=PER_LABEL,
                        help=f"samples per digit for the measurement (default {PER_LABEL})")
    parser.add_argument("--unconditional", action="store_true",
                        help="train the GAN without labels (every label 0) and no VAE: lesson 17's mode-collapse run, "
                             "where the shares of the digits drawn are watched over training")
    args = common.parse(parser, argv, NAME, SETTINGS, outputs=OUTPUTS)
    if args.unconditional:
        args.vae_steps = 0
    args.steps = args.gan_steps + args.vae_steps   # what the shared record calls steps
    if args.per_label < 2:
        parser.error(f"--per-label must be >= 2 (diversity needs pairs), got {args.per_label}")
    if args.resume or args.checkpoint_every:
        parser.error("--resume and --checkpoint-every are not offered by digits-gan-vae (two short runs)")
    return args


def _measure(images: torch.Tensor, labels: torch.Tensor, classifier) -> dict:
    found = {k: v.as_dict() for k, v in measure_digits(images, labels, classifier).items()}
    found["class_coverage"] = class_coverage(images, labels, classifier).as_dict()
    return found


def read_shares(images: torch.Tensor, classifier) -> dict:
    """What an unconditional generator draws: the share of each digit as the classifier reads it (Wilson), and
    the within-digit diversity with the digits as read."""
    read = classifier.predict(images)
    return dict(shares={str(c): proportion(read == c).as_dict() for c in range(NUM_DIGIT_CLASSES)},
                digits_drawn=int(read.unique().numel()),
                diversity=within_class_diversity_estimate(images, read).as_dict())


class History:
    """The callback that watches the raw GAN generator over training (see the module docstring). Unconditional:
    HISTORY_PER_LABEL x 10 samples, measured by read_shares."""

    def __init__(self, pair: gen.GanPair, every: int, seed: int, classifier, main: bool, unconditional: bool = False):
        self.pair, self.every, self.classifier, self.main = pair, every, classifier, main
        self.labels = torch.arange(NUM_DIGIT_CLASSES).repeat_interleave(HISTORY_PER_LABEL)
        self.unconditional = unconditional
        if unconditional:
            self.labels = torch.zeros_like(self.labels)
        self.seed, self.rows, self.pictures = seed, [], {}

    def __call__(self, step: int) -> None:
        if not self.main or step % self.every:
            return
        was_training = self.pair.generator.training
        self.pair.generator.eval()
        images = gen.generate(self.pair.generator, self.labels, torch.Generator().manual_seed(self.seed))
        self.pair.generator.train(was_training)
        if self.unconditional:
            self.rows.append(dict(step=step, **read_shares(images, self.classifier)))
        else:
            found = measure_digits(images, self.labels, self.classifier)
            self.rows.append(dict(step=step, fidelity=found["fidelity"].as_dict(),
                                  diversity=found["diversity"].as_dict()))
        self.pictures[f"step_{step}"] = ((images + 1) * 127.5).round().to(torch.uint8)


def train_gan(x0, labels, args, device, accelerator, classifier):
    seed_everything(args.seed)
    classes = 1 if args.unconditional else NUM_DIGIT_CLASSES
    if args.unconditional:
        labels = torch.zeros_like(labels)
    pair = gen.GanPair(gen.DigitsGenerator(num_classes=classes), gen.DigitsCritic(num_classes=classes)).to(device)
    ema = EMA(pair, max_decay=EMA_DECAY).to(device)
    history = History(pair, max(1, args.gan_steps // HISTORY_POINTS), args.seed + 1, classifier,
                      accelerator.is_main_process, args.unconditional)
    start = time.perf_counter()
    losses = train_loop(pair, gen.gan_loss_fn(pair), gen.batch_fn(x0, labels, args.batch_size),
                        steps=args.gan_steps, generator=torch.Generator().manual_seed(args.seed), ema=ema,
                        desc=f"{NAME} GAN", accelerator=accelerator, callback=history, **GAN)
    common.synchronize(device)
    return ema.model.eval(), pair.eval(), losses, time.perf_counter() - start, history


def train_vae(x0, labels, args, device, accelerator):
    seed_everything(args.seed)
    vae = gen.DigitsVAE(gen.DigitsEncoder(), gen.DigitsGenerator()).to(device)
    ema = EMA(vae, max_decay=EMA_DECAY).to(device)
    start = time.perf_counter()
    losses = train_loop(vae, gen.vae_loss_fn(vae), gen.batch_fn(x0, labels, args.batch_size),
                        steps=args.vae_steps, generator=torch.Generator().manual_seed(args.seed + 1), ema=ema,
                        desc=f"{NAME} VAE", accelerator=accelerator, **VAE)
    common.synchronize(device)
    return ema.model.eval(), losses, time.perf_counter() - start


def unconditional_finish(args, accelerator, gan, raw, losses, train_s, history, classifier, device,
                         started) -> dict | None:
    """--unconditional: save the GAN and its history; measure read_shares of 10 x per_label samples."""
    from safetensors.torch import save_file

    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        gan.generator.save_pretrained(folder / "generator", safe_serialization=True)
        raw.critic.save_pretrained(folder / "critic", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in history.pictures.items()}, str(folder / "gan_history.safetensors"))
        t_eval = time.perf_counter()
        asked = torch.zeros(NUM_DIGIT_CLASSES * args.per_label, dtype=torch.long)
        found = None if args.skip_eval else {
            name: read_shares(gen.generate(net, asked, torch.Generator().manual_seed(args.seed)), classifier)
            for name, net in (("gan", gan.generator), ("gan_raw", raw.generator))}
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=losses, train_s=train_s, device=device, eval_s=eval_s,
            batch_size=args.batch_size, lr=GAN["lr"],
            loop=dict(loops=dict(gan={**GAN, "optimizer": "AdamW, one for both networks", "lr_schedule": "cosine to 0",
                                      "ema_max_decay": EMA_DECAY})),
            quality=None if found is None else {k: dict(digits_drawn=v["digits_drawn"]) for k, v in found.items()},
            data={**data_record(), "labels": "none: every label 0 (--unconditional)"},
            parameters=dict(generator=count_parameters(gan.generator), critic=count_parameters(raw.critic)),
            gan=dict(steps=args.gan_steps, wall_time_s=round(train_s, 1), unconditional=True),
            z_dim=gen.Z_DIM, saved_weights="EMA (generator); critic: the trained weights")
        record["command"] = record["command"].replace(" --vae-steps 0", "") + " --unconditional" + (
            "" if args.per_label == PER_LABEL else f" --per-label {args.per_label}")
        record["recipe"] = record["command"]
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            write_measurements(folder, record, found, history, eval_s, dict(
                samples=len(asked), seed=args.seed, sampler="generators.generate (one evaluation)",
                measure="read_shares: the classifier's reading of each sample (Wilson per digit)",
                history=f"the raw generator every {max(1, args.gan_steps // HISTORY_POINTS)} steps, "
                        f"{len(asked)} samples from one fixed code (seed {args.seed + 1})"))
        return record


def write_measurements(folder, record: dict, found: dict, history: History, eval_s: float, settings: dict) -> None:
    """measurements.json: the measured generators, the GAN's history and how they were measured."""
    from ..measure import model_hashes

    common.write_record(dict(model=NAME, model_sha256=model_hashes(folder), command=record["command"], **found,
                             gan_history=history.rows, settings=settings, hardware=record["hardware"],
                             wall_time_s=round(eval_s, 1), date=time.strftime("%Y-%m-%d"), versions=record["versions"]),
                        folder / "measurements.json", show=("gan",))


def main(argv: list[str] | None = None) -> dict | None:
    """Train the GAN, then the VAE (every process of a launch); on the main process save, measure, record."""
    from safetensors.torch import save_file

    started = time.perf_counter()
    args = parse_args(argv)
    device = training_device()
    accelerator = common.accelerator(args, device)
    if accelerator.is_main_process:
        print(f"{NAME} recipe: GAN {args.gan_steps} steps, VAE {args.vae_steps} steps (batch {args.batch_size}), "
              f"profile {args.profile}, device {device}, writing to {args.out}")
    x0, labels = load_digits("train")
    classifier = train_digit_classifier()
    try:
        gan, raw, gan_losses, gan_s, history = train_gan(x0, labels, args, device, accelerator, classifier)
        if args.unconditional:
            return unconditional_finish(args, accelerator, gan, raw, gan_losses, gan_s, history, classifier, device,
                                        started)
        vae, vae_losses, vae_s = train_vae(x0, labels, args, device, accelerator)
    except TrainingInterrupted as err:
        raise common.interrupted(err, NAME) from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        gan.generator.save_pretrained(folder / "generator", safe_serialization=True)
        raw.critic.save_pretrained(folder / "critic", safe_serialization=True)
        vae.encoder.save_pretrained(folder / "vae_encoder", safe_serialization=True)
        vae.decoder.save_pretrained(folder / "vae_decoder", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in history.pictures.items()}, str(folder / "gan_history.safetensors"))
        t_eval = time.perf_counter()
        asked = torch.arange(NUM_DIGIT_CLASSES).repeat_interleave(args.per_label)
        found = None if args.skip_eval else {
            name: _measure(gen.generate(net, asked, torch.Generator().manual_seed(args.seed)), asked, classifier)
            for name, net in (("gan", gan.generator), ("gan_raw", raw.generator), ("vae", vae.decoder))}
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            NAME, args, SETTINGS, started=started, losses=gan_losses + vae_losses, train_s=gan_s + vae_s,
            device=device, eval_s=eval_s, batch_size=args.batch_size, lr=GAN["lr"],
            loop=dict(loops=dict(
                gan={**GAN, "optimizer": "AdamW, one for both networks", "lr_schedule": "cosine to 0",
                     "ema_max_decay": EMA_DECAY},
                vae={**common.loop_settings(ema_max_decay=EMA_DECAY), **VAE})),
            quality=None if found is None else {
                name: {k: found[name][k] for k in ("fidelity", "rough", "diversity", "class_coverage")}
                for name in found},
            data=data_record(),
            parameters=dict(generator=count_parameters(gan.generator), critic=count_parameters(raw.critic),
                            vae_encoder=count_parameters(vae.encoder), vae_decoder=count_parameters(vae.decoder)),
            gan=dict(steps=args.gan_steps, wall_time_s=round(gan_s, 1), first_loss=round(gan_losses[0], 5),
                     final_loss=round(sum(gan_losses[-100:]) / len(gan_losses[-100:]), 5),
                     loss="critic BCE + generator non-saturating loss (generators.gan_losses)"),
            vae=dict(steps=args.vae_steps, wall_time_s=round(vae_s, 1), first_loss=round(vae_losses[0], 5),
                     final_loss=round(sum(vae_losses[-100:]) / len(vae_losses[-100:]), 5),
                     loss=f"negative ELBO, Gaussian likelihood sigma {gen.VAE_SIGMA}, nats per digit up to a constant"),
            z_dim=gen.Z_DIM, saved_weights="EMA (generator, vae_encoder, vae_decoder); critic: the trained weights")
        if args.per_label != PER_LABEL:
            record["command"] += f" --per-label {args.per_label}"
            record["recipe"] = record["command"]
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            write_measurements(folder, record, found, history, eval_s, dict(
                per_label=args.per_label, seed=args.seed, sampler="generators.generate (one evaluation)",
                classifier="evaluation.train_digit_classifier", coverage="evaluation.class_coverage",
                history=f"the raw generator every {max(1, args.gan_steps // HISTORY_POINTS)} steps, "
                        f"{HISTORY_PER_LABEL} per digit from one fixed code (seed {args.seed + 1})",
                interval="Wilson 95% (shares), percentile bootstrap 95% (diversity)"))
        return record


if __name__ == "__main__":
    main()
