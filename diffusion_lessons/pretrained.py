"""The models the book ships, trained by its own recipes, loaded offline by name and checked before use.

Layout (diffusers' save_pretrained, safetensors only) under diffusion_lessons/pretrained/:
  digits/      unet/, scheduler/, recipe.json, manifest.json       (python -m diffusion_lessons.train digits)
  shapes-t2i/  a StableDiffusionPipeline folder: vae/, text_encoder/, tokenizer/, unet/,
               scheduler/, model_index.json, recipe-vae.json, recipe.json, manifest.json
               (python -m diffusion_lessons.train vae, then ... train shapes-t2i)

manifest.json maps every weight and config file (relative path) to its SHA-256; the recipe writes it with the
model. load_pretrained checks the files it loads against it and says which one differs, and checks the scheduler
and VAE configs against the recipe record. Write a manifest for a folder trained before manifests existed:
python -m diffusion_lessons.pretrained --write-manifest NAME (or a folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

from . import _checks

ROOT = Path(__file__).resolve().parent / "pretrained"
NAMES = ("digits", "vae", "text", "shapes-t2i", "digits-flow", "digits-reflow", "digits-dit")
FLOW_NAMES = ("digits-flow", "digits-reflow", "digits-dit")   # flow-matching digits models (lessons 08 and 10)
MANIFEST = "manifest.json"
RECORDS = ("recipe.json", "recipe-vae.json")   # records and measurements are not in the manifest: they are
NOT_HASHED = (*RECORDS, MANIFEST, "measurements.json")  # rewritten by re-measuring, the weights are not
# what each name loads from its folder: sub-folders (with the file each must hold) and top-level files
PARTS = {
    "digits": {"unet/": "config.json", "scheduler/": "scheduler_config.json"},
    "vae": {"vae/": "config.json"},
    "text": {"tokenizer/": "tokenizer_config.json", "text_encoder/": "config.json"},
    "shapes-t2i": {"vae/": "config.json", "text_encoder/": "config.json", "tokenizer/": "tokenizer_config.json",
                   "unet/": "config.json", "scheduler/": "scheduler_config.json", "model_index.json": None},
    "digits-flow": {"unet/": "config.json", "scheduler/": "scheduler_config.json"},
    "digits-reflow": {"unet/": "config.json", "scheduler/": "scheduler_config.json"},
    "digits-dit": {"transformer/": "config.json", "scheduler/": "scheduler_config.json"},
}
# the schedule of records written before recipes recorded noise_schedule (the shipped shapes-t2i of 2400 steps)
LEGACY_SCHEDULE = {"shapes-t2i": dict(num_train_timesteps=1000, beta_schedule="scaled_linear")}


def _folder_of(name: str) -> Path:
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    return ROOT / ("shapes-t2i" if name in ("vae", "text") else name)


def _path(value, name: str, folder: bool = False) -> Path:
    """value as a Path to an existing file (or folder); FileNotFoundError naming it when it is missing."""
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str or pathlib.Path), got {type(value).__name__}")
    path = Path(value)
    if not (path.is_dir() if folder else path.is_file()):
        raise FileNotFoundError(f"{name} {path} not found (expected an existing {'folder' if folder else 'file'})")
    return path


def _recipe_of(name: str) -> str:
    return "shapes-t2i" if name == "text" else name


def pretrained_path(name: str) -> Path:
    """The folder that holds the shipped model `name`, checked to hold every part that `name` loads."""
    folder = _folder_of(name)
    expected = ", ".join(PARTS[name])
    if not folder.is_dir():
        raise FileNotFoundError(f"{name} model not found at {folder} (expected {expected}): train it with "
                                f"python -m diffusion_lessons.train {_recipe_of(name)} --out {folder} --force")
    for part, inside in PARTS[name].items():
        path = folder / part / inside if inside else folder / part
        if not path.is_file():
            raise FileNotFoundError(f"{name} model incomplete: {path} not found at {folder} (expected {expected})")
    return folder


def load_recipe(name: str) -> dict:
    """The recipe record saved next to the model (what it took and what it scores)."""
    folder = pretrained_path(name)
    return json.loads((folder / ("recipe-vae.json" if name == "vae" else "recipe.json")).read_text())


# ---- the manifest -------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    path = _path(path, "path")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hashed_files(folder: Path) -> list[str]:
    """The weight and config files of a model folder (relative POSIX paths): every file except the records,
    measurements, the manifest itself, checkpoints/ and hidden files."""
    folder = _path(folder, "folder", folder=True)
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] != "checkpoints" and not any(p.startswith(".") for p in rel.parts) \
                and str(rel) not in NOT_HASHED:
            found.append(rel.as_posix())
    return sorted(found)


def write_manifest(folder: Path) -> dict[str, str]:
    """Write folder/manifest.json, {relative path: sha256} of every weight and config file; returns it."""
    folder = _path(folder, "folder", folder=True)
    manifest = {rel: sha256(folder / rel) for rel in hashed_files(folder)}
    if not manifest:
        raise FileNotFoundError(f"no weight or config file in {folder}: nothing to write a manifest for")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_manifest(folder: Path, parts: tuple[str, ...] | None = None) -> bool:
    """Check the files of `parts` (sub-folders like 'unet/', or files; default all) against folder/manifest.json:
    a missing file is a FileNotFoundError, a changed or unlisted one a ValueError naming it. Returns False (with a
    warning) where the folder has no manifest."""
    folder = _path(folder, "folder", folder=True)
    if parts is not None and (not isinstance(parts, (tuple, list)) or not all(isinstance(p, str) for p in parts)):
        raise ValueError(f"parts must be a tuple of sub-folders and files (e.g. ('unet/', 'scheduler/')) or None, "
                         f"got {parts!r}")
    if not (folder / MANIFEST).is_file():
        warnings.warn(f"{folder} has no {MANIFEST}, so its files cannot be verified: write one with python -m "
                      f"diffusion_lessons.pretrained --write-manifest {folder}", stacklevel=3)
        return False
    manifest = json.loads((folder / MANIFEST).read_text())
    wanted = lambda rel: parts is None or any(rel == p or rel.startswith(p) for p in parts)  # noqa: E731
    for rel, expected in sorted(manifest.items()):
        if not wanted(rel):
            continue
        if not (folder / rel).is_file():
            raise FileNotFoundError(f"{folder / rel} not found at {folder} (listed in its {MANIFEST})")
        actual = sha256(folder / rel)
        if actual != expected:
            raise ValueError(f"{folder / rel} differs from {folder / MANIFEST} (sha256 {actual[:12]}..., expected "
                             f"{expected[:12]}...): the file changed after the recipe wrote it; restore it "
                             f"(git checkout) or retrain")
    extra = [rel for rel in hashed_files(folder) if wanted(rel) and rel not in manifest]
    if extra:
        raise ValueError(f"{', '.join(str(folder / rel) for rel in extra)} not in {folder / MANIFEST}: a file was "
                         f"added after the recipe wrote the model")
    return True


# ---- configs against the recipe record -----------------------------------------------------------------------

def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _expect(path: Path, config: dict, key: str, expected, source: str) -> None:
    if expected is not None and config.get(key) != expected:
        raise ValueError(f"{path}: {key} is {config.get(key)!r}, but {source} {expected!r}")


def check_configs(name: str, folder: Path) -> None:
    """The scheduler's num_train_timesteps and beta_schedule, the VAE's scaling_factor and sample_size and the
    U-Net's sample_size against the recipe records (where they state them); a mismatch is a ValueError."""
    _folder_of(name)
    folder = _path(folder, "folder", folder=True)
    scheduler, record = folder / "scheduler" / "scheduler_config.json", folder / "recipe.json"
    if name in ("digits", "shapes-t2i"):
        recorded = _read(record)
        schedule = (recorded.get("noise_schedule") or LEGACY_SCHEDULE.get(name, {})) if recorded else {}
        config = _read(scheduler)
        trained = f"{record} says the model was trained with"
        _expect(scheduler, config, "num_train_timesteps", schedule.get("num_train_timesteps"), trained)
        _expect(scheduler, config, "beta_schedule", schedule.get("beta_schedule", schedule.get("diffusers")), trained)
        if name == "digits":
            unet = folder / "unet" / "config.json"
            _expect(unet, _read(unet), "sample_size", recorded.get("unet", {}).get("sample_size"), trained)
    if name in FLOW_NAMES:
        recorded, config = _read(record), _read(scheduler)
        trained = f"{record} says the model was trained and sampled with"
        for key in ("num_train_timesteps", "shift"):
            _expect(scheduler, config, key, recorded.get("scheduler", {}).get(key), trained)
        _expect(scheduler, config, "_class_name", recorded.get("scheduler", {}).get("kind"), trained)
        part = "transformer" if name == "digits-dit" else "unet"
        network = folder / part / "config.json"
        _expect(network, _read(network), "sample_size", recorded.get(part, {}).get("sample_size"), trained)
    if name in ("vae", "shapes-t2i"):
        vae, vae_record = folder / "vae" / "config.json", folder / "recipe-vae.json"
        recorded, config = _read(vae_record), _read(vae)
        trained = f"{vae_record} says the VAE was trained with"
        _expect(vae, config, "scaling_factor", recorded.get("scaling_factor"), trained)
        _expect(vae, config, "sample_size", recorded.get("data", {}).get("image_size"), trained)
        if name == "shapes-t2i" and config:
            unet = folder / "unet" / "config.json"
            latent = config["sample_size"] // 2 ** (len(config["block_out_channels"]) - 1)
            _expect(unet, _read(unet), "sample_size", latent, f"the VAE ({vae}) makes latents of size")


