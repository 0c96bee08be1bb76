"""Recipes of lesson 14: the signs VAE and three text-to-image models that differ only in their tokenizer.

python -m diffusion_lessons.train signs-vae
    The lesson-06 AutoencoderKL architecture (models.build_signs_vae) trained as the vae recipe trains it, on
    the signs of the training words (signs.split_words); writes OUT/vae/ and OUT/recipe-vae.json, measured by
    reading its reconstructions of seen and unseen words.
python -m diffusion_lessons.train signs-word | signs-bpe | signs-char [--vae FOLDER]
                                                            [--prediction-type v_prediction|epsilon]
    The tokenizer of that kind (signs.build_tokenizer), a fresh CLIPTextModel for it (text.build_text_encoder)
    and models.build_signs_unet trained jointly, as shapes-t2i trains (recipes.shapes_t2i: the same loss,
    caption dropout, EMA and schedule), on the signs of the training words, with the same seed, steps and
    batch for all three, the U-Net predicting v (--prediction-type, default v_prediction; epsilon trains the
    noise-predicting twin, shipped for the character level as signs-char-eps). Writes a StableDiffusionPipeline
    folder with train_words.txt, recipe.json and measurements.json (spelling of seen and unseen words at 25
    steps). --vae: the signs-vae run's folder, or a trained signs model's (default: the newest
    ./runs/signs-vae-*); when it is a sibling of --out, OUT/vae is a relative link to its vae/ (how the shipped
    signs-word, signs-bpe and signs-char-eps share signs-char's VAE).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from .. import device as _device, latents, models, signs, t2i, text
from ..schedules import make_schedule
from ..training import TrainingInterrupted, training_device
from . import common, shapes_t2i, vae as vae_recipe

VAE_SETTINGS = {"quick": dict(steps=1500, batch_size=32), "full": dict(steps=5000, batch_size=64)}
SETTINGS = {  # the same for the three tokenizers
    "quick": dict(steps=1800, batch_size=64, words_per_set=64),
    "full": dict(steps=8000, batch_size=128, words_per_set=200),
}
N_VAE_TEST = 500
STEPS, GUIDANCE = 25, 7.5
PREDICTION_TYPE = "v_prediction"  # what the signs U-Nets predict (--prediction-type); the saved scheduler says so
OUTPUTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "model_index.json", "recipe.json",
           vae_recipe.RECORD, "measurements.json", "train_words.txt")


def model_name(kind: str, prediction_type: str = PREDICTION_TYPE) -> str:
    """The shipped folder's name for a signs model: signs-<kind>, with -eps when its U-Net predicts the noise
    (signs-char-eps)."""
    return f"signs-{kind}" + ("-eps" if prediction_type == "epsilon" else "")


def train_words(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training words, unseen words) of every signs recipe: signs.split_words(N_TRAIN_WORDS, seed)."""
    return signs.split_words(signs.N_TRAIN_WORDS, seed)


@torch.no_grad()
def vae_spelling(vae, seed: int, dev: torch.device, n: int = N_VAE_TEST) -> dict:
    """Read the VAE's reconstructions of n seen and n unseen words' signs: can the decoder draw the letters?"""
    seen, unseen = train_words(seed)
    found = {}
    for name, words in (("seen", seen), ("unseen", unseen)):
        chosen = signs.make_signs(n, words, _device.make_generator(seed + 3))
        x_hat = torch.cat([latents.reconstruct(vae, chosen.images[i:i + 250].to(dev)).cpu()
                           for i in range(0, n, 250)])
        score = signs.spelling(x_hat, chosen.words)
        found[name] = dict(letters=score["letters"].as_dict(), words=score["words"].as_dict(),
                           letters_any_order=score["letters_any_order"].as_dict(), mse=round(float(((x_hat - chosen.images) ** 2).mean()), 5))
    return found


