"""load_pretrained checks what it loads: every weight and config file against the manifest of SHA-256s the
recipe wrote (naming the file that differs), the parts each name needs ('not found at PATH (expected ...)',
never a hub message), and the scheduler, VAE and U-Net configs against the recipe records. The shipped models
carry their manifests. Tests run on copies of the shipped folders."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from diffusion_lessons import pretrained

SHIPPED = {name: pretrained.ROOT / name for name in ("digits", "shapes-t2i")}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """Copies of the shipped folders, each with a fresh manifest, as pretrained.ROOT."""
    for name, folder in SHIPPED.items():
        shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("checkpoints", ".*"))
        pretrained.write_manifest(tmp_path / name)
    monkeypatch.setattr(pretrained, "ROOT", tmp_path)
    return tmp_path


def no_hub_words(message: str) -> None:
    assert not any(word in message.lower() for word in ("hub", "connect", "huggingface.co", "repo id")), message


def test_verified_models_load_without_a_warning(root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unet, scheduler = pretrained.load_pretrained("digits", device="cpu")
        tokenizer, encoder = pretrained.load_pretrained("text", device="cpu")
    assert type(unet).__name__ == "UNet2DModel" and type(encoder).__name__ == "CLIPTextModel"
    manifest = json.loads((root / "shapes-t2i" / pretrained.MANIFEST).read_text())
    assert "vae/diffusion_pytorch_model.safetensors" in manifest and "model_index.json" in manifest
    assert not {"recipe.json", "recipe-vae.json", pretrained.MANIFEST} & set(manifest)  # records may be re-measured


@pytest.mark.parametrize("name, changed", [
    ("digits", "unet/diffusion_pytorch_model.safetensors"),
    ("digits", "scheduler/scheduler_config.json"),
    ("vae", "vae/diffusion_pytorch_model.safetensors"),
    ("shapes-t2i", "tokenizer/tokenizer.json"),
])
def test_a_changed_file_is_named(root, name, changed):
    path = pretrained._folder_of(name) / changed
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{changed} differs from .*manifest.json"):
        pretrained.load_pretrained(name, device="cpu")


def test_a_missing_or_added_file_is_named(root):
    (root / "shapes-t2i" / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer/tokenizer.json not found at"):
        pretrained.load_pretrained("text", device="cpu")
    (root / "digits" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"weights from elsewhere")
    with pytest.raises(ValueError, match="diffusion_pytorch_model.bin not in"):
        pretrained.load_pretrained("digits", device="cpu")


@pytest.mark.parametrize("name, removed, expected", [
    ("digits", "digits", "expected unet/, scheduler/"),
    ("digits", "digits/unet", "expected unet/, scheduler/"),
    ("vae", "shapes-t2i/vae", "expected vae/"),
    ("text", "shapes-t2i/text_encoder", "expected tokenizer/, text_encoder/"),
    ("shapes-t2i", "shapes-t2i/scheduler", "expected vae/, text_encoder/, tokenizer/, unet/, scheduler/, model_index"),
])
def test_missing_parts_say_not_found_and_what_is_expected(root, name, removed, expected):
    shutil.rmtree(root / removed)
    with pytest.raises(FileNotFoundError) as caught:
        pretrained.load_pretrained(name, device="cpu")
    message = str(caught.value)
    assert "not found at" in message and expected in message and str(root) in message
    no_hub_words(message)


def edit(path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("name, file, changes, key", [
    ("digits", "digits/scheduler/scheduler_config.json", dict(num_train_timesteps=10), "num_train_timesteps"),
    ("digits", "digits/scheduler/scheduler_config.json", dict(beta_schedule="linear"), "beta_schedule"),
    ("digits", "digits/unet/config.json", dict(sample_size=32), "sample_size"),
    ("shapes-t2i", "shapes-t2i/scheduler/scheduler_config.json", dict(num_train_timesteps=10), "num_train_timesteps"),
    ("vae", "shapes-t2i/vae/config.json", dict(scaling_factor=0.18215), "scaling_factor"),
    ("vae", "shapes-t2i/vae/config.json", dict(sample_size=64), "sample_size"),
    ("shapes-t2i", "shapes-t2i/unet/config.json", dict(sample_size=16), "sample_size"),
])
def test_configs_are_checked_against_the_recipe_records(root, name, file, changes, key):
    """With the manifest the edit is caught as a changed file; without one (a folder from before manifests),
    by the record check, which names the key, the file and the record."""
    edit(root / file, **changes)
    with pytest.raises(ValueError, match="differs"):
        pretrained.load_pretrained(name, device="cpu")
    (root / file.split("/")[0] / pretrained.MANIFEST).unlink()
    with pytest.warns(UserWarning, match="no manifest.json"), pytest.raises(ValueError) as caught:
        pretrained.load_pretrained(name, device="cpu")
    message = str(caught.value)
    assert key in message and file.split("/", 1)[1] in message
    assert ("latents of size 8" if file.endswith("unet/config.json") and name != "digits" else "trained with") in message


def test_write_manifest_and_check_from_the_command_line(root, capsys):
    (root / "digits" / pretrained.MANIFEST).unlink()
    pretrained.main(["--write-manifest", "digits"])
    assert "wrote" in capsys.readouterr().out and pretrained.verify_manifest(root / "digits")
    pretrained.main(["--check", "digits"])
    assert "matches its manifest" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pretrained.main(["--write-manifest", str(root / "nowhere")])


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_models_match_their_manifests(name):
    folder = SHIPPED[name]
    assert (folder / pretrained.MANIFEST).is_file(), (
        f"write it with: python -m diffusion_lessons.pretrained --write-manifest {name}")
    assert pretrained.verify_manifest(folder)
    pretrained.check_configs(name, folder)
