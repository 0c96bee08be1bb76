"""The book's table of contents and its measured times (lesson 00, the README, `make bench`).

LESSONS lists every lesson in reading order. benchmarks/lesson_times.json records how long each
lesson takes to execute top to bottom in a fresh kernel, on a 2-core CPU and on a GPU:

    {"cpu": {"00_welcome": 41.2, ...}, "gpu": {...}, "cpu_machine": "...", "gpu_machine": "..."}

A time that is null or absent (or a missing file) reads "not measured yet". Other keys are ignored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple, Sequence

TIMES_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "lesson_times.json"
DEVICES = ("cpu", "gpu")
NOT_MEASURED = "not measured yet"


class Lesson(NamedTuple):
    stem: str   # the notebook's file name without .ipynb, e.g. "01_gaussian_noise"
    title: str  # its heading reads "# Lesson 01: <title>"
    idea: str   # one line


LESSONS = (
    Lesson("00_welcome", "Welcome",
           "the whole pipeline in one cell (a prompt in, pictures out, on a CPU), then the map of the book"),
    Lesson("01_gaussian_noise", "Gaussian noise",
           "images as tensors; Gaussian static at any size; seeds; mixing a picture with noise at unit variance"),
    Lesson("02_forward_noising", "Forward noising and noise schedules",
           "the film from photo to static, its closed form, and the schedules (linear, cosine, scaled linear) and SNR"),
    Lesson("03_noise_predictor", "The noise predictor",
           "what the network predicts (eps, x0, v), the U-Net inside, its loss, and a live training run"),
    Lesson("04_sampling", "Sampling, from static to digit",
           "the reverse process: DDPM steps by hand, DDIM, how many steps, seeds and variations"),
    Lesson("05_classifier_free_guidance", "Classifier-free guidance",
           "one guidance scale trades variety for faithfulness, measured like the paper"),
    Lesson("06_vae", "The VAE, or why diffusion runs in a latent space",
           "AutoencoderKL squeezes 3x32x32 pixels into a 4x8x8 latent; the KL term and the scaling factor"),
    Lesson("07_text_to_image", "From words to pictures",
           "tokenizer, text encoder, cross-attention: a diffusers StableDiffusionPipeline built from the book's parts"),
    Lesson("08_flow_matching", "Flow matching and rectified flow",
           "straight paths from noise to data: the velocity target, Euler steps, reflow to one step, SD3's timestep "
           "shift and logit-normal draw"),
    Lesson("09_samplers", "Samplers", "one model, many solvers: Euler, Heun, DPM-Solver++, UniPC, DDIM; Karras sigmas, "
           "trailing spacing, zero terminal SNR; quality against model evaluations"),
    Lesson("10_diffusion_transformers", "Diffusion transformers",
           "images as patches: DiT with adaLN-Zero against the U-Net, scaling with compute, SD3's joint text-image "
           "attention"),
    Lesson("11_editing", "Editing by partial noising: img2img, inversion and inpainting",
           "strength as how far back into the noise, measured; DDIM inversion; Generative Fill two ways: the blending "
           "trick and a 9-channel inpainting U-Net"),
    Lesson("12_controlnet", "ControlNet: pinning the layout",
           "a trainable copy of the encoder joined by zero convolutions; a silhouette as the control image, its "
           "overlap with the drawn shape measured at four conditioning scales"),
    Lesson("13_lora", "LoRA and DreamBooth: teaching a new shape",
           "a low-rank update on the U-Net's and the text encoder's attention projections teaches a star from 20 "
           "pictures; the unknown word, prior preservation against drift, rank against size, caption dropout for "
           "guidance"),
    Lesson("14_spelling", "Why it can't spell",
           "three models that differ only in their tokenizer (word, BPE, characters) spell seen and unseen words on "
           "signs; the decoder's own limit first; the same character-level model predicting the noise instead of v; "
           "a character-aware encoder and repainting the word as remedies"),
    Lesson("15_composition", "Why it mixes up your description",
           "a model on scenes of one to three shapes binds colors, places shapes and counts, measured; a causal "
           "against a bidirectional text encoder, one pooled vector against the token sequence, and a 4x wider "
           "encoder; word order, guidance and cross-attention maps with a control; one caption per region as the "
           "remedy"),
    Lesson("16_bias", "Bias in, bias out, and memorization",
           "a role word whose training pictures are 80% red: how much of the lean comes out, what guidance does to "
           "it, which fixes work; and when a model copies its training images (10, 100, 1,000 digits, duplicates)"),
    Lesson("17_other_generators", "The other generators: GANs and VAEs against diffusion",
           "one generator network trained as a GAN and as a VAE against diffusion and flow: fidelity, coverage, "
           "diversity, speed, mode collapse watched; normalizing flows and flow matching"),
)


def _check_seconds(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a number of seconds >= 0 or null, got {value!r}")
    return float(value)


def load_lesson_times(path: str | Path | None = None) -> dict:
    """benchmarks/lesson_times.json as {"cpu": {stem: s}, "gpu": {stem: s}, "cpu_machine", "gpu_machine"};
    a missing file gives empty tables and no machines. Malformed content raises ValueError."""
    if path is not None and not isinstance(path, (str, Path)):
        raise ValueError(f"path must be None or a path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(TIMES_PATH if path is None else path)
    raw = json.loads(path.read_text()) if path.exists() else {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object with keys {DEVICES} and '<device>_machine'")
    out: dict = {}
    for device in DEVICES:
        table = raw.get(device) or {}
        if not isinstance(table, dict):
            raise ValueError(f"{path}: '{device}' must map lesson names to seconds, got {table!r}")
        out[device] = {str(k): _check_seconds(v, f"{path}: {device}[{k!r}]") for k, v in table.items()}
        machine = raw.get(f"{device}_machine")
        out[f"{device}_machine"] = str(machine) if machine else None
    return out


def format_seconds(seconds: float | None) -> str:
    """'45 s', '2.5 min' or 'not measured yet' (None)."""
    if seconds is None:
        return NOT_MEASURED
    seconds = _check_seconds(seconds, "seconds")
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def lesson_table(path: str | Path | None = None, lessons: Sequence[Lesson] = LESSONS,
                 link_suffix: str | None = ".ipynb") -> str:
    """A markdown table of the lessons with their measured times on a CPU and a GPU, then a line naming
    the machines. link_suffix: each lesson links to stem + suffix (".ipynb", ".html"), None = no links."""
    if isinstance(lessons, (str, bytes)) or not all(isinstance(x, Lesson) for x in lessons):
        raise ValueError("lessons must be a sequence of book.Lesson (e.g. book.LESSONS), got "
                         f"{type(lessons).__name__}")
    times = load_lesson_times(path)
    rows = ["| lesson | idea | 2-core CPU | GPU |", "|---|---|---|---|"]
    for lesson in lessons:
        name = f"{lesson.stem[:2]} {lesson.title}"
        if link_suffix is not None:
            name = f"[{name}]({lesson.stem}{link_suffix})"
        cpu, gpu = (format_seconds(times[d].get(lesson.stem)) for d in DEVICES)
        rows.append(f"| {_cell(name)} | {_cell(lesson.idea)} | {cpu} | {gpu} |")
    machines = [f"{d.upper()}: {times[f'{d}_machine']}" for d in DEVICES if times[f"{d}_machine"]]
    note = "Measured on " + "; ".join(machines) + "." if machines else "No machine recorded yet."
    return "\n".join(rows) + "\n\n" + note + "\n"


def time_line(stem: str, path: str | Path | None = None) -> str:
    """The lesson header's "Time:" line, read from lesson_times.json (the one source of lesson times):
    '**Time:** 52 s on a 2-core CPU (quick profile); 41 s on a GPU (full profile).'"""
    stems = [lesson.stem for lesson in LESSONS]
    if stem not in stems:
        raise ValueError(f"stem must be one of {stems}, got {stem!r}")
    times = load_lesson_times(path)
    cpu, gpu = (times[d].get(stem) for d in DEVICES)
    parts = [f"{format_seconds(cpu)} on a 2-core CPU (quick profile)" if cpu is not None
             else f"CPU time {NOT_MEASURED}",
             f"{format_seconds(gpu)} on a GPU (full profile)" if gpu is not None else f"GPU time {NOT_MEASURED}"]
    return f"**Time:** {'; '.join(parts)}, measured top to bottom in a fresh kernel (see the table in lesson 00)."


def show_time(stem: str) -> None:
    """Display time_line(stem) as Markdown (the first code cell of every lesson)."""
    from IPython.display import Markdown, display

    display(Markdown(time_line(stem)))
