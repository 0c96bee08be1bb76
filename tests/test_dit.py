"""diffusion_lessons.dit and the digits-dit recipe: the DiT builder against diffusers, patchify against
DiTTransformer2DModel's own patch embedding and unpatchify, the global RNG left alone, label dropout owned by
the book's loop, bad inputs; a 2-step run of the recipe that plain diffusers loads and samples."""

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler

from diffusion_lessons import dit, flow, train
from diffusion_lessons.loop import unet_denoiser
from diffusion_lessons.models import build_digits_unet, count_parameters
from diffusion_lessons.recipes import digits_dit


def test_sizes_grow_and_base_is_matched_to_the_unet():
    params = {size: count_parameters(dit.build_digits_dit(size)) for size in ("small", "base", "large")}
    assert params["small"] < params["base"] < params["large"]
    unet = count_parameters(build_digits_unet())
    assert abs(params["base"] - unet) / unet < 0.05          # matched parameters, within 5%


def test_label_table_holds_the_ten_digits_and_the_null_label():
    model = dit.build_digits_dit("small")
    table = model.transformer_blocks[0].norm1.emb.class_embedder.embedding_table
    assert table.num_embeddings == 11                         # labels 0-9 and 10, the null label
    assert model.config.num_embeds_ada_norm == 10


