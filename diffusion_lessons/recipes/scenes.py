"""Recipes of lesson 15: the scenes VAE and a text-to-image model on scenes, with a causal or a bidirectional
text encoder.

python -m diffusion_lessons.train scenes-vae
    The shipped shapes-t2i VAE (lesson 06's AutoencoderKL, fully convolutional) fine-tuned on 64 x 64 scenes
    (scenes.make_scenes), so the latents are 4x16x16; writes OUT/vae/ and OUT/recipe-vae.json, measured by
    reading its reconstructions of held-out scenes with the scenes reader.
python -m diffusion_lessons.train scenes-t2i [--encoder bidirectional|causal] [--encoder-width W]
                                            [--conditioning sequence|pooled] [--vae FOLDER]
                                            [--prediction-type v_prediction|epsilon] [--zero-terminal-snr]
    The scenes tokenizer (word level, scenes.caption_words), a fresh text encoder of that kind
    (text.build_text_encoder: a causal CLIPTextModel or a bidirectional T5EncoderModel of the same width, depth
    and heads) and models.build_scenes_unet trained jointly as shapes-t2i trains (caption dropout, EMA and
    schedule), the U-Net predicting v (--prediction-type, default v_prediction; the saved scheduler says so:
    at high noise v is almost -z0, so the loss asks where the shapes go, which an eps loss barely feels), on
    --n-train scenes of all four caption kinds, with the same seed, steps and data
    for both encoders. Writes a StableDiffusionPipeline folder with recipe.json and measurements.json (binding,
    relations, counting and single shapes at 25 steps; the guidance sweep; the reworded captions). --vae: the
    scenes-vae run's folder or a trained scenes model's (default: the newest ./runs/scenes-vae-*); when it is a
    sibling of --out, OUT/vae is a relative link to its vae/ (the shipped causal model shares scenes-t2i's).
    --encoder-width (default 64): the text encoder's width (feed-forward 4 x width, the U-Net's
    cross_attention_dim with it), everything else the same: the encoder-size experiment (scenes-t2i-w256).
    --conditioning (default sequence): what the U-Net's cross-attention reads, the encoder's token sequence or
    pooled, the mean of its token states as one vector (text.pool_embeddings), everything else the same: the
    pooled-vector experiment (scenes-t2i-pooled, drawn with t2i.pipeline_images(..., pooled=True)).
    --zero-terminal-snr (with v_prediction only): train on the schedule rescaled so that its last step is pure
    noise, and save a scheduler that samples from there (trailing timesteps; Lin et al. 2024), so no trace of the
    picture is left at the first step for the U-Net to lean on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import device as _device, latents, models, scenes, stats, t2i, text
from ..pretrained import ROOT as PRETRAINED
from ..schedules import make_schedule
from ..training import TrainingInterrupted, training_device
from . import common, shapes_t2i, signs as signs_recipe, vae as vae_recipe

VAE_SETTINGS = {"quick": dict(steps=500, batch_size=32, n_train=10000),
                "full": dict(steps=3000, batch_size=64, n_train=50000)}
SETTINGS = {  # the same for both encoders
    "quick": dict(steps=2400, batch_size=64, n_train=10000, prompts_per_kind=64),
    "full": dict(steps=10000, batch_size=128, n_train=50000, prompts_per_kind=200),
}
N_VAE_TEST = 400
STEPS, GUIDANCE = 25, 7.5
GUIDANCE_SWEEP = (1.0, 3.0, 7.5, 12.0)
MEASURED_KINDS = ("binding", "relation", "counting")
CONDITIONINGS = ("sequence", "pooled")
PREDICTION_TYPE = "v_prediction"  # what the U-Net predicts (--prediction-type); the saved scheduler says so
OUTPUTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "model_index.json", "recipe.json",
           vae_recipe.RECORD, "measurements.json")
BASE_VAE = PRETRAINED / "shapes-t2i" / "vae"


def build_vae_from_shapes(seed: int | None = 0):
    """The shipped shapes-t2i VAE, the starting point of the scenes VAE (seed unused: nothing is random)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(BASE_VAE, use_safetensors=True, local_files_only=True)


@torch.no_grad()
def vae_reading(vae, seed: int, dev: torch.device, n: int = N_VAE_TEST) -> dict:
    """Read the VAE's reconstructions of n held-out scenes: can the decoder draw what the captions ask?"""
    test = scenes.make_scenes(n, generator=_device.make_generator(seed + 1))
    x_hat = torch.cat([latents.reconstruct(vae, test.images[i:i + 200].to(dev)).cpu() for i in range(0, n, 200)])
    found = {k: {m: p.as_dict() for m, p in v.items()} for k, v in scenes.score(x_hat, test.scenes).items()}
    return dict(reader_on_reconstructions=found, n_test=n, test_seed=seed + 1,
                test_mse=round(float(((x_hat - test.images) ** 2).mean()), 5))


