"""The three recipes share one command line and one record (recipes.common): where a run writes, the
guards on the shipped folder and on other models' folders, the all-or-nothing write of model + record +
manifest, and a 2-step run of each with --skip-eval (the real models, tiny batches)."""

from __future__ import annotations

import json

import pytest
from diffusers import DDIMScheduler

from diffusion_lessons.pretrained import MANIFEST, ROOT, verify_manifest
from diffusion_lessons.recipes import (common, digits, digits_gan_vae, digits_memorize, shapes_boss, shapes_controlnet,
                                      shapes_inpaint, shapes_lora_star, shapes_t2i, vae)

RECIPES = {"digits": digits, "vae": vae, "shapes-t2i": shapes_t2i, "shapes-boss": shapes_boss,
           "digits-memorize": digits_memorize, "digits-gan-vae": digits_gan_vae, "shapes-inpaint": shapes_inpaint,
           "shapes-controlnet": shapes_controlnet, "shapes-lora-star": shapes_lora_star}
SHIPPED = {"digits": ROOT / "digits", "vae": ROOT / "shapes-t2i", "shapes-t2i": ROOT / "shapes-t2i",
           "shapes-boss": ROOT / "shapes-boss", "digits-memorize": ROOT / "digits-memorize",
           "digits-gan-vae": ROOT / "digits-gan-vae", "shapes-inpaint": ROOT / "shapes-inpaint",
           "shapes-controlnet": ROOT / "shapes-controlnet", "shapes-lora-star": ROOT / "shapes-lora-star"}
# the fields every record has (recipes.common.run_record), and the older names the lessons read
RECORD_KEYS = {"model", "command", "data", "seed", "profile", "steps", "batch_size", "lr", "optimizer",
               "lr_schedule", "warmup", "ema_max_decay", "first_loss", "final_loss", "final_loss_window",
               "wall_time_s", "steps_per_s", "eval_time_s", "total_time_s", "quality", "hardware", "device",
               "cpu_threads", "platform", "versions", "processes", "grad_accumulation", "mixed_precision",
               "launch", "resumed_from_step", "recipe", "train_seconds", "steps_per_second", "wall_seconds", "torch",
               "diffusers"}
TINY = ["--steps", "2", "--skip-eval", "--profile", "quick"]
TINY_SHAPES = [*TINY, "--n-train", "16", "--batch-size", "4"]


@pytest.mark.parametrize("name", RECIPES)
def test_default_out_is_a_new_folder_under_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = RECIPES[name].parse_args([]).out
    assert out.parent == tmp_path / "runs" and out.name.startswith(f"{name}-20")
    assert not out.resolve().is_relative_to(ROOT.resolve())
    out.mkdir(parents=True)  # a second run in the same second gets its own folder
    assert RECIPES[name].parse_args([]).out != out


@pytest.mark.parametrize("name", RECIPES)
def test_writing_into_the_shipped_folder_needs_force(name, capsys):
    for out in (SHIPPED[name], SHIPPED[name] / ".." / SHIPPED[name].name / "again"):
        with pytest.raises(SystemExit):
            RECIPES[name].parse_args(["--out", str(out)])
        assert "--force" in capsys.readouterr().err
    if name != "vae":
        assert RECIPES[name].parse_args(["--out", str(SHIPPED[name]), "--force"]).out == SHIPPED[name]