def test_builder_leaves_the_global_rng_alone_and_is_seeded():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = dit.build_digits_dit("small", seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    b = dit.build_digits_dit("small", seed=1)
    c = dit.build_digits_dit("small", seed=2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_training_mode_forward_does_not_drop_labels_or_draw_from_the_global_rng():
    model = dit.build_digits_dit("small").train()
    x, t, y = torch.randn(4, 1, 16, 16), torch.full((4,), 500.0), torch.tensor([1, 2, 3, 4])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    out_train = model(x, t, class_labels=y).sample
    assert torch.equal(torch.get_rng_state(), state)
    out_eval = model.eval()(x, t, class_labels=y).sample
    assert torch.allclose(out_train, out_eval)


def test_adaln_zero_starts_each_block_as_the_identity_and_the_output_at_zero():
    from diffusers import DiTTransformer2DModel

    plain = DiTTransformer2DModel(**dit.digits_dit_config("small"))      # diffusers' constructor: not zeroed
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([10.0, 900.0]), torch.tensor([0, 10])
    assert torch.count_nonzero(plain(x, t, class_labels=y).sample) > 0
    model = dit.build_digits_dit("small")
    assert torch.count_nonzero(model(x, t, class_labels=y).sample) == 0
    block = model.transformer_blocks[0]
    tokens = torch.randn(2, 64, 64)
    emb = dict(timestep=t, class_labels=y)
    assert torch.equal(block(tokens, **emb), tokens)           # gates at zero: the block adds nothing yet


def test_patchify_matches_the_patch_embedding_and_unpatchify_inverts_it():
    model = dit.build_digits_dit("small").eval()
    images = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    patches = dit.patchify(images)
    assert patches.shape == (3, 64, 4)
    conv = model.pos_embed.proj                                # a 2x2 stride-2 convolution
    by_hand = patches @ conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1).T + conv.bias
    tokens = conv(images).flatten(2).transpose(1, 2)
    assert torch.allclose(by_hand, tokens, atol=1e-5)
    assert torch.equal(dit.unpatchify(patches, 16, 16), images)
    # the DiT's own last step: tokens (B, 64, p*p*C) back to the image, einsum 'nhwpqc->nchpwq'
    theirs = torch.einsum("nhwpqc->nchpwq", patches.reshape(3, 8, 8, 2, 2, 1)).reshape(3, 1, 16, 16)
    assert torch.equal(theirs, images)


@pytest.mark.parametrize("call, match", [
    (lambda: dit.digits_dit_config("huge"), "size must be one of"),
    (lambda: dit.build_digits_dit("base", seed=-1), "seed must be"),
    (lambda: dit.build_digits_dit("base", seed=1.5), "seed must be"),
    (lambda: dit.patchify(torch.zeros(16, 16)), "images must be"),
    (lambda: dit.patchify(torch.zeros(1, 1, 16, 16), 3), "patch_size must divide"),
    (lambda: dit.patchify(torch.zeros(1, 1, 16, 16), 0), "patch_size must be"),
    (lambda: dit.unpatchify(torch.zeros(1, 64, 4), 16, 16, channels=3), "patches must have shape"),
    (lambda: dit.unpatchify(torch.zeros(64, 4), 16, 16), "patches must be"),
])
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_package_denoiser_and_the_scheduler_loop_drive_a_dit():
    model = dit.build_digits_dit("small").eval()
    denoise = unet_denoiser(model, "class_labels")
    out = denoise(torch.randn(3, 1, 16, 16), torch.tensor(500.0), torch.tensor([1, 2, 10]))
    assert out.shape == (3, 1, 16, 16)
    images = flow.sample_with_flow_scheduler(model, FlowMatchEulerDiscreteScheduler(), [1, 2], 2, 3.0,
                                             generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()


def test_digits_dit_is_a_registered_recipe():
    assert train.RECIPES["digits-dit"] == "digits_dit"


def test_recipe_two_steps_saves_a_transformer_that_plain_diffusers_loads(tmp_path):
    out = tmp_path / "dit"
    record = digits_dit.main(["--steps", "2", "--skip-eval", "--out", str(out), "--profile", "quick",
                              "--batch-size", "8", "--size", "small"])
    model = DiTTransformer2DModel.from_pretrained(out / "transformer", use_safetensors=True, local_files_only=True)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(out / "scheduler", local_files_only=True)
    assert model.config.num_embeds_ada_norm == 10 and model.config.num_layers == 3
    images = flow.sample_with_flow_scheduler(model, scheduler, [3, 7], 2, 3.0,
                                             generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
    saved = json.loads((out / "recipe.json").read_text())
    assert saved == json.loads(json.dumps(record, default=str))
    assert saved["model"] == "digits-dit" and saved["transformer"]["size"] == "small"
    assert saved["lr"] == digits_dit.LR and "--size small" in saved["command"]
    assert saved["transformer"]["parameters"] == count_parameters(model)
    assert not (out / "unet").exists() and (out / "manifest.json").is_file()


def test_parameters_by_part_add_up_and_name_every_part():
    model, unet = dit.build_digits_dit("small"), build_digits_unet()
    for net, parts in ((model, dit.DIT_PARTS), (unet, dit.UNET_PARTS)):
        counts = dit.parameters_by_part(net, parts)
        assert sum(counts.values()) == count_parameters(net)
        assert "other" not in counts and all(counts[k] > 0 for k in parts)
    width = model.config.num_attention_heads * model.config.attention_head_dim
    counts = dit.parameters_by_part(model, dit.DIT_PARTS)
    assert counts["adaLN-Zero modulation"] == model.config.num_layers * (6 * width * width + 6 * width)
    assert dit.parameters_by_part(model, {"attention": r"\.attn1\."})["other"] == count_parameters(model) - \
        counts["attention"]


def test_attention_weights_are_the_module_s_own_softmax():
    model = DiTTransformer2DModel(**dit.digits_dit_config("small")).eval()   # random, not zeroed: a real map
    attn = model.transformer_blocks[0].attn1
    tokens = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(0))
    weights = dit.attention_weights(attn, tokens)
    assert weights.shape == (2, attn.heads, 64, 64)
    assert torch.allclose(weights.sum(-1), torch.ones(2, attn.heads, 64))
    v = attn.to_v(tokens).reshape(2, 64, attn.heads, -1).transpose(1, 2)
    by_hand = attn.to_out[0]((weights @ v).transpose(1, 2).reshape(2, 64, -1))
    with torch.no_grad():
        assert torch.allclose(by_hand, attn(tokens), atol=1e-5)


def test_shape_trace_reports_shapes_in_order_and_removes_its_hooks():
    model = dit.build_digits_dit("small")
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([5.0, 5.0]), torch.tensor([1, 2])
    out, rows = dit.shape_trace(model, ["proj_out_2", "pos_embed", "transformer_blocks.0"], x, t, class_labels=y)
    assert [r[0] for r in rows] == ["pos_embed", "transformer_blocks.0", "proj_out_2"]     # the order they ran
    assert rows[0][1:] == ("2x1x16x16", "2x64x64") and rows[2][2] == "2x64x4"
    assert out.sample.shape == (2, 1, 16, 16)
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("call, match", [
    (lambda: dit.parameters_by_part("model", dit.DIT_PARTS), "model must be"),
    (lambda: dit.parameters_by_part(torch.nn.Linear(2, 2), {}), "parts must be"),
    (lambda: dit.attention_weights(torch.nn.Linear(2, 2), torch.zeros(1, 4, 2)), "attn must be"),
    (lambda: dit.attention_weights(dit.build_digits_dit("small").transformer_blocks[0].attn1,
                                   torch.zeros(1, 4, 3)), "hidden_states must be"),
    (lambda: dit.shape_trace(torch.nn.Linear(2, 2), "weight", torch.zeros(1, 2)), "names must be"),
    (lambda: dit.shape_trace(torch.nn.Linear(2, 2), ["nope"], torch.zeros(1, 2)), "names must name"),
])
def test_new_helpers_name_the_bad_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_block_parameter_exercise_counts_a_diffusers_block():
    from diffusion_lessons.exercise_bank.lesson10 import dit_block_parameters

    for size in ("small", "base", "large"):
        model = dit.build_digits_dit(size)
        block = model.transformer_blocks[0]
        width = model.config.num_attention_heads * model.config.attention_head_dim
        without_embedding = count_parameters(block) - count_parameters(block.norm1.emb)
        assert dit_block_parameters(width) == without_embedding


def test_patchify_and_adaln_exercises_against_the_package_and_diffusers():
    from diffusion_lessons.exercise_bank.lesson10 import adaln_by_hand, patchify_by_hand

    images = torch.randn(2, 3, 8, 12)
    assert torch.equal(patchify_by_hand(images, 2), dit.patchify(images, 2))
    norm = dit.build_digits_dit("small").transformer_blocks[0].norm1
    x, t, y = torch.randn(2, 5, 64), torch.tensor([100.0, 800.0]), torch.tensor([3, 10])
    with torch.no_grad():
        torch.nn.init.normal_(norm.linear.weight)                 # not zero, so shift and scale do something
        emb = norm.emb(t, y, hidden_dtype=x.dtype)
        shift, scale, *_ = norm.linear(norm.silu(emb)).chunk(6, dim=1)
        assert torch.allclose(adaln_by_hand(x, shift, scale), norm(x, t, y)[0], atol=1e-5)


def test_joint_attention_exercise_is_sd3_s_attention():
    from diffusers import SD3Transformer2DModel

    from diffusion_lessons.exercise_bank.lesson10 import joint_attention_by_hand

    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                  pooled_projection_dim=16, out_channels=4, pos_embed_max_size=8).eval()
    attn = model.transformer_blocks[0].attn       # the last block updates no text: block 0 of 2
    img, txt = torch.randn(2, 16, 16), torch.randn(2, 5, 16)

    def heads(z):
        return z.reshape(2, z.shape[1], attn.heads, -1).transpose(1, 2)

    with torch.no_grad():
        out_img, out_txt = joint_attention_by_hand(heads(attn.to_q(img)), heads(attn.to_k(img)), heads(attn.to_v(img)),
                                                   heads(attn.add_q_proj(txt)), heads(attn.add_k_proj(txt)),
                                                   heads(attn.add_v_proj(txt)))
        theirs_img, theirs_txt = attn(img, encoder_hidden_states=txt)
        merge = lambda z: z.transpose(1, 2).reshape(2, z.shape[2], -1)  # noqa: E731
        assert torch.allclose(attn.to_out[0](merge(out_img)), theirs_img, atol=1e-5)
        assert torch.allclose(attn.to_add_out(merge(out_txt)), theirs_txt, atol=1e-5)