def vae_main(argv: list[str] | None = None) -> dict | None:
    """Fine-tune the shapes VAE on scenes, set its scaling factor, save, measure, write recipe-vae.json."""
    started = time.perf_counter()
    args = common.parse(common.make_parser("scenes-vae", __doc__, VAE_SETTINGS), argv, "scenes-vae", VAE_SETTINGS,
                        outputs=vae_recipe.OUTPUTS)
    dev = training_device()
    accelerator = common.accelerator(args, dev)
    images = scenes.make_scenes(args.n_train, generator=_device.make_generator(args.seed)).images
    if accelerator.is_main_process:
        print(f"scenes-vae recipe: {args.steps} steps on {len(images)} scenes from {BASE_VAE}, device {dev}, "
              f"writing to {args.out}")
    try:
        vae, history, train_s = vae_recipe.train(args, dev, images, accelerator, build=build_vae_from_shapes,
                                                 name="scenes-vae", settings=VAE_SETTINGS)
    except TrainingInterrupted as err:
        raise common.interrupted(err, "scenes-vae") from None
    if not accelerator.is_main_process:
        return None
    factor = latents.compute_scaling_factor(vae, images[:4000].to(dev), _device.make_generator(args.seed + 2))
    latents.set_scaling_factor(vae, factor)
    vae.register_to_config(sample_size=scenes.SIZE)
    with common.publish(args.out, args.keep_checkpoints) as folder:
        vae.save_pretrained(folder / "vae", safe_serialization=True)
        t_eval = time.perf_counter()
        quality = None if args.skip_eval else vae_reading(vae.eval(), args.seed, dev)
        record = common.run_record(
            "scenes-vae", args, VAE_SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
            quality=quality, eval_s=None if args.skip_eval else time.perf_counter() - t_eval,
            batch_size=args.batch_size, lr=vae_recipe.LR, loop=common.loop_settings(**vae_recipe.LOOP),
            data=dict(kind="scenes (diffusion_lessons.scenes.make_scenes), all four caption kinds",
                      n_train=args.n_train, train_seed=args.seed, image_size=scenes.SIZE),
            vae=dict(kind="diffusers AutoencoderKL", config=models.SHAPES_VAE_CONFIG, started_from=
                     "diffusion_lessons/pretrained/shapes-t2i/vae", parameters=models.count_parameters(vae)),
            kl_weight=vae_recipe.KL_WEIGHT, scaling_factor=factor,
            scaling_factor_from="1 / std of latents sampled from q(z|x) on the first 4000 training scenes")
        common.write_record(record, folder / vae_recipe.RECORD,
                            show=("steps", "wall_time_s", "final_loss", "scaling_factor", "quality"))
        return record


def test_scenes(kind: str, n: int, seed: int) -> list:
    """The n measured scenes of a kind, drawn by the seed (the same for every model)."""
    generator = _device.make_generator(seed + 100 + scenes.KINDS.index(kind))
    return [scenes.random_scene(kind, generator) for _ in range(n)]


@torch.no_grad()
def draw(pipe, prompts: list[str], seed: int, guidance_scale: float = GUIDANCE, batch: int = 64,
         pooled: bool = False) -> torch.Tensor:
    """One picture per prompt (25 steps, seeded per batch), in [-1, 1]; pooled: the pooled-vector model's way."""
    return torch.cat([t2i.pipeline_images(pipe, prompts[i:i + batch], _device.make_generator(seed + i),
                                          num_inference_steps=STEPS, guidance_scale=guidance_scale,
                                          pooled=pooled).cpu()
                      for i in range(0, len(prompts), batch)])


def rates(images: torch.Tensor, chosen: list) -> dict:
    """The reader's verdicts on pictures of the chosen scenes: each check's share (Wilson 95%), and the
    verdicts themselves (lists of 0/1, for the lesson's own breakdowns); for two-shape scenes also 'mistake',
    each picture's scenes.object_mistake."""
    reads = scenes.read_scenes(images)
    checks = [scenes.check(r, s) for r, s in zip(reads, chosen)]
    found = {key: dict(**stats.proportion([c[key] for c in checks]).as_dict(), each=[int(c[key]) for c in checks])
             for key in checks[0]}
    if all(s.kind in ("binding", "relation") for s in chosen):
        found["mistake"] = [scenes.object_mistake(r, s) for r, s in zip(reads, chosen)]
    return found