def refused(name: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        RECIPES[name].parse_args(argv)
    return capsys.readouterr().err


@pytest.mark.parametrize("name", RECIPES)
def test_no_recipe_writes_into_another_models_folder(name, capsys):
    """Not with --force either: not into a folder holding another model, nor into a folder inside a model's."""
    inside = SHIPPED[name] / "again"
    assert "lies inside the model folder" in refused(name, ["--out", str(inside), "--force"], capsys)
    other = ROOT / ("digits" if name != "digits" else "shapes-t2i")
    err = refused(name, ["--out", str(other), "--force"], capsys)
    assert "never writes into another model's folder" in err and str(other) in err


def test_the_vae_recipe_never_writes_into_the_text_to_image_folder(capsys):
    err = refused("vae", ["--out", str(ROOT / "shapes-t2i"), "--force"], capsys)
    assert "holds the shapes-t2i model" in err


@pytest.mark.parametrize("name", RECIPES)
def test_out_naming_a_file_or_a_folder_of_other_files_fails_before_training(name, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert "is a file" in refused(name, ["--out", str(tmp_path / "notes.txt")], capsys)
    err = refused(name, ["--out", str(tmp_path)], capsys)
    assert "notes.txt" in err and "does not write" in err


@pytest.mark.parametrize("flag", ["--checkpoint-every", "--grad-accumulation"])
def test_training_options_are_checked(flag, capsys):
    assert "must be >= 1" in refused("digits", [flag, "0"], capsys)


def test_resume_needs_out(capsys):
    assert "--resume needs --out" in refused("digits", ["--resume"], capsys)


def test_evaluate_only_needs_out_and_force_for_the_shipped_model(capsys):
    with pytest.raises(SystemExit):
        digits.parse_args(["--evaluate-only"])
    assert "needs --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        digits.parse_args(["--evaluate-only", "--out", str(ROOT / "digits")])
    assert "--force" in capsys.readouterr().err


def read_record(path) -> dict:
    record = json.loads(path.read_text())
    assert RECORD_KEYS <= set(record), RECORD_KEYS - set(record)
    assert record["steps"] == 2 and record["quality"] is None and record["eval_time_s"] is None
    assert record["processes"] == 1 and record["launch"] is None and record["resumed_from_step"] is None
    assert (path.parent / MANIFEST).is_file() and verify_manifest(path.parent)  # written with the model
    assert record["command"].startswith("python -m diffusion_lessons.train ") and "--steps 2" in record["command"]
    return record


def test_digits_recipe_with_skip_eval(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(digits, "BATCH_SIZE", 8)
    returned = digits.main(TINY)
    (out,) = (tmp_path / "runs").iterdir()
    record = read_record(out / "recipe.json")
    assert record == json.loads(json.dumps(returned))
    assert record["model"] == "digits" and record["batch_size"] == 8 and record["evaluated"] is None
    assert record["prediction_type"] == digits.PREDICTION_TYPE and record["snr_gamma"] == digits.SNR_GAMMA
    scheduler = DDIMScheduler.from_pretrained(out / "scheduler", local_files_only=True)
    assert scheduler.config.prediction_type == digits.PREDICTION_TYPE
    assert record["noise_schedule"]["beta_schedule"] == scheduler.config.beta_schedule
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (out / "checkpoints").exists()


def test_a_failed_or_interrupted_write_leaves_the_old_model_and_record(tmp_path, monkeypatch):
    """publish: the model, record and manifest go into a hidden sibling and replace --out in one rename;
    an error or Ctrl-C while measuring leaves the previous model with its previous record."""
    monkeypatch.setattr(digits, "BATCH_SIZE", 8)
    out = tmp_path / "digits"
    digits.main([*TINY, "--out", str(out)])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for error in (RuntimeError("measuring failed"), KeyboardInterrupt()):
        def failing_measure(*args, **kwargs):
            raise error
        monkeypatch.setattr(digits, "measure", failing_measure)
        with pytest.raises(type(error)):
            digits.main(["--steps", "3", "--profile", "quick", "--out", str(out)])  # evaluates, so fails
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]  # no staging folder left behind
    monkeypatch.undo()
    monkeypatch.setattr(digits, "BATCH_SIZE", 8)
    digits.main(["--steps", "3", "--skip-eval", "--profile", "quick", "--out", str(out)])  # a success replaces it
    assert json.loads((out / "recipe.json").read_text())["steps"] == 3 and verify_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


def test_swap_into_place_is_one_exchange(tmp_path):
    old, new = tmp_path / "model", tmp_path / ".model.partial"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "recipe.json").write_text(text)
    common._swap_into_place(new, old)
    assert (old / "recipe.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_vae_then_shapes_t2i_with_skip_eval(tmp_path, monkeypatch):
    """The default flow: train vae, then shapes-t2i finds the newest ./runs/vae-* without --vae."""
    monkeypatch.chdir(tmp_path)
    vae.main(TINY_SHAPES)
    (vae_out,) = (tmp_path / "runs").iterdir()
    record = read_record(vae_out / "recipe-vae.json")
    assert record["model"] == "vae" and record["scaling_factor"] > 0 and record["ema_max_decay"] is None

    shapes_t2i.main([*TINY_SHAPES, "--images-per-prompt", "1"])
    (out,) = (p for p in (tmp_path / "runs").iterdir() if p.name.startswith("shapes-t2i-"))
    record = read_record(out / "recipe.json")
    assert record["model"] == "shapes-t2i" and record["data"]["vae"] == str(vae_out / "vae")
    assert record["ema_max_decay"] == shapes_t2i.EMA_DECAY
    for part in ("vae", "text_encoder", "unet", "tokenizer", "scheduler"):
        assert (out / part).is_dir(), part
    assert record["noise_schedule"] == dict(kind="scaled_linear", num_train_timesteps=1000, beta_schedule="scaled_linear")
    assert (out / "recipe-vae.json").read_text() == (vae_out / "recipe-vae.json").read_text()


def test_shapes_boss_tiny_run_records_its_bias_measurements(tmp_path):
    """Two steps on 40 role-world images with the shipped VAE; the measurements file has the issue's layout."""
    out = tmp_path / "boss"
    record = shapes_boss.main([*TINY, "--n-train", "40", "--batch-size", "4", "--per-scale", "2",
                               "--images-per-prompt", "1", "--out", str(out)])
    assert record["model"] == "shapes-boss" and record["data"]["red_share"] == 0.8
    assert record["quality"] is None and not (out / "measurements.json").exists()   # --skip-eval
    found = shapes_boss.measure(shapes_boss.t2i.load_pipeline(out), shapes_boss.bias.make_role_shapes(40),
                                per_scale=2, seed=0)
    assert set(found["role_prompt_red_share"]) == {"1.0", "3.0", "7.5"}
    for row in found["role_prompt_red_share"].values():
        assert set(row) == {"share", "low", "high", "n"} and row["n"] == 2
    assert found["training_set"]["role_pictures"] == 10
    assert "boss" in (out / "tokenizer" / "tokenizer.json").read_text()


def test_shapes_t2i_needs_a_trained_vae(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="train vae"):
        shapes_t2i.main(TINY_SHAPES)


def test_digits_memorize_tiny_run_measures_every_run(tmp_path):
    """Two steps of each of the four runs, four samples each: every U-Net saved, the record's training sets as
    the issue describes them (10, 100, 1,000 digits; the 1,000 with 10 repeated), the measurements per run."""
    out = tmp_path / "mem"
    record = digits_memorize.main(["--steps", "2", "--batch-size", "4", "--samples", "4", "--out", str(out)])
    found = json.loads((out / "measurements.json").read_text())
    assert list(found["runs"]) == list(digits_memorize.RUNS)
    sizes = {run: record["data"]["runs"][run] for run in digits_memorize.RUNS}
    assert [sizes[f"n{n}"]["distinct"] for n in (10, 100, 1000)] == [10, 100, 1000]
    dup = found["runs"]["n1000-dup"]
    assert sizes["n1000-dup"]["images"] == 1000 + digits_memorize.DUPLICATED * digits_memorize.COPIES
    assert len(dup["duplicated_rows"]) == digits_memorize.DUPLICATED
    assert set(dup["duplicated_rows"]) <= set(dup["training_rows"]) == set(found["runs"]["n1000"]["training_rows"])
    assert dup["copies_of_repeated"] + dup["copies_of_others"] == round(
        dup["sample_copy_share"]["value"] * dup["sample_copy_share"]["n"])
    assert dup["repeated_share_of_training_rows"] == round(10 * 31 / 1300, 4)
    assert found["runs"]["n1000"]["repeated_share_of_training_rows"] == 0.01
    assert "nearest_is_repeated" in found["runs"]["n1000"] and "nearest_is_repeated" not in found["runs"]["n100"]
    again = digits_memorize.main(["--evaluate-only", "--samples", "3", "--out", str(out)])
    assert again["evaluated"]["command"].endswith("--evaluate-only --samples 3")
    assert json.loads((out / "measurements.json").read_text())["runs"]["n10"]["sample_copy_share"]["n"] == 3
    for run in digits_memorize.RUNS:
        assert (out / run / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert found["runs"][run]["held_out_copy_share"]["n"] == 300
    assert verify_manifest(out)


def test_digits_gan_vae_tiny_run_saves_both_generators_and_the_history(tmp_path):
    from safetensors.torch import load_file

    from diffusion_lessons import generators

    out = tmp_path / "gan"
    record = digits_gan_vae.main(["--gan-steps", "24", "--vae-steps", "4", "--batch-size", "8", "--per-label", "2",
                                  "--out", str(out)])
    assert record["gan"]["steps"] == 24 and record["vae"]["steps"] == 4 and record["steps"] == 28
    found = json.loads((out / "measurements.json").read_text())
    assert [h["step"] for h in found["gan_history"]] == list(range(2, 25, 2))
    pictures = load_file(out / "gan_history.safetensors")
    assert pictures["step_24"].shape == (10 * digits_gan_vae.HISTORY_PER_LABEL, 1, 16, 16)
    for name in ("gan", "gan_raw", "vae"):
        assert set(found[name]) >= {"fidelity", "rough", "diversity", "class_coverage"}
    for part in ("generator", "vae_decoder"):
        assert isinstance(generators.DigitsGenerator.from_pretrained(out / part), generators.DigitsGenerator)
    assert verify_manifest(out)
    plain = tmp_path / "unconditional"
    record = digits_gan_vae.main(["--unconditional", "--gan-steps", "12", "--batch-size", "8", "--per-label", "2",
                                  "--out", str(plain)])
    assert record["command"].endswith("--gan-steps 12 --batch-size 8 --unconditional --per-label 2")
    assert record["steps"] == 12
    found = json.loads((plain / "measurements.json").read_text())
    shares = found["gan"]["shares"]
    assert sorted(shares, key=int) == [str(d) for d in range(10)] and all(r["n"] == 20 for r in shares.values())
    assert sum(round(r["value"] * r["n"]) for r in shares.values()) == 20
    assert generators.DigitsGenerator.from_pretrained(plain / "generator").config.num_classes == 1
    assert not (plain / "vae_decoder").exists()


def test_part_three_recipes_tiny_runs_write_loadable_models(tmp_path):
    """Two steps of each Part III recipe with --skip-eval: the inpainting pipeline (9 channels, shared parts
    linked to the base; then measured by --evaluate-only on 2 + 2 edits), the ControlNet folder and the LoRA
    adapters, each loadable as the lessons load them."""
    from diffusion_lessons import control, inpainting, lora, t2i

    out = tmp_path / "inpaint"
    record = shapes_inpaint.main([*TINY, "--n-train", "16", "--batch-size", "4", "--out", str(out)])
    assert record["quality"] is None and (out / "vae").is_symlink()
    pipe = inpainting.load_inpaint_pipeline(out)
    assert pipe.unet.config.in_channels == 9 and type(pipe).__name__ == "StableDiffusionInpaintPipeline"
    again = shapes_inpaint.main(["--evaluate-only", "--per-task", "2", "--out", str(out)])   # measured afterwards
    found = json.loads((out / "measurements.json").read_text())
    assert again["quality"] == found["inpainting_unet"] and found["model"] == "shapes-inpaint"
    assert found["inpainting_unet"]["background"]["mean_iou"]["n"] == 2 and "evaluated" in again
    assert set(found["blending_base_model"]) == {"replace", "background", "keep", "settings"}
    out = tmp_path / "controlnet"
    shapes_controlnet.main([*TINY, "--n-train", "16", "--batch-size", "4", "--out", str(out)])
    cn = control.load_controlnet_pipeline(ROOT / "shapes-t2i", out)
    assert type(cn).__name__ == "StableDiffusionControlNetPipeline"
    out = tmp_path / "lora"
    record = shapes_lora_star.main([*TINY, "--batch-size", "4", "--n-pictures", "4", "--out", str(out)])
    assert set(record["runs"]) == set(shapes_lora_star.RUNS)
    assert (out / lora.WEIGHTS_NAME).is_file() and (out / "variants" / "r4" / lora.WEIGHTS_NAME).is_file()
    base = t2i.load_pipeline(ROOT / "shapes-t2i")
    lora.load_adapter(base, out)
    assert lora.lora_parameters(base.text_encoder) > 0 and record["runs"][shapes_lora_star.SHIPPED]["text_encoder_lora"]
    assert (lora.lora_parameters(base.unet) + lora.lora_parameters(base.text_encoder)
            == record["runs"][shapes_lora_star.SHIPPED]["lora_parameters"])


def test_signs_recipes_tiny_runs_share_the_vae_and_measure(tmp_path):
    """Two steps of signs-vae, then signs-char on its VAE and signs-word on signs-char's (a sibling: linked, not
    copied); signs-word measured end to end on 2 + 2 words; both load with plain diffusers."""
    from diffusers import StableDiffusionPipeline

    from diffusion_lessons import signs
    from diffusion_lessons.recipes import signs as signs_recipe

    vae_out, char_out, word_out = tmp_path / "runs" / "signs-vae", tmp_path / "signs-char", tmp_path / "signs-word"
    record = signs_recipe.vae_main(["--steps", "2", "--batch-size", "4", "--out", str(vae_out)])
    assert set(record["quality"]) == {"seen", "unseen"} and record["quality"]["seen"]["words"]["n"] == 500
    char = signs_recipe.main_char(["--steps", "2", "--batch-size", "4", "--skip-eval", "--vae", str(vae_out),
                                   "--prediction-type", "epsilon", "--out", str(char_out)])
    assert not (char_out / "vae").is_symlink()            # --vae not a sibling of --out: copied
    assert char["prediction_type"] == "epsilon" and "--prediction-type epsilon" in char["command"]
    assert json.loads((char_out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == \
        "epsilon"
    with pytest.warns(UserWarning, match="unknown words become"):     # word-level: an unseen word is [UNK]
        record = signs_recipe.main_word(["--steps", "2", "--batch-size", "4", "--words-per-set", "2",
                                         "--vae", str(char_out), "--out", str(word_out)])
    assert (word_out / "vae").is_symlink() and (word_out / "vae").resolve() == (char_out / "vae").resolve()
    found = json.loads((word_out / "measurements.json").read_text())
    assert found["seen"]["words"]["n"] == 2 and len(found["unseen"]["read"]) == 2
    assert set(found["seen"]["asked"]) <= set(signs.split_words()[0])
    assert not set(found["unseen"]["asked"]) & set(signs.split_words()[0])
    assert record["quality"]["unseen"]["letters"] == found["unseen"]["letters"]
    assert record["prediction_type"] == signs_recipe.PREDICTION_TYPE == "v_prediction"
    assert "--prediction-type v_prediction" in record["command"] and found["model"] == "signs-word"
    assert signs_recipe.model_name("char", "epsilon") == "signs-char-eps"     # the shipped noise-predicting twin
    assert (word_out / "train_words.txt").read_text().split() == signs.split_words()[0]
    with pytest.warns(UserWarning, match="unknown words become"):
        again = signs_recipe.main_word(["--evaluate-only", "--words-per-set", "2", "--out", str(word_out)])
    assert again["quality"] == record["quality"] and "evaluated" in again       # same words, seeds: same reading
    assert json.loads((word_out / "recipe.json").read_text())["evaluated"] == again["evaluated"]
    assert json.loads((word_out / "measurements.json").read_text())["model"] == "signs-word"
    for folder in (char_out, word_out):
        pipe = StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                       safety_checker=None, requires_safety_checker=False)
        assert pipe.unet.config.sample_size == [8, 16]
    assert pipe.tokenizer("a sign that says QZX").input_ids[-2] == pipe.tokenizer.unk_token_id


def test_scenes_recipes_tiny_runs_share_the_vae_and_measure(tmp_path, monkeypatch):
    """Two steps of scenes-vae from the shapes VAE, then scenes-t2i with each encoder (the causal one on the
    bidirectional one's VAE, a sibling: linked); the causal one measured end to end on 2 prompts per kind, and
    measured again by --evaluate-only to the same figures; both load with plain diffusers. A pooled run is
    drawn the pooled way by --evaluate-only (which reads the conditioning from its record)."""
    from diffusers import StableDiffusionPipeline

    from diffusion_lessons import scenes
    from diffusion_lessons.recipes import scenes as scenes_recipe

    vae_out, bi_out, causal_out = tmp_path / "runs" / "scenes-vae", tmp_path / "scenes-t2i", tmp_path / "causal"
    record = scenes_recipe.vae_main(["--steps", "2", "--batch-size", "4", "--n-train", "16", "--out", str(vae_out)])
    assert set(record["quality"]["reader_on_reconstructions"]) == set(scenes.KINDS)
    assert record["vae"]["started_from"].endswith("shapes-t2i/vae")
    tiny = ["--steps", "2", "--batch-size", "4", "--n-train", "16"]
    scenes_recipe.main([*tiny, "--skip-eval", "--encoder-width", "32", "--zero-terminal-snr", "--vae", str(vae_out),
                        "--out", str(bi_out)])
    assert not (bi_out / "vae").is_symlink()
    bi_record = json.loads((bi_out / "recipe.json").read_text())
    assert bi_record["encoder_width"] == 32 and bi_record["zero_terminal_snr"] and "--zero-terminal-snr" in \
        bi_record["command"]
    saved = json.loads((bi_out / "scheduler" / "scheduler_config.json").read_text())
    assert saved["rescale_betas_zero_snr"] and saved["timestep_spacing"] == "trailing"   # sampled from pure noise
    with pytest.raises(SystemExit):                                   # zero terminal SNR needs the v target
        scenes_recipe.main([*tiny, "--zero-terminal-snr", "--prediction-type", "epsilon", "--out",
                            str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()
    assert scenes_recipe.model_name("bidirectional", 256) == "scenes-t2i-w256"
    assert scenes_recipe.model_name("causal") == "scenes-t2i-causal"
    assert scenes_recipe.model_name("bidirectional", conditioning="pooled") == "scenes-t2i-pooled"
    record = scenes_recipe.main([*tiny, "--encoder", "causal", "--prompts-per-kind", "2", "--vae", str(bi_out),
                                 "--out", str(causal_out)])
    assert (causal_out / "vae").is_symlink() and (causal_out / "vae").resolve() == (bi_out / "vae").resolve()
    found = json.loads((causal_out / "measurements.json").read_text())
    assert found["main"]["binding"]["right"]["n"] == 2 and found["main"]["single"]["right"]["n"] == 1
    assert set(found["guidance"]) == {str(g) for g in scenes_recipe.GUIDANCE_SWEEP}
    assert found["reworded"]["relation"]["captions"] == [
        scenes.reworded(s).caption for s in scenes_recipe.test_scenes("relation", 2, 0)]
    assert record["quality"]["binding"]["right"] == {k: v for k, v in found["main"]["binding"]["right"].items()
                                                     if k != "each"}
    assert record["prediction_type"] == scenes_recipe.PREDICTION_TYPE == "v_prediction"
    assert "--prediction-type v_prediction" in record["command"] and not record["zero_terminal_snr"]
    saved = json.loads((causal_out / "scheduler" / "scheduler_config.json").read_text())
    assert saved["prediction_type"] == "v_prediction" and not saved["rescale_betas_zero_snr"]
    again = scenes_recipe.main(["--evaluate-only", "--prompts-per-kind", "2", "--out", str(causal_out)])
    assert again["quality"] == record["quality"] and "evaluated" in again
    pooled_out, drawn = tmp_path / "pooled", []
    real_draw = scenes_recipe.draw
    monkeypatch.setattr(scenes_recipe, "draw", lambda *a, **k: drawn.append(k.get("pooled")) or real_draw(*a, **k))
    record = scenes_recipe.main([*tiny, "--conditioning", "pooled", "--skip-eval", "--vae", str(bi_out),
                                 "--prediction-type", "epsilon", "--out", str(pooled_out)])
    assert record["conditioning"] == "pooled" and "--conditioning pooled" in record["command"] and not drawn
    assert record["prediction_type"] == "epsilon" and "--prediction-type epsilon" in record["command"]
    assert json.loads((pooled_out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == \
        "epsilon"
    scenes_recipe.main(["--evaluate-only", "--prompts-per-kind", "2", "--out", str(pooled_out)])   # reads the record
    assert json.loads((pooled_out / "measurements.json").read_text())["model"] == "scenes-t2i-pooled"
    assert len(drawn) > 2 and all(drawn)
    kinds = {}
    for folder in (bi_out, causal_out):
        pipe = StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                       safety_checker=None, requires_safety_checker=False)
        assert pipe.unet.config.sample_size == 16 and pipe.vae.config.sample_size == scenes.SIZE
        assert pipe.unet.config.cross_attention_dim == (32 if folder == bi_out else 64)
        assert (float(pipe.scheduler.alphas_cumprod[-1]) < 1e-6) == (folder == bi_out)   # zero terminal SNR or not
        kinds[folder.name] = type(pipe.text_encoder).__name__
    assert kinds == {"scenes-t2i": "T5EncoderModel", "causal": "CLIPTextModel"}