def vae_main(argv: list[str] | None = None) -> dict | None:
    """Train the signs VAE, set its scaling factor, save, measure and write recipe-vae.json into --out."""
    started = time.perf_counter()
    args = common.parse(common.make_parser("signs-vae", __doc__, VAE_SETTINGS), argv, "signs-vae", VAE_SETTINGS,
                        outputs=(vae_recipe.OUTPUTS))
    dev = training_device()
    accelerator = common.accelerator(args, dev)
    seen, _ = train_words(args.seed)
    images = signs.render(seen)
    if accelerator.is_main_process:
        print(f"signs-vae recipe: {args.steps} steps on {len(seen)} signs, device {dev}, writing to {args.out}")
    try:
        vae, history, train_s = vae_recipe.train(args, dev, images, accelerator, build=models.build_signs_vae,
                                                 name="signs-vae", settings=VAE_SETTINGS)
    except TrainingInterrupted as err:
        raise common.interrupted(err, "signs-vae") from None
    if not accelerator.is_main_process:
        return None
    factor = latents.compute_scaling_factor(vae, images.to(dev), _device.make_generator(args.seed + 2))
    latents.set_scaling_factor(vae, factor)
    with common.publish(args.out, args.keep_checkpoints) as folder:
        vae.save_pretrained(folder / "vae", safe_serialization=True)
        t_eval = time.perf_counter()
        quality = None if args.skip_eval else vae_spelling(vae.eval(), args.seed, dev)
        record = common.run_record(
            "signs-vae", args, VAE_SETTINGS, started=started, losses=history, train_s=train_s, device=dev,
            quality=quality, eval_s=None if args.skip_eval else time.perf_counter() - t_eval,
            batch_size=args.batch_size, lr=vae_recipe.LR, loop=common.loop_settings(**vae_recipe.LOOP),
            data=dict(kind="signs (diffusion_lessons.signs.render) of the training words", n_train=len(seen),
                      word_seed=args.seed, image_size=[signs.HEIGHT, signs.WIDTH]),
            vae=dict(kind="diffusers AutoencoderKL", config=models.SIGNS_VAE_CONFIG,
                     parameters=models.count_parameters(vae)),
            kl_weight=vae_recipe.KL_WEIGHT, scaling_factor=factor,
            scaling_factor_from="1 / std of latents sampled from q(z|x) on the training signs")
        common.write_record(record, folder / vae_recipe.RECORD,
                            show=("steps", "wall_time_s", "final_loss", "scaling_factor", "quality"))
        return record


def vae_folder(args: argparse.Namespace, recipe: str = "signs-vae") -> Path:
    """--vae, else the newest ./runs/RECIPE-* that holds vae/ (RECIPE: signs-vae, or scenes-vae for lesson 15)."""
    found = [args.vae] if args.vae is not None else sorted(Path.cwd().glob(f"runs/{recipe}-*"), reverse=True)
    for folder in found:
        if (folder / "vae" / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"no trained VAE in {', '.join(map(str, found)) or './runs'}: run python -m "
                            f"diffusion_lessons.train {recipe} first and pass its folder with --vae")


def link_vae(folder_vae: Path, out: Path, folder: Path) -> bool:
    """When the VAE comes from a sibling of OUT (another shipped signs model), replace folder/vae by a relative
    link to it, so the three shipped models share one VAE on disk; returns whether it linked."""
    if folder_vae.resolve().parent != out.resolve().parent or (folder_vae / "vae").is_symlink():
        return False
    shutil.rmtree(folder / "vae")
    os.symlink(os.path.relpath((folder_vae / "vae").resolve(), out.resolve()), folder / "vae",
               target_is_directory=True)
    return True


@torch.no_grad()
def spell(pipe, words: list[str], seed: int, batch: int = 64) -> dict:
    """Generate one sign per word (25 steps, guidance 7.5, seeded) and score the spelling (signs.spelling)."""
    images = torch.cat([t2i.pipeline_images(pipe, [signs.caption(w) for w in words[i:i + batch]],
                                            _device.make_generator(seed + i), num_inference_steps=STEPS,
                                            guidance_scale=GUIDANCE).cpu() for i in range(0, len(words), batch)])
    return dict(images=images, **signs.spelling(images, words))


def pick_words(words: list[str], n: int, seed: int) -> list[str]:
    """n distinct words drawn from words by the seed (the measured sets)."""
    order = torch.randperm(len(words), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return [words[i] for i in order]


def measure(pipe, seed: int, n: int) -> dict:
    """Spelling of n seen and n unseen words: letter accuracy, word accuracy, per position."""
    seen, unseen = train_words(seed)
    found = {}
    for name, words, offset in (("seen", seen, 11), ("unseen", unseen, 12)):
        chosen = pick_words(words, n, seed + offset)
        score = spell(pipe, chosen, seed + offset)
        found[name] = dict(letters=score["letters"].as_dict(), words=score["words"].as_dict(),
                           letters_any_order=score["letters_any_order"].as_dict(),
                           positions=[p.as_dict() for p in score["positions"]], asked=chosen, read=score["read"])
    found["settings"] = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, words_per_set=n,
                             images_per_word=1)
    return found