def measure(pipe, seed: int, n: int, pooled: bool = False) -> dict:
    """The lesson-15 experiments on n prompts per kind (n // 2 single-shape prompts): everything right, colors
    swapped, relations, counts, at guidance 7.5 and across GUIDANCE_SWEEP; the same pictures asked with the
    captions reworded (binding in the other order, relations from the other side). pooled: draw as the
    pooled-vector model is drawn."""
    chosen = {kind: test_scenes(kind, n // 2 if kind == "single" else n, seed) for kind in scenes.KINDS}
    found: dict = dict(main={}, guidance={}, reworded={})
    for kind, those in chosen.items():
        found["main"][kind] = rates(draw(pipe, [s.caption for s in those], seed, pooled=pooled), those)
        found["main"][kind]["captions"] = [s.caption for s in those]
    for g in GUIDANCE_SWEEP:
        found["guidance"][str(g)] = {
            kind: {k: v for k, v in (found["main"][kind] if g == GUIDANCE else
                                     rates(draw(pipe, [s.caption for s in chosen[kind]], seed, g, pooled=pooled),
                                           chosen[kind]))["right"].items() if k != "each"}
            for kind in MEASURED_KINDS}
    for kind in ("binding", "relation"):
        other = [scenes.reworded(s) for s in chosen[kind]]
        found["reworded"][kind] = rates(draw(pipe, [s.caption for s in other], seed, pooled=pooled), other)
        found["reworded"][kind]["captions"] = [s.caption for s in other]
    found["settings"] = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, prompts_per_kind=n,
                             single_prompts=n // 2, images_per_prompt=1, test_seed=seed + 100)
    return found


def quality(found: dict) -> dict:
    """The record's summary: share right per kind (and swapped) at 25 steps, guidance 7.5."""
    return {kind: {m: {k: v for k, v in found["main"][kind][m].items() if k != "each"}
                   for m in ("right", "swapped") if m in found["main"][kind]} for kind in scenes.KINDS}


def model_name(encoder: str, width: int = 64, conditioning: str = "sequence") -> str:
    """The shipped folder's name for a scenes model: scenes-t2i (bidirectional), scenes-t2i-causal, a
    -w<width> suffix for another encoder width (scenes-t2i-w256) and -pooled for pooled conditioning."""
    return ("scenes-t2i" if encoder == "bidirectional" else f"scenes-t2i-{encoder}") + (
        "" if width == text.TEXT_ENCODER_CONFIG["hidden_size"] else f"-w{width}") + (
        "" if conditioning == "sequence" else f"-{conditioning}")


def main(argv: list[str] | None = None) -> dict | None:
    """Train the scenes model with the --encoder kind; save, measure and write the records into --out."""
    name = "scenes-t2i"
    started = time.perf_counter()
    parser = common.make_parser(name, __doc__, SETTINGS)
    parser.add_argument("--encoder", choices=text.ENCODERS, default="bidirectional",
                        help="the text encoder: bidirectional (T5EncoderModel, default) or causal (CLIPTextModel)")
    parser.add_argument("--encoder-width", type=int, default=text.TEXT_ENCODER_CONFIG["hidden_size"],
                        help="the text encoder's width, a multiple of 4 (default 64; the size experiment: 256)")
    parser.add_argument("--conditioning", choices=CONDITIONINGS, default="sequence",
                        help="what the U-Net reads: the token sequence (default) or its pooled vector (the mean of "
                             "the token states; the pooled-vector experiment)")
    shapes_t2i.add_prediction_type(parser, PREDICTION_TYPE)
    shapes_t2i.add_zero_terminal_snr(parser)
    parser.add_argument("--vae", type=Path, default=None,
                        help="the scenes-vae run's folder (holds vae/); default: the newest ./runs/scenes-vae-*")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-measure the model saved in --out (no training): measurements.json and the "
                             "record's quality are rewritten")
    args = common.parse(parser, argv, name, SETTINGS, out_needed_by="evaluate_only", outputs=OUTPUTS)
    if args.encoder_width < 4 or args.encoder_width % 4:
        parser.error(f"--encoder-width must be a positive multiple of 4, got {args.encoder_width}")
    shapes_t2i.check_zero_terminal_snr(parser, args)
    if args.evaluate_only:
        return evaluate_only(args, name)
    dev, accelerator, generator = shapes_t2i.start(args, name, f", {args.encoder} text encoder, width "
                                                                 f"{args.encoder_width}, {args.conditioning}")
    pooled = args.conditioning == "pooled"
    from diffusers import AutoencoderKL

    folder_vae = signs_recipe.vae_folder(args, "scenes-vae")
    vae = AutoencoderKL.from_pretrained(folder_vae / "vae", use_safetensors=True, local_files_only=True)
    tokenizer = text.build_tokenizer(scenes.caption_words())
    trained = torch.nn.ModuleDict(dict(
        text_encoder=text.build_text_encoder(tokenizer, seed=args.seed, kind=args.encoder, width=args.encoder_width),
        unet=models.build_scenes_unet(seed=args.seed, cross_attention_dim=args.encoder_width)))
    parts = dict(vae=vae.to(dev).eval().requires_grad_(False), vae_folder=folder_vae, tokenizer=tokenizer,
                 trained=trained.to(dev),
                 schedule=make_schedule(shapes_t2i.NOISE_SCHEDULE, zero_terminal_snr=args.zero_terminal_snr))
    data = scenes.make_scenes(args.n_train, generator=_device.make_generator(args.seed))
    try:
        averaged, history, train_s = shapes_t2i.train(parts, args, dev, generator, accelerator, shapes=data,
                                                      name=name, settings=SETTINGS, pooled=pooled,
                                                      prediction_type=args.prediction_type)
    except TrainingInterrupted as err:
        raise common.interrupted(err, name) from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        shapes_t2i.save(parts, averaged, folder, args.prediction_type, args.zero_terminal_snr)
        signs_recipe.link_vae(folder_vae, args.out, folder)
        t_eval = time.perf_counter()
        pipe = t2i.load_pipeline(folder, dev)
        found = None if args.skip_eval else measure(pipe, args.seed, args.prompts_per_kind, pooled)
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        record = common.run_record(
            name, args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
            quality=None if found is None else quality(found), eval_s=eval_s, batch_size=args.batch_size,
            lr=shapes_t2i.LR, loop=common.loop_settings(**shapes_t2i.LOOP, ema_max_decay=shapes_t2i.EMA_DECAY),
            data=dict(kind="scenes (diffusion_lessons.scenes.make_scenes), the four caption kinds equally often",
                      n_train=args.n_train, train_seed=args.seed, image_size=scenes.SIZE,
                      latents="4x16x16, scaled VAE samples"),
            options=f"--encoder {args.encoder} --encoder-width {args.encoder_width}"
                    + ("" if not pooled else f" --conditioning {args.conditioning}")
                    + f" --prediction-type {args.prediction_type}"
                    + (" --zero-terminal-snr" if args.zero_terminal_snr else ""),
            encoder=args.encoder, encoder_width=args.encoder_width, conditioning=args.conditioning,
            prediction_type=args.prediction_type, zero_terminal_snr=args.zero_terminal_snr,
            loss=f"MSE to {args.prediction_type} (training.loss_target)",
            models=dict(unet=dict(config=dict(models.SCENES_UNET_CONFIG, cross_attention_dim=args.encoder_width),
                                  parameters=models.count_parameters(pipe.unet)),
                        text_encoder=dict(kind=args.encoder, cls=type(pipe.text_encoder).__name__,
                                          config=dict(text.TEXT_ENCODER_CONFIG, hidden_size=args.encoder_width,
                                                      intermediate_size=4 * args.encoder_width,
                                                      projection_dim=args.encoder_width),
                                          parameters=models.count_parameters(pipe.text_encoder)),
                        tokenizer=dict(kind="word level", vocab_size=len(tokenizer),
                                       max_length=tokenizer.model_max_length),
                        scheduler="DDIMScheduler, scaled_linear 0.00085..0.012, 1000 train steps"
                                  + (" rescaled to zero terminal SNR, trailing timesteps" if args.zero_terminal_snr
                                     else "") + f", prediction_type {args.prediction_type}"),
            caption_dropout=shapes_t2i.CAPTION_DROPOUT)
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            common.write_measurements(folder, model_name(args.encoder, args.encoder_width, args.conditioning),
                                      record, found, eval_s,
                                      show=())
            print(json.dumps(record["quality"], indent=1))
        return record


def evaluate_only(args, name: str) -> dict:
    """--evaluate-only: measure the pipeline saved in --out again and rewrite its records."""
    def measure_saved(pipe, seed: int) -> dict:
        record = json.loads((Path(args.out) / "recipe.json").read_text())
        return measure(pipe, seed, args.prompts_per_kind, record.get("conditioning", "sequence") == "pooled")

    return common.evaluate_pipeline(args, name, measure_saved, quality, f"--prompts-per-kind {args.prompts_per_kind}",
                                    model=lambda record: model_name(record["encoder"], record.get("encoder_width", 64),
                                                                    record.get("conditioning", "sequence")))