def check_pretrained(name: str) -> Path:
    """pretrained_path, then the manifest (for the parts `name` loads) and the configs; returns the folder."""
    folder = pretrained_path(name)
    verify_manifest(folder, tuple(PARTS[name]))
    check_configs(name, folder)
    return folder


def load_pretrained(name: str, device=None):
    """Load a shipped model by name, offline, from safetensors, after check_pretrained.

    digits -> (UNet2DModel, DDIMScheduler); vae -> AutoencoderKL; text -> (tokenizer, CLIPTextModel);
    shapes-t2i -> StableDiffusionPipeline; digits-flow and digits-reflow -> (UNet2DModel,
    FlowMatchEulerDiscreteScheduler); digits-dit -> (DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler)."""
    from . import device as _device

    device = _checks.device(device) if device is not None else _device.pick_device()
    folder = check_pretrained(name)
    kw = dict(use_safetensors=True, local_files_only=True)
    if name == "digits":
        from diffusers import DDIMScheduler, UNet2DModel

        unet = UNet2DModel.from_pretrained(folder / "unet", **kw).to(device).eval()
        scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
        _checks.mark_trained_timesteps(unet, scheduler.config.num_train_timesteps)
        return unet, scheduler
    if name in FLOW_NAMES:
        import diffusers
        from diffusers import FlowMatchEulerDiscreteScheduler

        part, cls = ("transformer", "DiTTransformer2DModel") if name == "digits-dit" else ("unet", "UNet2DModel")
        network = getattr(diffusers, cls).from_pretrained(folder / part, **kw).to(device).eval()
        return network, FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    if name == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw).to(device).eval()
    if name == "text":
        from transformers import CLIPTextModel, PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer", local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **kw).to(device).eval()
        return tokenizer, encoder
    from .t2i import stable_diffusion_pipeline_class

    StableDiffusionPipeline = stable_diffusion_pipeline_class()

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def main(argv: list[str] | None = None) -> None:
    """python -m diffusion_lessons.pretrained --write-manifest NAME|FOLDER, or --check NAME."""
    parser = argparse.ArgumentParser(prog="python -m diffusion_lessons.pretrained", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write-manifest", metavar="NAME_OR_FOLDER",
                        help=f"write manifest.json for a shipped model ({', '.join(NAMES)}) or a folder")
    action.add_argument("--check", metavar="NAME", choices=NAMES, help="verify a shipped model and its configs")
    args = parser.parse_args(argv)
    if args.check:
        print(f"{args.check}: {check_pretrained(args.check)} matches its manifest and records")
        return
    target = args.write_manifest
    folder = _folder_of(target) if target in NAMES else Path(target)
    if not folder.is_dir():
        parser.error(f"{folder} is not a folder")
    manifest = write_manifest(folder)
    print(f"wrote {folder / MANIFEST}: {len(manifest)} files")


if __name__ == "__main__":
    main()