def t2i_main(kind: str, argv: list[str] | None = None) -> dict | None:
    """Train the signs model with the `kind` tokenizer; save, measure and write the records into --out."""
    name = f"signs-{kind}"
    started = time.perf_counter()
    parser = common.make_parser(name, __doc__, SETTINGS)
    parser.add_argument("--vae", type=Path, default=None,
                        help="the signs-vae run's folder (holds vae/); default: the newest ./runs/signs-vae-*")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="re-measure the model saved in --out (no training): measurements.json and the "
                             "record's quality are rewritten")
    shapes_t2i.add_prediction_type(parser, PREDICTION_TYPE)
    args = common.parse(parser, argv, name, SETTINGS, out_needed_by="evaluate_only", outputs=OUTPUTS)
    if args.evaluate_only:
        return evaluate_only(args, name)
    dev, accelerator, generator = shapes_t2i.start(args, name, f", predicting {args.prediction_type}")
    from diffusers import AutoencoderKL

    folder_vae = vae_folder(args)
    vae = AutoencoderKL.from_pretrained(folder_vae / "vae", use_safetensors=True, local_files_only=True)
    seen, _ = train_words(args.seed)
    tokenizer = signs.build_tokenizer(kind, seen)
    trained = torch.nn.ModuleDict(dict(text_encoder=text.build_text_encoder(tokenizer, seed=args.seed),
                                       unet=models.build_signs_unet(seed=args.seed)))
    parts = dict(vae=vae.to(dev).eval().requires_grad_(False), vae_folder=folder_vae, tokenizer=tokenizer,
                 trained=trained.to(dev), schedule=make_schedule(shapes_t2i.NOISE_SCHEDULE))
    data = signs.SignsData(signs.render(seen), seen, [signs.caption(w) for w in seen])
    try:
        averaged, history, train_s = shapes_t2i.train(parts, args, dev, generator, accelerator, shapes=data,
                                                      name=name, settings=SETTINGS,
                                                      prediction_type=args.prediction_type)
    except TrainingInterrupted as err:
        raise common.interrupted(err, name) from None
    if not accelerator.is_main_process:
        return None
    with common.publish(args.out, args.keep_checkpoints) as folder:
        shapes_t2i.save(parts, averaged, folder, args.prediction_type)
        link_vae(folder_vae, args.out, folder)
        (folder / "train_words.txt").write_text("\n".join(seen) + "\n")
        t_eval = time.perf_counter()
        pipe = t2i.load_pipeline(folder, dev)
        found = None if args.skip_eval else measure(pipe, args.seed, args.words_per_set)
        eval_s = None if args.skip_eval else time.perf_counter() - t_eval
        quality = None if found is None else _quality(found)
        record = common.run_record(
            name, args, SETTINGS, started=started, losses=history, train_s=train_s, device=dev, quality=quality,
            eval_s=eval_s, batch_size=args.batch_size, lr=shapes_t2i.LR,
            options=f"--prediction-type {args.prediction_type}",
            prediction_type=args.prediction_type,
            loop=common.loop_settings(**shapes_t2i.LOOP, ema_max_decay=shapes_t2i.EMA_DECAY),
            data=dict(kind="signs (diffusion_lessons.signs.render), one per training word", n_train=len(seen),
                      word_seed=args.seed, image_size=[signs.HEIGHT, signs.WIDTH],
                      latents="4x8x16, scaled VAE samples", train_words="train_words.txt"),
            models=dict(unet=dict(config=models.SIGNS_UNET_CONFIG, parameters=models.count_parameters(pipe.unet)),
                        text_encoder=dict(config=text.TEXT_ENCODER_CONFIG,
                                          parameters=models.count_parameters(pipe.text_encoder)),
                        tokenizer=dict(kind=kind, vocab_size=len(tokenizer), max_length=signs.MAX_LENGTH),
                        scheduler="DDIMScheduler, scaled_linear 0.00085..0.012, 1000 train steps, "
                                  f"prediction_type {args.prediction_type}"),
            caption_dropout=shapes_t2i.CAPTION_DROPOUT)
        common.write_record(record, folder / "recipe.json")
        if found is not None:
            common.write_measurements(folder, model_name(kind, args.prediction_type), record, found, eval_s, show=())
            print(json.dumps(quality, indent=1))
        return record


def _quality(found: dict) -> dict:
    return {k: {m: v[m] for m in ("letters", "words", "letters_any_order")} for k, v in found.items()
            if k != "settings"}


def evaluate_only(args: argparse.Namespace, name: str) -> dict:
    """--evaluate-only: measure the pipeline saved in --out again (same words, seeds and settings) and rewrite
    its measurements.json and its record's quality, with the time it took."""
    kind = name.removeprefix("signs-")
    return common.evaluate_pipeline(args, name, lambda pipe, seed: measure(pipe, seed, args.words_per_set),
                                    _quality, f"--words-per-set {args.words_per_set}",
                                    model=lambda record: model_name(kind, record["prediction_type"]))


def main_word(argv: list[str] | None = None) -> dict | None:
    return t2i_main("word", argv)


def main_bpe(argv: list[str] | None = None) -> dict | None:
    return t2i_main("bpe", argv)


def main_char(argv: list[str] | None = None) -> dict | None:
    return t2i_main("char", argv)
