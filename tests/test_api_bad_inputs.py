"""Every public function of the package refuses bad input with a clear error of its own.

The walk finds every public callable (the names in each module's __all__, else every public function and
class the module defines) and requires it in BAD_INPUTS, a table of calls with one bad argument each, or in
one of the short lists of callables without arguments to check (NO_ARGUMENTS, RECORDS, ANY_VALUES, CLI). A
new public function therefore fails test_every_public_callable_is_in_the_table until it gets a row. Each
row must raise a ValueError or TypeError whose message names the argument, raised from the package's own
code (the innermost frame of the traceback is a file of diffusion_lessons, not torch, diffusers or numpy).

Below the table, one test for each problem an earlier probe of bad inputs found."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pkgutil
import re
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import diffusion_lessons
from diffusion_lessons import (attention, bias, book, control, data, device, dit, editing, evaluation, exercises, flow, generators,
                               guidance, inpainting, latents, loop, lora, measure, memorization, scenes, signs, models, parameterisation, plotting, pretrained,
                               samplers, sampling, schedules, sigmas, solvers, stats, t2i, text, thresholding, toys,
                               training, widgets)

PACKAGE = Path(diffusion_lessons.__file__).parent
DIGITS = PACKAGE / "pretrained" / "digits"
NAN, INF = float("nan"), float("inf")


# ---- the walk: every public callable of every module ---------------------------------------------------------

def public_modules() -> list:
    """The package and its modules (not the sub-packages: recipes are reached through train.main, the
    exercise bank through exercises.coding_exercise)."""
    found = [diffusion_lessons]
    for info in pkgutil.iter_modules(diffusion_lessons.__path__):
        if not info.ispkg and not info.name.startswith("_"):
            found.append(importlib.import_module(f"diffusion_lessons.{info.name}"))
    return found


def public_callables() -> dict[str, object]:
    """'module.name' -> callable, under the module that defines it (a re-export counts once)."""
    found = {}
    for module in public_modules():
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n, obj in vars(module).items() if not n.startswith("_")
                     and getattr(obj, "__module__", None) == module.__name__]
        for name in names:
            obj = getattr(module, name)
            if isinstance(obj, type) or inspect.isfunction(inspect.unwrap(obj)) if callable(obj) else False:
                home = obj.__module__.removeprefix("diffusion_lessons.")
                found[f"{home}.{obj.__qualname__}"] = obj
    return found


# ---- small inputs the rows share (built once, on first use) --------------------------------------------------

@functools.cache
def fx() -> SimpleNamespace:
    torch.manual_seed(0)
    ns = SimpleNamespace()
    ns.schedule = schedules.make_schedule("linear", 100)
    ns.tiny = models.TinyUNet(channels=(8, 8))
    ns.unet = models.build_digits_unet(seed=0)
    ns.x = torch.randn(2, 1, 16, 16)
    ns.other = torch.randn(2, 1, 8, 8)
    ns.nan = ns.x.clone()
    ns.nan[0, 0, 0, 0] = NAN
    ns.labels = torch.tensor([1, 2])
    ns.t = torch.tensor([3, 4])
    ns.denoise = lambda x, t, cond: torch.zeros_like(x)
    ns.vae = models.build_shapes_vae(seed=0)
    ns.images = torch.rand(2, 3, 32, 32) * 2 - 1
    ns.tokenizer = text.build_tokenizer()
    ns.encoder = text.build_text_encoder(ns.tokenizer, seed=0)
    ns.pipe = t2i.assemble_pipeline(ns.vae, ns.tokenizer, ns.encoder, models.build_shapes_unet(seed=0))
    ns.points = torch.randn(8, 2)
    ns.paths = torch.randn(4, 8, 2)
    ns.mlp = toys.VelocityMLP(width=8, depth=1, time_dim=4)
    ns.optimizer = torch.optim.SGD(ns.tiny.parameters(), lr=0.1)
    ns.fig = plotting.new_figure()
    from diffusers import FlowMatchEulerDiscreteScheduler
    ns.flow_scheduler = FlowMatchEulerDiscreteScheduler()
    return ns


def case(arg: str, call, missing: str | None = None) -> tuple[str, object, str | None]:
    """One row: calling call() must raise a ValueError or TypeError that names arg. missing: the row passes a
    path that does not exist, and a FileNotFoundError naming arg and that path is the clear error."""
    return arg, call, missing


F = fx  # rows read F().name; nothing is built until a row runs

BAD_INPUTS: dict[str, list] = {
    # data
    "data.load_photo": [case("size", lambda: data.load_photo(size=0)), case("name", lambda: data.load_photo(name=3)),
                        case("name", lambda: data.load_photo(name="no_such_photo.jpg"))],
    "data.from_pil": [case("image", lambda: data.from_pil("photo.jpg"))],
    "data.to_pil": [case("x", lambda: data.to_pil("x")), case("x", lambda: data.to_pil(torch.zeros(2, 3, 4, 4)))],
    "data.load_digits": [case("split", lambda: data.load_digits("dev")),
                         case("size", lambda: data.load_digits(size=0))],
    "data.shape_caption": [case("shape", lambda: data.shape_caption("hexagon", "red", "white")),
                           case("color", lambda: data.shape_caption("circle", 3, "white"))],
    "data.parse_caption": [case("caption", lambda: data.parse_caption(3))],
    "data.shape_coverage": [case("image_size", lambda: data.shape_coverage(torch.zeros(1, dtype=torch.long),
                                                                            torch.zeros(1, 3), 0)),
                            case("shape_idx", lambda: data.shape_coverage("circle", torch.zeros(1, 3), 32))],
    "data.render_shapes": [case("image_size", lambda: data.render_shapes(*[torch.zeros(1, dtype=torch.long)] * 3,
                                                                          torch.zeros(1, 3), image_size=0))],
    "data.place_shapes": [case("image_size", lambda: data.place_shapes(torch.zeros(1, dtype=torch.long),
                                                                        torch.zeros(1, dtype=torch.long), 0))],
    "data.make_shapes": [case("n", lambda: data.make_shapes(0)), case("n", lambda: data.make_shapes(2.5)),
                         case("caption_style", lambda: data.make_shapes(2, caption_style="poetic"))],
    # device
    "device.make_generator": [case("seed", lambda: device.make_generator("0")),
                              case("seed", lambda: device.make_generator(2**70)),
                              case("device", lambda: device.make_generator(0, "gpu")),
                              case("device", lambda: device.make_generator(0, 0))],
    "device.seed_everything": [case("seed", lambda: device.seed_everything(1.5)),
                               case("seed", lambda: device.seed_everything(-1)),
                               case("seed", lambda: device.seed_everything(2**64))],
    # evaluation
    "evaluation.DigitClassifier": [case("size", lambda: evaluation.DigitClassifier(None, 0, 1.0))],
    "evaluation.train_digit_classifier": [case("size", lambda: evaluation.train_digit_classifier(0))],
    "evaluation.class_coverage": [case("labels", lambda: evaluation.class_coverage(F().x, [1, 2, 3])),
                                  case("threshold", lambda: evaluation.class_coverage(F().x, F().labels, threshold=2)),
                                  case("classifier", lambda: evaluation.class_coverage(F().x, F().labels, "svm"))],
    "evaluation.fidelity": [case("classifier", lambda: evaluation.fidelity("svm", F().x, F().labels)),
                            case("labels", lambda: evaluation.fidelity(evaluation.DigitClassifier(None, 16, 1.0),
                                                                       F().x, [1, 2, 3]))],
    "evaluation.mean_pairwise_distance": [case("images", lambda: evaluation.mean_pairwise_distance("x")),
                                          case("images", lambda: evaluation.mean_pairwise_distance(F().x[:1]))],
    "evaluation.digit_features": [case("dims", lambda: evaluation.digit_features(F().x, dims=0)),
                                  case("images", lambda: evaluation.digit_features([1, 2]))],
    "evaluation.within_class_diversity": [
        case("space", lambda: evaluation.within_class_diversity(F().x, F().labels, space="pixels?")),
        case("labels", lambda: evaluation.within_class_diversity(F().x, [1, 2, 3]))],
    "evaluation.diversity_per_sample": [
        case("space", lambda: evaluation.diversity_per_sample(F().x, F().labels, space="x")),
        case("images", lambda: evaluation.diversity_per_sample("x", F().labels))],
    "evaluation.within_class_diversity_estimate": [
        case("seed", lambda: evaluation.within_class_diversity_estimate(F().x, [1, 1], seed=-1))],
    "evaluation.real_roughness": [case("size", lambda: evaluation.real_roughness(0))],
    "evaluation.roughness": [case("images", lambda: evaluation.roughness("x")),
                             case("images", lambda: evaluation.roughness(torch.zeros(16, 16)))],
    "evaluation.rough_mask": [case("images", lambda: evaluation.rough_mask([0.0]))],
    "evaluation.rough_share": [case("images", lambda: evaluation.rough_share(None))],
    "evaluation.evaluate_digits_model": [
        case("per_label", lambda: evaluation.evaluate_digits_model(F().tiny, F().schedule, per_label=0)),
        case("steps", lambda: evaluation.evaluate_digits_model(F().tiny, F().schedule, steps=0)),
        case("guidance_scale", lambda: evaluation.evaluate_digits_model(F().tiny, F().schedule, guidance_scale=NAN)),
        case("seed", lambda: evaluation.evaluate_digits_model(F().tiny, F().schedule, seed=-1)),
        case("model", lambda: evaluation.evaluate_digits_model("unet", F().schedule))],
    "evaluation.measure_digits": [case("labels", lambda: evaluation.measure_digits(F().x, [1, 2, 3])),
                                  case("images", lambda: evaluation.measure_digits("x", [1]))],
    "evaluation.read_shapes": [case("images", lambda: evaluation.read_shapes("x")),
                               case("images", lambda: evaluation.read_shapes(F().x))],
    "evaluation.read_accuracy": [case("wanted", lambda: evaluation.read_accuracy([{}], [{}, {}])),
                                 case("reads", lambda: evaluation.read_accuracy("x", [{}]))],
    "evaluation.reader_accuracy": [case("shapes", lambda: evaluation.reader_accuracy("x"))],
    "evaluation.prompt_adherence": [case("prompts", lambda: evaluation.prompt_adherence(F().pipe, [])),
                                    case("images_per_prompt",
                                         lambda: evaluation.prompt_adherence(F().pipe, ["a red circle"], 0))],
    # exercises
    "exercises.check": [case("rtol", lambda: exercises.check(1.0, 1.0, rtol=-1)),
                        case("name", lambda: exercises.check(1.0, 1.0, name=3))],
    "exercises.coding_exercises": [case("lesson", lambda: exercises.coding_exercises(99)),
                                   case("lesson", lambda: exercises.coding_exercises("02"))],
    "exercises.coding_exercise": [case("name", lambda: exercises.coding_exercise(2, "no such exercise"))],
    # flow
    "flow.interpolate": [case("noise", lambda: flow.interpolate(F().x, F().other, 0.5)),
                         case("sigma", lambda: flow.interpolate(F().x, F().x, "half"))],
    "flow.velocity_target": [case("x0", lambda: flow.velocity_target("x", F().x))],
    "flow.x0_from_velocity": [case("velocity", lambda: flow.x0_from_velocity(F().x, F().other, 0.5))],
    "flow.noise_from_velocity": [case("velocity", lambda: flow.noise_from_velocity(F().x, F().other, 0.5))],
    "flow.flow_euler_step": [case("sigma", lambda: flow.flow_euler_step(F().x, F().x, -1.0, 0.0)),
                             case("sigma_next", lambda: flow.flow_euler_step(F().x, F().x, 0.5, 0.9))],
    "flow.flow_sigma_from_alpha_bar": [case("abar", lambda: flow.flow_sigma_from_alpha_bar(2.0))],
    "flow.alpha_bar_from_flow_sigma": [case("sigma", lambda: flow.alpha_bar_from_flow_sigma(1.5))],
    "flow.to_flow_state": [case("abar", lambda: flow.to_flow_state(F().x, -0.5))],
    "flow.draw_flow_batch": [case("p_uncond", lambda: flow.draw_flow_batch(F().x, labels=F().labels, p_uncond=2.0)),
                             case("sigma_kind", lambda: flow.draw_flow_batch(F().x, sigma_kind="beta"))],
    "flow.flow_matching_loss": [case("denoise", lambda: flow.flow_matching_loss("unet", F().x, F().x,
                                                                                torch.rand(2)))],
    "flow.flow_batch_fn": [case("batch_size", lambda: flow.flow_batch_fn(F().x, 0))],
    "flow.flow_loss_fn": [case("denoise", lambda: flow.flow_loss_fn(None)),
                          case("timestep_scale", lambda: flow.flow_loss_fn(F().denoise, timestep_scale=0))],
    "flow.flow_loop": [case("sigmas", lambda: flow.flow_loop(F().denoise, F().x, sigmas=[0.0, 1.0]))],
    "flow.flow_sample": [case("steps", lambda: flow.flow_sample(F().unet, F().labels, steps=0)),
                         case("guidance_scale", lambda: flow.flow_sample(F().unet, F().labels, guidance_scale=NAN)),
                         case("labels", lambda: flow.flow_sample(F().unet, [12])),
                         case("model", lambda: flow.flow_sample(F().tiny, F().labels))],
    "flow.sample_with_flow_scheduler": [
        case("scheduler", lambda: flow.sample_with_flow_scheduler(F().unet, "euler", F().labels)),
        case("num_inference_steps", lambda: flow.sample_with_flow_scheduler(F().unet, F().flow_scheduler, F().labels,
                                                                             num_inference_steps=0)),
        case("unet", lambda: flow.sample_with_flow_scheduler("unet", F().flow_scheduler, F().labels))],
    # guidance
    "guidance.check_labels": [case("labels", lambda: guidance.check_labels(12)),
                              case("labels", lambda: guidance.check_labels(1.5))],
    "guidance.drop_labels": [case("p_uncond", lambda: guidance.drop_labels(F().labels, 2.0))],
    "guidance.cfg_combine": [case("eps_uncond", lambda: guidance.cfg_combine(F().x, F().other, 3.0)),
                             case("guidance_scale", lambda: guidance.cfg_combine(F().x, F().x, NAN))],
    "guidance.rescale_guidance": [case("phi", lambda: guidance.rescale_guidance(F().x, F().x, 2.0))],
    "guidance.check_scales": [case("guidance_scale", lambda: guidance.check_scales(NAN)),
                              case("guidance_rescale", lambda: guidance.check_scales(3.0, 2.0))],
    "guidance.check_guidance": [case("guidance_scale", lambda: guidance.check_guidance(F().labels, -1.0))],
    "guidance.combine_branches": [case("guidance_scale", lambda: guidance.combine_branches(F().x, INF))],
    "guidance.guided_denoiser": [case("denoise", lambda: guidance.guided_denoiser("unet", 3.0, F().labels)),
                                 case("guidance_scale", lambda: guidance.guided_denoiser(F().denoise, "3", None))],
    "guidance.branch_labels": [case("guidance_scale", lambda: guidance.branch_labels(F().labels, -1.0))],
    "guidance.guided_eps": [case("labels", lambda: guidance.guided_eps(F().tiny, F().x, 3, [12, 1])),
                            case("guidance_scale", lambda: guidance.guided_eps(F().tiny, F().x, 3, F().labels, NAN))],
    # latents
    "latents.downsampling_factor": [case("vae", lambda: latents.downsampling_factor("vae"))],
    "latents.posterior": [case("x", lambda: latents.posterior(F().vae, "x"))],
    "latents.encode": [case("x", lambda: latents.encode(F().vae, F().x))],
    "latents.decode": [case("z", lambda: latents.decode(F().vae, "z")),
                       case("vae", lambda: latents.decode(None, F().x))],
    "latents.compute_scaling_factor": [case("batch_size", lambda: latents.compute_scaling_factor(F().vae, F().images,
                                                                                                 batch_size=0))],
    "latents.set_scaling_factor": [case("value", lambda: latents.set_scaling_factor(F().vae, 0.0)),
                                   case("value", lambda: latents.set_scaling_factor(F().vae, NAN))],
    "latents.reconstruct": [case("x", lambda: latents.reconstruct(F().vae, "x"))],
    # loop
    "loop.unet_denoiser": [case("model", lambda: loop.unet_denoiser("unet")),
                           case("cond_argument", lambda: loop.unet_denoiser(F().tiny, "labels"))],
    "loop.as_schedule": [case("schedule", lambda: loop.as_schedule("linear"))],
    "loop.prediction_type_of": [case("schedule", lambda: loop.prediction_type_of("linear"))],
    "loop.sampling_timesteps": [case("steps", lambda: loop.sampling_timesteps(F().schedule, 0)),
                                case("spacing", lambda: loop.sampling_timesteps(F().schedule, 5, "even"))],
    "loop.final_alpha_cumprod": [case("sampler", lambda: loop.final_alpha_cumprod(F().schedule, "euler"))],
    "loop.denoising_loop": [case("timesteps", lambda: loop.denoising_loop(F().denoise, F().schedule, F().x,
                                                                          timesteps=[])),
                            case("sampler", lambda: loop.denoising_loop(F().denoise, F().schedule, F().x,
                                                                        timesteps=[5, 0], sampler="euler")),
                            case("denoise", lambda: loop.denoising_loop("unet", F().schedule, F().x, timesteps=[5]))],
    # models
    "models.build_digits_unet": [case("seed", lambda: models.build_digits_unet(seed=-1)),
                                 case("seed", lambda: models.build_digits_unet(seed=1.5))],
    "models.count_parameters": [case("model", lambda: models.count_parameters("unet"))],
    "models.predict_eps": [case("model", lambda: models.predict_eps("unet", F().x, 3, None))],
    "models.timestep_embedding": [case("dim", lambda: models.timestep_embedding(F().t, 3)),
                                  case("t", lambda: models.timestep_embedding([1, 2], 4))],
    "models.ResBlock": [case("c_in", lambda: models.ResBlock(0, 8, 16)),
                        case("c_out", lambda: models.ResBlock(8, 12, 16))],
    "models.TinyUNet": [case("channels", lambda: models.TinyUNet(channels=())),
                        case("channels", lambda: models.TinyUNet(channels=(12, 24))),
                        case("in_channels", lambda: models.TinyUNet(channels=(8, 8), in_channels=0))],
    "models.build_shapes_vae": [case("seed", lambda: models.build_shapes_vae(seed=-1))],
    "models.build_shapes_unet": [case("seed", lambda: models.build_shapes_unet(seed="0"))],
    # parameterisation
    "parameterisation.check_prediction_type": [
        case("prediction_type", lambda: parameterisation.check_prediction_type("v"))],
    "parameterisation.x0_from_eps": [case("eps", lambda: parameterisation.x0_from_eps(F().schedule, F().x, F().other,
                                                                                      3)),
                                     case("t", lambda: parameterisation.x0_from_eps(F().schedule, F().x, F().x, 1000))],
    "parameterisation.eps_from_x0": [case("x0", lambda: parameterisation.eps_from_x0(F().schedule, F().x, F().other,
                                                                                     3))],
    "parameterisation.v_from_x0_eps": [case("t", lambda: parameterisation.v_from_x0_eps(F().schedule, F().x, F().x,
                                                                                        -1))],
    "parameterisation.x0_from_v": [case("v", lambda: parameterisation.x0_from_v(F().schedule, F().x, "v", 3))],
    "parameterisation.eps_from_v": [case("schedule", lambda: parameterisation.eps_from_v("linear", F().x, F().x, 3))],
    "parameterisation.x0_and_eps": [case("abar_t", lambda: parameterisation.x0_and_eps(F().x, F().x, 2.0)),
                                    case("prediction_type", lambda: parameterisation.x0_and_eps(F().x, F().x, 0.5,
                                                                                                "v"))],
    # plotting
    "plotting.new_figure": [case("width", lambda: plotting.new_figure(0)),
                            case("height", lambda: plotting.new_figure(4, NAN))],
    "plotting.figure_png": [case("fig", lambda: plotting.figure_png("figure")),
                            case("dpi", lambda: plotting.figure_png(F().fig, 0))],
    "plotting.show_images": [case("images", lambda: plotting.show_images("x")),
                             case("ncols", lambda: plotting.show_images(F().x, ncols=0)),
                             case("titles", lambda: plotting.show_images(F().x, titles=["one"]))],
    "plotting.plot_schedule_curves": [case("schedules", lambda: plotting.plot_schedule_curves({})),
                                      case("marker_t", lambda: plotting.plot_schedule_curves({"a": F().schedule},
                                                                                             1000))],
    "plotting.plot_histogram": [case("values", lambda: plotting.plot_histogram("x")),
                                case("bins", lambda: plotting.plot_histogram(F().x, bins=0))],
    "plotting.plot_curve": [case("ys", lambda: plotting.plot_curve([1, 2], {"a": [1.0]})),
                            case("x", lambda: plotting.plot_curve(3, {"a": [1.0]}))],
    # pretrained
    "pretrained.pretrained_path": [case("name", lambda: pretrained.pretrained_path("no-such-model")),
                                   case("name", lambda: pretrained.pretrained_path(3))],
    "pretrained.load_recipe": [case("name", lambda: pretrained.load_recipe("no-such-model"))],
    "pretrained.sha256": [case("path", lambda: pretrained.sha256(Path("/no/such/file")), "/no/such/file"),
                          case("path", lambda: pretrained.sha256(3))],
    "pretrained.hashed_files": [case("folder", lambda: pretrained.hashed_files(Path("/no/such")), "/no/such")],
    "pretrained.write_manifest": [case("folder", lambda: pretrained.write_manifest(Path("/no/such")), "/no/such")],
    "pretrained.verify_manifest": [case("folder", lambda: pretrained.verify_manifest(Path("/no/such")), "/no/such"),
                                   case("parts", lambda: pretrained.verify_manifest(DIGITS, parts="unet"))],
    "pretrained.check_configs": [case("name", lambda: pretrained.check_configs("no-such-model", PACKAGE))],
    "pretrained.check_pretrained": [case("name", lambda: pretrained.check_pretrained("no-such-model"))],
    "pretrained.load_pretrained": [case("name", lambda: pretrained.load_pretrained("no-such-model")),
                                   case("device", lambda: pretrained.load_pretrained("digits", device="gpu")),
                                   case("device", lambda: pretrained.load_pretrained("digits", device=0))],
    # samplers
    "samplers.check_eta": [case("eta", lambda: samplers.check_eta(-1.0)), case("eta", lambda: samplers.check_eta(NAN))],
    "samplers.ddpm_step": [case("t", lambda: samplers.ddpm_step(F().schedule, F().x, F().x, 1000)),
                           case("eps", lambda: samplers.ddpm_step(F().schedule, F().x, F().other, 3))],
    "samplers.ddpm_update": [case("abar_t", lambda: samplers.ddpm_update(F().x, F().x, 2.0, 0.5, True))],
    "samplers.ddim_step": [case("eta", lambda: samplers.ddim_step(F().schedule, F().x, F().x, 5, 3, eta=-1.0))],
    "samplers.ddim_update": [case("abar_prev", lambda: samplers.ddim_update(F().x, F().x, 0.5, NAN))],
    # sampling
    "sampling.model_device_dtype": [case("model", lambda: sampling.model_device_dtype("unet"))],
    "sampling.image_shape": [case("model", lambda: sampling.image_shape("unet"))],
    "sampling.sample_loop": [case("num_samples", lambda: sampling.sample_loop(F().tiny, F().schedule, num_samples=1.5)),
                             case("num_samples", lambda: sampling.sample_loop(F().tiny, F().schedule, num_samples=-1)),
                             case("steps", lambda: sampling.sample_loop(F().tiny, F().schedule, [1], steps=0))],
    "sampling.sample": [case("num_samples", lambda: sampling.sample(F().tiny, F().schedule, num_samples=0)),
                        case("labels", lambda: sampling.sample(F().tiny, F().schedule, [12])),
                        case("generator", lambda: sampling.sample(F().tiny, F().schedule, [1], generator=0))],
    # schedules
    "schedules.rescale_zero_terminal_snr": [case("betas", lambda: schedules.rescale_zero_terminal_snr([0.1, 0.2]))],
    "schedules.make_schedule": [case("kind", lambda: schedules.make_schedule("sigmoid")),
                                case("num_steps", lambda: schedules.make_schedule("linear", 0))],
    "schedules.to_diffusers_config": [case("num_steps", lambda: schedules.to_diffusers_config("linear", 0)),
                                      case("kind", lambda: schedules.to_diffusers_config("sigmoid"))],
    # sigmas
    "sigmas.timestep_shift": [case("shift", lambda: sigmas.timestep_shift(0.5, 0.0))],
    "sigmas.flow_sigmas": [case("num_steps", lambda: sigmas.flow_sigmas(0)),
                           case("spacing", lambda: sigmas.flow_sigmas(4, spacing="even"))],
    "sigmas.karras_sigmas": [case("sigma_min", lambda: sigmas.karras_sigmas(4, -1.0, 10.0))],
    "sigmas.draw_sigmas": [case("n", lambda: sigmas.draw_sigmas(0)),
                           case("kind", lambda: sigmas.draw_sigmas(4, kind="beta"))],
    # stats
    "stats.wilson_interval": [case("k", lambda: stats.wilson_interval(5, 3)),
                              case("n", lambda: stats.wilson_interval(0, 0))],
    "stats.proportion": [case("flags", lambda: stats.proportion([]))],
    "stats.bootstrap_interval": [case("values", lambda: stats.bootstrap_interval([])),
                                 case("resamples", lambda: stats.bootstrap_interval([1.0, 2.0], resamples=0)),
                                 case("level", lambda: stats.bootstrap_interval([1.0, 2.0], level=2.0))],
    # t2i
    "t2i.assemble_pipeline": [case("vae", lambda: t2i.assemble_pipeline("vae", F().tokenizer, F().encoder, None))],
    "t2i.save_pipeline": [case("pipe", lambda: t2i.save_pipeline("pipe", "/tmp/nowhere"))],
    "t2i.load_pipeline": [case("folder", lambda: t2i.load_pipeline("/no/such/folder"), "/no/such/folder"),
                          case("folder", lambda: t2i.load_pipeline(3)),
                          case("device", lambda: t2i.load_pipeline(pretrained.pretrained_path("shapes-t2i"), "gpu"))],
    "t2i.sampler_for": [case("scheduler", lambda: t2i.sampler_for("ddim"))],
    "t2i.generate_steps": [case("prompt", lambda: t2i.generate_steps(F().pipe, [])),
                           case("num_images_per_prompt", lambda: t2i.generate_steps(F().pipe, "red", 2,
                                                                                     num_images_per_prompt=0)),
                           case("guidance_scale", lambda: t2i.generate_steps(F().pipe, "red", 2, NAN))],
    "t2i.generate": [case("prompt", lambda: t2i.generate(F().pipe, 42)),
                     case("num_images_per_prompt", lambda: t2i.generate(F().pipe, "red", 2, num_images_per_prompt=1.5)),
                     case("guidance_scale", lambda: t2i.generate(F().pipe, "red", 2, -1.0)),
                     case("generator", lambda: t2i.generate(F().pipe, "red", 2, generator=0))],
    "t2i.pipeline_images": [case("prompts", lambda: t2i.pipeline_images(F().pipe, 42)),
                            case("prompts", lambda: t2i.pipeline_images(F().pipe, [])),
                            case("num_images_per_prompt", lambda: t2i.pipeline_images(F().pipe, ["red"],
                                                                                       num_images_per_prompt=0)),
                            case("num_inference_steps", lambda: t2i.pipeline_images(F().pipe, ["red"],
                                                                                     num_inference_steps=0)),
                            case("guidance_scale", lambda: t2i.pipeline_images(F().pipe, ["red"], guidance_scale=NAN)),
                            case("pooled", lambda: t2i.pipeline_images(F().pipe, ["red"], pooled="yes"))],
    # text
    "text.build_tokenizer": [case("max_length", lambda: text.build_tokenizer(max_length=0)),
                             case("words", lambda: text.build_tokenizer(words="red circle"))],
    "text.save_tokenizer": [case("tokenizer", lambda: text.save_tokenizer("tok", "/tmp/nowhere"))],
    "text.build_text_encoder": [case("tokenizer", lambda: text.build_text_encoder("tok")),
                                case("kind", lambda: text.build_text_encoder(F().tokenizer, kind="t5")),
                                case("seed", lambda: text.build_text_encoder(F().tokenizer, seed=-1)),
                                case("width", lambda: text.build_text_encoder(F().tokenizer, width=30))],
    "text.tokenize": [case("prompts", lambda: text.tokenize(F().tokenizer, []))],
    "text.encode_prompts": [case("prompts", lambda: text.encode_prompts(F().tokenizer, F().encoder, 3))],
    "text.prompt_problems": [case("prompt", lambda: text.prompt_problems(F().tokenizer, ["red"]))],
    "text.pool_embeddings": [case("embeddings", lambda: text.pool_embeddings(torch.zeros(2, 5), torch.zeros(2, 5))),
                             case("ids", lambda: text.pool_embeddings(torch.zeros(2, 5, 8),
                                                                      torch.zeros(2, 4, dtype=torch.long))),
                             case("ids", lambda: text.pool_embeddings(torch.zeros(2, 5, 8), torch.zeros(2, 5)))],
    "text.encode_pooled": [case("prompts", lambda: text.encode_pooled(F().tokenizer, F().encoder, 3)),
                           case("text_encoder", lambda: text.encode_pooled(F().tokenizer, "enc", ["red"]))],
    # thresholding
    "thresholding.dynamic_threshold": [case("percentile", lambda: thresholding.dynamic_threshold(F().x, 2.0)),
                                       case("floor", lambda: thresholding.dynamic_threshold(F().x, 0.9, 0.0))],
    "thresholding.latent_floor": [case("percentile", lambda: thresholding.latent_floor(F().vae, F().images, 0.0))],
    "thresholding.thresholded_denoiser": [case("denoise", lambda: thresholding.thresholded_denoiser("d", F().schedule)),
                                          case("percentile", lambda: thresholding.thresholded_denoiser(
                                              F().denoise, F().schedule, 2.0))],
    "thresholding.guided_steps": [case("prompt", lambda: thresholding.guided_steps(F().pipe, [])),
                                  case("guidance_scale", lambda: thresholding.guided_steps(F().pipe, "red", 2, NAN))],
    # toys
    "toys.two_moons": [case("n", lambda: toys.two_moons(0)), case("noise", lambda: toys.two_moons(4, noise=-1.0))],
    "toys.eight_gaussians": [case("n", lambda: toys.eight_gaussians(2.5)),
                             case("std", lambda: toys.eight_gaussians(4, std=-1.0))],
    "toys.checkerboard": [case("n", lambda: toys.checkerboard(-1))],
    "toys.toy_points": [case("name", lambda: toys.toy_points("spiral", 4))],
    "toys.VelocityMLP": [case("width", lambda: toys.VelocityMLP(width=0)),
                         case("depth", lambda: toys.VelocityMLP(depth=0))],
    "toys.mlp_denoiser": [case("model", lambda: toys.mlp_denoiser("mlp"))],
    "toys.train_flow": [case("steps", lambda: toys.train_flow(F().mlp, F().points, steps=0, progress=False)),
                        case("x0", lambda: toys.train_flow(F().mlp, F().x, steps=1, progress=False))],
    "toys.sample_paths": [case("steps", lambda: toys.sample_paths(F().mlp, F().points, steps=0))],
    "toys.generate": [case("noise", lambda: toys.generate(F().mlp, "noise"))],
    "toys.reflow_pairs": [case("n", lambda: toys.reflow_pairs(F().mlp, 0))],
    "toys.energy_distance": [case("real", lambda: toys.energy_distance(F().points, torch.randn(8, 3)))],
    "toys.mmd": [case("bandwidth", lambda: toys.mmd(F().points, F().points, 0.0))],
    "toys.energy_distance_estimate": [case("resamples", lambda: toys.energy_distance_estimate(F().points, F().points,
                                                                                              0))],
    "toys.mmd_estimate": [case("bandwidth", lambda: toys.mmd_estimate(F().points, F().points, -1.0))],
    "toys.straightness": [case("paths", lambda: toys.straightness("paths", [1.0, 0.0]))],
    "toys.path_length_ratio": [case("paths", lambda: toys.path_length_ratio(F().points))],
    "toys.path_estimates": [case("seed", lambda: toys.path_estimates(F().paths, torch.linspace(1, 0, 4), seed=-1))],
    # training
    "training.loss_target": [case("prediction_type", lambda: training.loss_target(F().schedule, F().x, F().x, F().t,
                                                                                  "v")),
                             case("eps", lambda: training.loss_target(F().schedule, F().x, F().other, F().t))],
    "training.min_snr_weights": [case("gamma", lambda: training.min_snr_weights(F().schedule, F().t, -1.0))],
    "training.draw_noise": [case("labels", lambda: training.draw_noise(F().schedule, F().x, torch.tensor([1, 12]))),
                            case("p_uncond", lambda: training.draw_noise(F().schedule, F().x, F().labels, 2.0))],
    "training.noise_loss": [case("prediction_type", lambda: training.noise_loss(F().tiny, F().schedule, F().x, F().t,
                                                                                F().x, F().labels, "v"))],
    "training.diffusion_loss": [case("labels", lambda: training.diffusion_loss(F().tiny, F().schedule, F().x,
                                                                               torch.tensor([1, 12]))),
                                case("x0", lambda: training.diffusion_loss(F().tiny, F().schedule, F().nan,
                                                                           F().labels))],
    "training.EMA": [case("max_decay", lambda: training.EMA(F().tiny, 2.0)),
                     case("model", lambda: training.EMA("unet"))],
    "training.cosine_lr": [case("steps", lambda: training.cosine_lr(F().optimizer, 0)),
                           case("warmup", lambda: training.cosine_lr(F().optimizer, 10, -1))],
    "training.optimizer_step": [case("max_grad_norm", lambda: training.optimizer_step(
                                    F().tiny, F().optimizer, F().tiny.conv_in.weight.sum(), max_grad_norm=-1.0)),
                                case("loss", lambda: training.optimizer_step(F().tiny, F().optimizer, 1.0))],
    "training.training_step": [case("x0", lambda: training.training_step(F().tiny, F().optimizer, F().schedule, F().nan,
                                                                         F().labels))],
    "training.training_device": [case("device", lambda: training.training_device("gpu")),
                                 case("device", lambda: training.training_device(0))],
    "training.make_accelerator": [case("mixed_precision", lambda: training.make_accelerator(mixed_precision="fp8")),
                                  case("gradient_accumulation_steps",
                                       lambda: training.make_accelerator(gradient_accumulation_steps=0))],
    "training.Checkpointing": [case("every", lambda: training.Checkpointing(Path("/tmp/ckpt"), every=0)),
                               case("keep", lambda: training.Checkpointing(Path("/tmp/ckpt"), keep=0))],
    "training.train_loop": [case("steps", lambda: training.train_loop(F().tiny, F().denoise, F().denoise, steps=0,
                                                                      lr=0.1,
                                                                      generator=torch.Generator())),
                            case("lr", lambda: training.train_loop(F().tiny, F().denoise, F().denoise, steps=1, lr=-0.1,
                                                                   generator=torch.Generator())),
                            case("generator", lambda: training.train_loop(F().tiny, F().denoise, F().denoise, steps=1,
                                                                          lr=0.1, generator=0))],
    "training.checkpoints": [case("folder", lambda: training.checkpoints(3))],
    "training.save_checkpoint": [case("step", lambda: training.save_checkpoint(None, training.Checkpointing(
        Path("/tmp/ckpt")), -1, {}))],
    "training.fit": [case("labels", lambda: training.fit(F().tiny, F().x, torch.tensor([1, 12]), steps=1, batch_size=2,
                                                         progress=False)),
                     case("batch_size", lambda: training.fit(F().tiny, F().x, F().labels, steps=1, batch_size=0)),
                     case("x0", lambda: training.fit(F().tiny, F().nan, F().labels, steps=1, batch_size=2)),
                     case("device", lambda: training.fit(F().tiny, F().x, F().labels, steps=1, device="gpu")),
                     case("seed", lambda: training.fit(F().tiny, F().x, F().labels, steps=1, seed=2**64))],
    "training.loss_by_timestep": [case("timesteps", lambda: training.loss_by_timestep(F().tiny, F().schedule, F().x,
                                                                                      F().labels, timesteps=[1000]))],
    # dit (lesson 10)
    "dit.digits_dit_config": [case("size", lambda: dit.digits_dit_config("huge"))],
    "dit.no_label_dropout": [case("model", lambda: dit.no_label_dropout("dit"))],
    "dit.zero_init": [case("model", lambda: dit.zero_init("dit"))],
    "dit.build_digits_dit": [case("size", lambda: dit.build_digits_dit("huge")),
                             case("seed", lambda: dit.build_digits_dit(seed=-1))],
    "dit.patchify": [case("images", lambda: dit.patchify("x")),
                     case("patch_size", lambda: dit.patchify(F().x, 0))],
    "dit.unpatchify": [case("patches", lambda: dit.unpatchify(F().x, 16, 16)),
                       case("height", lambda: dit.unpatchify(
                           torch.zeros(2, 64, 4), 0, 16))],
    "dit.parameters_by_part": [case("model", lambda: dit.parameters_by_part("dit", {"a": "x"})),
                               case("parts", lambda: dit.parameters_by_part(F().tiny, {}))],
    "dit.attention_weights": [case("attn", lambda: dit.attention_weights(F().tiny, F().x))],
    "dit.shape_trace": [case("names", lambda: dit.shape_trace(F().tiny, "conv_in", F().x)),
                        case("names", lambda: dit.shape_trace(F().tiny, ["no_such_block"], F().x))],
    # solvers (lesson 09)
    "solvers.make_solver": [case("name", lambda: solvers.make_solver(
                                "rk4", F().flow_scheduler)),
                            case("config", lambda: solvers.make_solver(
                                "euler", "config"))],
    "solvers.steps_for_evaluations": [case("evaluations", lambda: solvers.steps_for_evaluations("euler", 0))],
    "solvers.sigma_euler_step": [case("sigma_next", lambda: solvers.sigma_euler_step(F().x, F().x, 1.0, 2.0))],
    "solvers.sample_with_solver": [case("num_steps", lambda: solvers.sample_with_solver(F().unet, F().flow_scheduler,
                                                                                        F().labels, num_steps=0)),
                                   case("labels", lambda: solvers.sample_with_solver(F().unet, F().flow_scheduler,
                                                                                     [12], num_steps=2))],
    # bias (lesson 16)
    "bias.role_caption": [case("background", lambda: bias.role_caption("grey")),
                          case("color", lambda: bias.role_caption("white", "purple"))],
    "bias.make_role_shapes": [case("n", lambda: bias.make_role_shapes(0)),
                              case("red_share", lambda: bias.make_role_shapes(10, red_share=1.5)),
                              case("role_rows", lambda: bias.make_role_shapes(10, role_rows=NAN)),
                              case("named_share", lambda: bias.make_role_shapes(10, named_share=-0.1))],
    "bias.color_shares": [case("images", lambda: bias.color_shares(["purple"])),
                          case("images", lambda: bias.color_shares(F().x))],
    "bias.red_share": [case("images", lambda: bias.red_share("red"))],
    "bias.role_color_shares": [case("scales", lambda: bias.role_color_shares(F().pipe, [0.5])),
                               case("n", lambda: bias.role_color_shares(F().pipe, n=0)),
                               case("prompt", lambda: bias.role_color_shares(F().pipe, prompt="")),
                               case("negative_prompt", lambda: bias.role_color_shares(F().pipe, negative_prompt=3))],
    # editing (lesson 11)
    "editing.img2img_timesteps": [case("strength", lambda: editing.img2img_timesteps(F().pipe.scheduler, 10, 0.0)),
                                  case("num_inference_steps", lambda: editing.img2img_timesteps(F().pipe.scheduler, 0,
                                                                                                0.5)),
                                  case("scheduler", lambda: editing.img2img_timesteps("ddim", 10, 0.5))],
    "editing.img2img_steps": [case("image", lambda: editing.img2img_steps(F().pipe, F().x, "a red circle")),
                              case("strength", lambda: editing.img2img_steps(F().pipe, F().images[:1], "a red circle",
                                                                             strength=NAN))],
    "editing.img2img": [case("image", lambda: editing.img2img(F().pipe, F().nan, "a red circle")),
                        case("prompt", lambda: editing.img2img(F().pipe, F().images[:1], ["a", 3])),
                        case("generator", lambda: editing.img2img(F().pipe, F().images[:1], "a red circle",
                                                                  generator=0))],
    # memorization (lesson 16)
    "editing.ddim_inversion_steps": [case("image", lambda: editing.ddim_inversion_steps(F().pipe, F().x, "a red circle")),
                                     case("num_inference_steps", lambda: editing.ddim_inversion_steps(
                                         F().pipe, F().images[:1], "a red circle", 0))],
    "editing.ddim_invert": [case("prompt", lambda: editing.ddim_invert(F().pipe, F().images[:1], 3)),
                            case("image", lambda: editing.ddim_invert(F().pipe, F().nan, "a red circle"))],
    "editing.sample_from": [case("z_start", lambda: editing.sample_from(F().pipe, torch.zeros(1, 4, 4, 4), "a red circle")),
                            case("guidance_scale", lambda: editing.sample_from(F().pipe, torch.zeros(1, 4, 8, 8),
                                                                               "a red circle", 5, NAN))],
    # inpainting, ControlNet, LoRA (lessons 11-13)
    "inpainting.box_masks": [case("geometry", lambda: inpainting.box_masks(torch.zeros(2, 2))),
                             case("image_size", lambda: inpainting.box_masks(torch.zeros(1, 3), 30)),
                             case("margin", lambda: inpainting.box_masks(torch.zeros(1, 3), margin=-1.0))],
    "inpainting.masked_images": [case("masks", lambda: inpainting.masked_images(F().images, torch.zeros(2, 1, 16, 16))),
                                 case("images", lambda: inpainting.masked_images(F().x, torch.zeros(2, 1, 16, 16)))],
    "inpainting.inpaint_unet": [case("unet", lambda: inpainting.inpaint_unet(F().unet))],
    "inpainting.inpaint_pipeline": [case("pipe", lambda: inpainting.inpaint_pipeline("pipe")),
                                    case("unet", lambda: inpainting.inpaint_pipeline(F().pipe, models.build_shapes_unet(
                                        seed=0).__class__.from_config({**F().pipe.unet.config, "in_channels": 5})))],
    "inpainting.load_inpaint_pipeline": [case("folder", lambda: inpainting.load_inpaint_pipeline("/no/such")),
                                         case("device", lambda: inpainting.load_inpaint_pipeline(
                                             PACKAGE / "pretrained" / "shapes-inpaint", "gpu"))],
    "control.load_controlnet_pipeline": [case("folder", lambda: control.load_controlnet_pipeline(
                                             PACKAGE / "pretrained" / "shapes-t2i", "/no/such")),
                                         case("base", lambda: control.load_controlnet_pipeline(3, "/no/such"))],
    "inpainting.inpaint": [case("masks", lambda: inpainting.inpaint(inpainting.inpaint_pipeline(F().pipe), F().images,
                                                                    torch.ones(2, 1, 16, 16), "a red circle")),
                           case("prompts", lambda: inpainting.inpaint(inpainting.inpaint_pipeline(F().pipe), F().images,
                                                                      torch.ones(2, 1, 32, 32), ["a red circle"] * 3)),
                           case("pipe", lambda: inpainting.inpaint(F().pipe, F().images, torch.ones(2, 1, 32, 32),
                                                                   "a red circle"))],
    "inpainting.silhouettes": [case("colors", lambda: inpainting.silhouettes(F().images, ["red", "pink"]))],
    "inpainting.iou": [case("b", lambda: inpainting.iou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))),
                       case("a", lambda: inpainting.iou(torch.zeros(4, 4), torch.zeros(4, 4)))],
    "inpainting.outside_change": [case("originals", lambda: inpainting.outside_change(F().images, F().images[:1],
                                                                                      torch.zeros(2, 1, 32, 32)))],
    "inpainting.seam": [case("masks", lambda: inpainting.seam(F().images, torch.zeros(2, 32, 32)))],
    "inpainting.edit_tasks": [case("n", lambda: inpainting.edit_tasks(0)),
                              case("seed", lambda: inpainting.edit_tasks(2, seed=-1))],
    "inpainting.measure_edits": [case("tasks", lambda: inpainting.measure_edits(F().pipe, {"replace": {}}))],
    "control.silhouette_images": [case("shape_idx", lambda: control.silhouette_images(torch.tensor([5]),
                                                                                      torch.zeros(1, 3)))],
    "control.build_controlnet": [case("unet", lambda: control.build_controlnet(F().unet)),
                                 case("seed", lambda: control.build_controlnet(F().pipe.unet, seed=-1))],
    "control.zero_convolutions": [case("controlnet", lambda: control.zero_convolutions(F().unet))],
    "control.controlnet_pipeline": [case("controlnet", lambda: control.controlnet_pipeline(F().pipe, F().unet)),
                                    case("pipe", lambda: control.controlnet_pipeline("pipe", F().unet))],
    "control.controlled": [case("control", lambda: control.controlled(control.controlnet_pipeline(
                               F().pipe, control.build_controlnet(F().pipe.unet)), "a red circle", torch.zeros(1, 3, 16, 16))),
                           case("conditioning_scale", lambda: control.controlled(control.controlnet_pipeline(
                               F().pipe, control.build_controlnet(F().pipe.unet)), "a red circle",
                               torch.zeros(1, 3, 32, 32), -1.0)),
                           case("pipe", lambda: control.controlled(F().pipe, "a red circle", torch.zeros(1, 3, 32, 32)))],
    "control.control_tasks": [case("n", lambda: control.control_tasks(0))],
    "control.measure_control": [case("tasks", lambda: control.measure_control(F().pipe, {})),
                                case("scales", lambda: control.measure_control(F().pipe, control.control_tasks(1), 1.0))],
    "lora.star_coverage": [case("geometry", lambda: lora.star_coverage(torch.zeros(2, 2))),
                           case("supersample", lambda: lora.star_coverage(torch.zeros(1, 3), 32, 0))],
    "lora.render_stars": [case("color_idx", lambda: lora.render_stars(torch.tensor([7]), torch.tensor([0]),
                                                                      torch.zeros(1, 3)))],
    "lora.star_caption": [case("color", lambda: lora.star_caption("pink", "white"))],
    "lora.star_pictures": [case("n", lambda: lora.star_pictures(0))],
    "lora.read_with_star": [case("images", lambda: lora.read_with_star(F().x))],
    "lora.add_lora": [case("rank", lambda: lora.add_lora(F().pipe.unet, 0)),
                      case("unet", lambda: lora.add_lora("unet"))],
    "lora.add_text_lora": [case("rank", lambda: lora.add_text_lora(F().pipe.text_encoder, 0)),
                           case("text_encoder", lambda: lora.add_text_lora(F().pipe.unet))],
    "lora.lora_parameters": [case("unet", lambda: lora.lora_parameters("unet"))],
    "lora.save_lora": [case("unet", lambda: lora.save_lora(F().unet, "/tmp/no-lora-here")),
                       case("folder", lambda: lora.save_lora(F().unet, 3))],
    "lora.adapter_bytes": [case("folder", lambda: lora.adapter_bytes(Path("/no/such")), "/no/such")],
    "lora.load_adapter": [case("folder", lambda: lora.load_adapter(F().pipe, "/no/such/folder"))],
    "lora.measure_adapter": [case("per_prompt", lambda: lora.measure_adapter(F().pipe, 0)),
                             case("old_prompts", lambda: lora.measure_adapter(F().pipe, 1, old_prompts="no")),
                             case("pipe", lambda: lora.measure_adapter("pipe"))],
    "memorization.nearest_neighbours": [case("queries", lambda: memorization.nearest_neighbours([1, 2], F().x)),
                                        case("k", lambda: memorization.nearest_neighbours(F().x, F().x, k=3)),
                                        case("references", lambda: memorization.nearest_neighbours(F().x, F().nan))],
    "memorization.unique_rows": [case("x", lambda: memorization.unique_rows("x"))],
    "memorization.copy_flags": [case("references", lambda: memorization.copy_flags(F().x, F().x[:1])),
                                case("ratio", lambda: memorization.copy_flags(F().x, F().x, ratio=NAN))],
    "memorization.memorization_report": [case("held_out", lambda: memorization.memorization_report(F().x, F().x,
                                                                                                   "held")),
                                         case("samples", lambda: memorization.memorization_report(F().nan, F().x,
                                                                                                  F().x))],
    "memorization.training_subset": [case("n", lambda: memorization.training_subset(0)),
                                     case("seed", lambda: memorization.training_subset(10, seed=-1))],
    "memorization.with_duplicates": [case("rows", lambda: memorization.with_duplicates(F().x, [5], 2)),
                                     case("copies", lambda: memorization.with_duplicates(F().x, [1], -1))],
    "memorization.draw_samples": [case("n", lambda: memorization.draw_samples(F().unet, F().flow_scheduler, 0)),
                                  case("scheduler", lambda: memorization.draw_samples(F().unet, "euler", 2))],
    # scenes (lesson 15)
    "scenes.caption": [case("color", lambda: scenes.caption("single", [scenes.Thing("circle", "pink")], "white")),
                       case("things", lambda: scenes.caption("single", "circle", "white")),
                       case("kind", lambda: scenes.caption("negation", [], "white"))],
    "scenes.random_scene": [case("kind", lambda: scenes.random_scene("many")),
                            case("generator", lambda: scenes.random_scene("single", 3))],
    "scenes.render": [case("scenes", lambda: scenes.render([])),
                      case("background", lambda: scenes.render(scenes.Scene("single", "grey", [])))],
    "scenes.make_scenes": [case("n", lambda: scenes.make_scenes(0)),
                           case("kinds", lambda: scenes.make_scenes(2, kinds="single"))],
    "scenes.read_scenes": [case("images", lambda: scenes.read_scenes(torch.zeros(1, 4, 8, 8)))],
    "scenes.check": [case("scene", lambda: scenes.check({"things": []}, "scene"))],
    "scenes.score": [case("scenes", lambda: scenes.score(torch.zeros(2, 3, 64, 64), []))],
    "scenes.object_mistake": [case("scene", lambda: scenes.object_mistake({"things": []}, "scene")),
                              case("scene", lambda: scenes.object_mistake(
                                  {"things": []}, scenes.random_scene("single", gen())))],
    "scenes.reworded": [case("scene", lambda: scenes.reworded("a red circle")),
                        case("scene", lambda: scenes.reworded(scenes.random_scene("single", gen())))],
    "attention.record_cross_attention": [
        case("unet", lambda: attention.record_cross_attention(torch.nn.Linear(2, 2)).__enter__())],
    "attention.trajectory": [case("prompt", lambda: attention.trajectory(F().pipe, ["a", "b"], gen())),
                             case("num_inference_steps", lambda: attention.trajectory(F().pipe, "a", gen(), 0))],
    "attention.word_maps": [case("run", lambda: attention.word_maps(F().pipe, "a", {"latents": []})),
                            case("prompt", lambda: attention.word_maps(F().pipe, 3, {"latents": [1], "timesteps": [1]}))],
    "attention.token_labels": [case("tokenizer", lambda: attention.token_labels("tok", "a")),
                               case("prompts", lambda: attention.token_labels(F().tokenizer, 3))],
    "models.build_scenes_unet": [case("seed", lambda: models.build_scenes_unet(seed=-1)),
                                 case("cross_attention_dim", lambda: models.build_scenes_unet(cross_attention_dim=0))],
    # signs (lesson 14)
    "signs.check_word": [case("word", lambda: signs.check_word("abc"))],
    "signs.caption": [case("word", lambda: signs.caption("ABCD"))],
    "signs.render": [case("words", lambda: signs.render(["CAT", "dog"])),
                     case("words", lambda: signs.render([]))],
    "signs.split_words": [case("n_train", lambda: signs.split_words(17576)),
                          case("seed", lambda: signs.split_words(10, seed=-1))],
    "signs.make_signs": [case("n", lambda: signs.make_signs(0, ["CAT"])),
                         case("words", lambda: signs.make_signs(2, ["CA"])),
                         case("generator", lambda: signs.make_signs(2, ["CAT"], 3))],
    "signs.read_signs": [case("images", lambda: signs.read_signs(F().x))],
    "signs.letter_matches": [case("read", lambda: signs.letter_matches(["CATS"], ["CAT"])),
                             case("read", lambda: signs.letter_matches(["CAT", "DOG"], ["CAT"]))],
    "signs.spelling": [case("asked", lambda: signs.spelling(signs.render("CAT"), ["CAT", "DOG"])),
                       case("images", lambda: signs.spelling(F().x, ["CAT"]))],
    "signs.confusions": [case("asked", lambda: signs.confusions(["CAT"], ["cat"]))],
    "signs.word_tokenizer": [case("train_words", lambda: signs.word_tokenizer(["cat"]))],
    "signs.bpe_tokenizer": [case("vocab_size", lambda: signs.bpe_tokenizer(["CAT"], vocab_size=5)),
                            case("train_words", lambda: signs.bpe_tokenizer("cats"))],
    "signs.build_tokenizer": [case("kind", lambda: signs.build_tokenizer("wordpiece")),
                              case("train_words", lambda: signs.build_tokenizer("bpe"))],
    "signs.tokens": [case("text", lambda: signs.tokens(F().tokenizer, 3)),
                     case("tokenizer", lambda: signs.tokens("tok", "a sign"))],
    "models.build_signs_vae": [case("seed", lambda: models.build_signs_vae(seed=-1))],
    "models.build_signs_unet": [case("seed", lambda: models.build_signs_unet(seed="0"))],
    # generators (lesson 17)
    "generators.DigitsGenerator": [case("sample_size", lambda: generators.DigitsGenerator(sample_size=32)),
                                   case("channels", lambda: generators.DigitsGenerator(channels=100)),
                                   case("z_dim", lambda: generators.DigitsGenerator(z_dim=0))],
    "generators.DigitsCritic": [case("channels", lambda: generators.DigitsCritic(channels=0)),
                                case("num_classes", lambda: generators.DigitsCritic(num_classes=2.5))],
    "generators.DigitsEncoder": [case("z_dim", lambda: generators.DigitsEncoder(z_dim=-1))],
    "generators.GanPair": [case("generator", lambda: generators.GanPair(F().tiny, generators.DigitsCritic())),
                           case("critic", lambda: generators.GanPair(generators.DigitsGenerator(), F().tiny))],
    "generators.DigitsVAE": [case("encoder", lambda: generators.DigitsVAE(F().tiny, generators.DigitsGenerator())),
                             case("decoder", lambda: generators.DigitsVAE(generators.DigitsEncoder(), F().tiny))],
    "generators.gan_losses": [case("pair", lambda: generators.gan_losses(F().tiny, F().x, F().labels, F().x)),
                              case("labels", lambda: generators.gan_losses(
                                  generators.GanPair(generators.DigitsGenerator(), generators.DigitsCritic()), F().x,
                                  torch.zeros(3, dtype=torch.long), torch.zeros(2, generators.Z_DIM))),
                              case("z", lambda: generators.gan_losses(
                                  generators.GanPair(generators.DigitsGenerator(), generators.DigitsCritic()), F().x,
                                  F().labels, torch.zeros(2)))],
    "generators.gan_loss_fn": [case("pair", lambda: generators.gan_loss_fn("pair"))],
    "generators.vae_loss": [case("eps", lambda: generators.vae_loss(
                                generators.DigitsVAE(generators.DigitsEncoder(), generators.DigitsGenerator()), F().x,
                                F().labels, torch.zeros(3, generators.Z_DIM))),
                            case("sigma", lambda: generators.vae_loss(
                                generators.DigitsVAE(generators.DigitsEncoder(), generators.DigitsGenerator()), F().x,
                                F().labels, torch.zeros(2, generators.Z_DIM), sigma=0.0)),
                            case("vae", lambda: generators.vae_loss(F().tiny, F().x, F().labels, F().x))],
    "generators.vae_loss_fn": [case("vae", lambda: generators.vae_loss_fn(F().tiny))],
    "generators.generate": [case("generator_net", lambda: generators.generate(F().tiny, [0])),
                            case("labels", lambda: generators.generate(generators.DigitsGenerator(), [10])),
                            case("generator", lambda: generators.generate(generators.DigitsGenerator(), [1], 3))],
    # book
    "book.load_lesson_times": [case("path", lambda: book.load_lesson_times(3))],
    "book.format_seconds": [case("seconds", lambda: book.format_seconds(-1.0))],
    "book.lesson_table": [case("lessons", lambda: book.lesson_table(
        lessons="00_welcome"))],
    "book.time_line": [case("stem", lambda: book.time_line("99_nothing"))],
    "book.show_time": [case("stem", lambda: book.show_time(3))],
    # measure (the measurements record)
    "measure.weight_files": [case("folder", lambda: measure.weight_files(
        Path("/no/such")), "/no/such")],
    "measure.model_hashes": [case("folder", lambda: measure.model_hashes(
        Path("/no/such")), "/no/such")],
    "measure.hardware": [case("device", lambda: measure.hardware(0)), case("device", lambda: measure.hardware("gpu"))],
    "measure.record_matches_model": [case("record", lambda: measure.record_matches_model("record", DIGITS))],
    "measure.measure_digits": [case("per_label", lambda: measure.measure_digits(DIGITS, 0))],
    # widgets
    "widgets.Explorer": [case("render", lambda: widgets.Explorer("render", {}))],
    "widgets.explorer": [case("controls", lambda: widgets.explorer(lambda **kw: F().fig, {"s": 3}, show=False))],
    "widgets.int_slider": [case("value", lambda: widgets.int_slider("n", 20, 0, 10)),
                           case("step", lambda: widgets.int_slider("n", 5, 0, 10, step=0))],
    "widgets.float_slider": [case("step", lambda: widgets.float_slider("s", 0.5, 0.0, 1.0, 0.0)),
                             case("hi", lambda: widgets.float_slider("s", 0.5, 1.0, 0.0, 0.1))],
    "widgets.dropdown": [case("options", lambda: widgets.dropdown("d", [])),
                         case("value", lambda: widgets.dropdown("d", ["a", "b"], "c"))],
}

# Callables with nothing to check: no arguments, ...
NO_ARGUMENTS = {"scenes.caption_words", "signs.font_path", "signs.all_words", "signs.char_tokenizer", "bias.role_words", "device.pick_device", "device.run_profile", "data.shape_prompts", "text.caption_words",
                "t2i.stable_diffusion_pipeline_class", "t2i.build_scheduler", "training.launched_distributed"}
# ... plain records of results (dataclasses and named tuples the package itself fills), ...
RECORDS = {"scenes.Thing", "scenes.Scene", "scenes.ScenesData", "signs.SignsData", "data.ShapesData", "book.Lesson", "solvers.SolverRun", "flow.FlowState", "loop.SampleState",
           "samplers.StepOutput", "schedules.NoiseSchedule", "stats.Estimate", "exercises.CodingExercise",
           "training.TrainingInterrupted"}
# ... arguments of any type by design, ...
ANY_VALUES = {"device.by_profile"}    # by_profile(quick, full) returns one of the two values, whatever they are
# ... and command lines: argparse reports a bad option (exit status 2), test_command_lines_refuse_bad_options.
CLI = {"train.main", "pretrained.main", "measure.main"}


def test_every_public_callable_is_in_the_table():
    found = set(public_callables())
    listed = set(BAD_INPUTS) | NO_ARGUMENTS | RECORDS | ANY_VALUES | CLI
    missing = sorted(found - listed)
    assert not missing, f"public callables without a row of bad inputs in BAD_INPUTS: {missing}"
    stale = sorted(listed - found)
    assert not stale, f"rows for callables that are no longer public: {stale}"


def test_the_walk_finds_the_package_api():
    found = public_callables()
    assert len(found) > 150
    assert "flow.flow_euler_step" in found and "sigmas.karras_sigmas" in found   # exported by the package itself
    assert "t2i.pipeline_images" in found and "training.fit" in found and "sampling.sample" in found


def test_known_gaps_are_rows():
    rows = {f"{name}-{i}" for name, cases in BAD_INPUTS.items() for i in range(len(cases))}
    assert set(KNOWN_GAPS) <= rows


def test_no_arguments_really_take_none():
    found = public_callables()
    for name in NO_ARGUMENTS:
        required = [p for p in inspect.signature(found[name]).parameters.values() if p.default is p.empty]
        assert not required, name


# Rows whose function does not yet refuse the input cleanly, in modules another change owns: expected to fail
# (strict, so a fix shows up as an unexpected pass and the entry must go). Keys: 'module.name-row'.
KNOWN_GAPS: dict[str, str] = {}   # "name-i": why a row is a known gap (strict xfail)

ROWS = [pytest.param(name, i, arg, call, missing, id=f"{name}-{i}-{arg}",
                     marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[f"{name}-{i}"])]
                     if f"{name}-{i}" in KNOWN_GAPS else [])
        for name, cases in sorted(BAD_INPUTS.items()) for i, (arg, call, missing) in enumerate(cases)]


def innermost_file(err: BaseException) -> str:
    return traceback.extract_tb(err.__traceback__)[-1].filename


@pytest.mark.parametrize("name, i, arg, call, missing", ROWS)
def test_bad_input_is_a_clear_error(name, i, arg, call, missing):
    F()  # the shared inputs are built first
    with pytest.raises(FileNotFoundError if missing else (ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    if missing:   # a missing file: the message names the path that was given
        assert missing in message, f"{name}: the message does not say which path is missing: {message}"
    else:
        named = re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message)
        assert named, f"{name}: the message does not name {arg}: {message}"
    where = Path(innermost_file(info.value)).resolve()
    assert PACKAGE in where.parents, f"{name}: {arg} was refused deep inside {where}, not by the package: {message}"


@pytest.mark.parametrize("main, argv", [(lambda a: importlib.import_module("diffusion_lessons.train").main(a),
                                         ["no-such-recipe"]),
                                        (lambda a: pretrained.main(a), ["--no-such-option"]),
                                        (lambda a: measure.main(a),
                                         ["--no-such-option"])])
def test_command_lines_refuse_bad_options(main, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


# ---- the probe's findings, one test each --------------------------------------------------------------------

def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("scale", [-1.0, NAN, INF, "3"])
def test_text_to_image_guidance_scale_is_checked(scale):
    for call in (lambda: t2i.generate(F().pipe, "a red circle", 2, scale),
                 lambda: t2i.pipeline_images(F().pipe, ["a red circle"], num_inference_steps=2, guidance_scale=scale),
                 lambda: thresholding.guided_steps(F().pipe, "a red circle", 2, scale)):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
            call()


def test_pipeline_images_takes_a_string_as_one_prompt():
    one = t2i.pipeline_images(F().pipe, "a red circle", gen(3), num_inference_steps=2)
    listed = t2i.pipeline_images(F().pipe, ["a red circle"], gen(3), num_inference_steps=2)
    assert one.shape == (1, 3, 32, 32) and torch.equal(one, listed)


@pytest.mark.parametrize("call, arg", [
    (lambda: t2i.pipeline_images(F().pipe, [], num_inference_steps=2), "prompts"),
    (lambda: t2i.generate(F().pipe, [], 2), "prompt"),
    (lambda: evaluation.prompt_adherence(F().pipe, []), "prompts"),
    (lambda: t2i.pipeline_images(F().pipe, ["red"], num_inference_steps=0), "num_inference_steps"),
    (lambda: t2i.generate(F().pipe, "red", 0), "num_inference_steps"),
    (lambda: sampling.sample(F().tiny, F().schedule, [1], steps=0), "steps"),
    (lambda: t2i.pipeline_images(F().pipe, ["red"], num_images_per_prompt=0, num_inference_steps=2),
     "num_images_per_prompt"),
    (lambda: t2i.generate(F().pipe, "red", 2, num_images_per_prompt=1.5), "num_images_per_prompt"),
    (lambda: training.fit(F().tiny, F().x, F().labels, steps=1, batch_size=0), "batch_size"),
    (lambda: training.fit(F().tiny, F().x, F().labels, steps=1, batch_size=1.5), "batch_size"),
    (lambda: latents.compute_scaling_factor(F().vae, F().images, batch_size=0), "batch_size"),
    (lambda: sampling.sample(F().tiny, F().schedule, None, num_samples=1.5), "num_samples"),
    (lambda: sampling.sample(F().tiny, F().schedule, None, num_samples=-1), "num_samples"),
    (lambda: sampling.sample(F().tiny, F().schedule, None, num_samples=0), "num_samples"),
])
def test_empty_prompts_zero_steps_and_bad_batch_sizes_are_refused(call, arg):
    with pytest.raises(ValueError, match=rf"^{arg} must be"):
        call()


def test_labels_out_of_range_in_training_are_a_value_error():
    bad = torch.tensor([1, 12])
    for call in (lambda: training.fit(F().tiny, F().x, bad, steps=1, batch_size=2, progress=False),
                 lambda: training.diffusion_loss(F().tiny, F().schedule, F().x, bad),
                 lambda: training.draw_noise(F().schedule, F().x, bad)):
        with pytest.raises(ValueError, match=r"labels must be integer labels in \[0, 11\), got values from 1 to 12"):
            call()


@pytest.mark.parametrize("where", ["gpu", 0, "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_devices_this_machine_lacks_are_refused_by_name(where):
    for call in (lambda: training.training_device(where),
                 lambda: training.fit(F().tiny, F().x, F().labels, steps=1, batch_size=2, device=where),
                 lambda: device.make_generator(0, where),
                 lambda: pretrained.load_pretrained("digits", device=where),
                 lambda: t2i.load_pipeline(pretrained.pretrained_path("shapes-t2i"), where)):
        with pytest.raises(ValueError, match="^device must be"):
            call()
    assert training.training_device("cpu") == torch.device("cpu")


def test_a_scheduler_with_no_timesteps_is_refused():
    from diffusers import DDIMScheduler

    with pytest.raises(ValueError, match="num_steps must be an int >= 2, got 0"):
        schedules.to_diffusers_config("linear", 0)
    with pytest.raises(ValueError, match="schedule must have at least 2 training timesteps"):
        sampling.sample(F().tiny, DDIMScheduler(num_train_timesteps=0), [1], steps=1, progress=False)


def test_sampling_with_another_number_of_timesteps_than_training_is_refused():
    model = models.TinyUNet(channels=(8, 8))
    training.fit(model, F().x, F().labels, steps=1, batch_size=2, schedule=schedules.make_schedule("linear", 50),
                 progress=False, device="cpu")
    with pytest.raises(ValueError, match="schedule must have the 50 training timesteps the model was trained with"):
        sampling.sample(model, schedules.make_schedule("linear", 10), [1], steps=2, progress=False)
    assert sampling.sample(model, schedules.make_schedule("linear", 50), [1], steps=2, progress=False).shape == \
        (1, 1, 16, 16)
    unet, scheduler = pretrained.load_pretrained("digits", device="cpu")
    with pytest.raises(ValueError, match="the 1000 training timesteps"):
        sampling.sample(unet, schedules.make_schedule("linear", 10), [1], steps=2, progress=False)


def test_nan_in_training_data_is_refused_and_a_nan_loss_is_reported():
    for call in (lambda: training.fit(F().tiny, F().nan, F().labels, steps=1, batch_size=2),
                 lambda: training.diffusion_loss(F().tiny, F().schedule, F().nan, F().labels),
                 lambda: toys.train_flow(F().mlp, torch.tensor([[0.0, NAN], [1.0, 1.0]]), steps=1, progress=False)):
        with pytest.raises(ValueError, match="x0 must hold finite numbers"):
            call()
    model = torch.nn.Linear(2, 1)
    with pytest.warns(RuntimeWarning, match="training loss is not finite"):   # a batch_fn that makes NaN
        losses = training.train_loop(model, lambda batch: model(batch).pow(2).mean(), lambda g: torch.full((4, 2), NAN),
                                     steps=2, lr=0.1, generator=gen(), progress=False)
    assert all(math.isnan(v) for v in losses)


@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_recipe_seed_out_of_range_fails_before_training(seed, capsys):
    from diffusion_lessons.recipes import digits

    with pytest.raises(SystemExit) as info:
        digits.parse_args(["--seed", seed, "--steps", "1", "--skip-eval"])
    assert info.value.code == 2 and "--seed must be an int in [0, 2**32 - 1]" in capsys.readouterr().err


def test_recipe_out_naming_a_file_fails_before_training(tmp_path, capsys):
    from diffusion_lessons.recipes import digits

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as info:
        digits.parse_args(["--out", str(tmp_path / "notes.txt"), "--steps", "1", "--skip-eval"])
    assert info.value.code == 2 and "is a file" in capsys.readouterr().err


BUILDERS = {"build_digits_unet": lambda seed: models.build_digits_unet(seed=seed),
            "build_shapes_vae": lambda seed: models.build_shapes_vae(seed=seed),
            "build_shapes_unet": lambda seed: models.build_shapes_unet(seed=seed),
            "build_signs_unet": lambda seed: models.build_signs_unet(seed=seed),
            "build_scenes_unet": lambda seed: models.build_scenes_unet(seed=seed),
            "build_text_encoder": lambda seed: text.build_text_encoder(F().tokenizer, seed=seed),
            "build_bidirectional_text_encoder": lambda seed: text.build_text_encoder(F().tokenizer, seed=seed,
                                                                                  kind="bidirectional"),
            "build_digits_dit": lambda seed: dit.build_digits_dit(
                "small", seed=seed)}


@pytest.mark.parametrize("name", BUILDERS)
def test_seeded_builders_leave_the_global_torch_rng_alone(name):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = BUILDERS[name](7)
    assert torch.equal(torch.get_rng_state(), state), f"{name} moved or reseeded torch's global generator"
    second = BUILDERS[name](7)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_evaluation_leaves_numpys_global_rng_alone():
    images, labels = torch.rand(20, 1, 16, 16) * 2 - 1, torch.arange(10).repeat(2)
    np.random.seed(5)
    state = np.random.get_state()
    evaluation.train_digit_classifier.cache_clear()
    evaluation.measure_digits(images, labels)
    evaluation.within_class_diversity_estimate(images, labels)
    toys.mmd_estimate(F().points, F().points + 1, resamples=100)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
