"""Lesson 17's GAN and VAE (diffusion_lessons.generators) and the shipped digits-gan-vae models."""

import json
from pathlib import Path

import pytest
import torch

from diffusion_lessons import generators as gen
from diffusion_lessons.data import load_digits
from diffusion_lessons.evaluation import class_coverage, train_digit_classifier
from diffusion_lessons.models import build_digits_unet, count_parameters

ROOT = Path(gen.__file__).parent / "pretrained" / "digits-gan-vae"


def fixed_batch(n=64, seed=0):
    x, labels = load_digits("train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.shape[0], (n,), generator=g)
    return x[idx], labels[idx], torch.randn(n, gen.Z_DIM, generator=g)


def test_generator_is_matched_to_the_unet_and_draws_digit_shaped_images():
    generator = gen.DigitsGenerator()
    unet = count_parameters(build_digits_unet())
    assert abs(count_parameters(generator) - unet) / unet < 0.05
    out = gen.generate(generator, [0, 3, 9], torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 16, 16) and out.abs().max() <= 1
    again = gen.generate(generator, [0, 3, 9], torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_each_network_gets_only_its_own_gradient():
    """The one loss train_loop sees: its gradient is the critic loss's for the critic and the generator loss's
    for the generator (the generator loss must not move the critic, nor the critic loss the generator)."""
    torch.manual_seed(0)
    pair = gen.GanPair(gen.DigitsGenerator(), gen.DigitsCritic())
    x, labels, z = fixed_batch()
    critic_loss, generator_loss = gen.gan_losses(pair, x, labels, z)
    d_params, g_params = list(pair.critic.parameters()), list(pair.generator.parameters())
    want_d = torch.autograd.grad(critic_loss, d_params, retain_graph=True)
    want_g = torch.autograd.grad(generator_loss, g_params, retain_graph=True)
    got = torch.autograd.grad(gen.gan_loss_fn(pair)(dict(x0=x, labels=labels, z=z)), d_params + g_params)
    for a, b in zip(got, [*want_d, *want_g]):
        torch.testing.assert_close(a, b)
    assert all(g is None for g in torch.autograd.grad(generator_loss, d_params, allow_unused=True))


def test_a_gan_training_step_lowers_each_loss_on_a_fixed_batch():
    """One small AdamW step of the combined loss: the critic's loss falls (the generator held at its old
    weights) and the generator's loss falls (the critic held at its old weights)."""
    torch.manual_seed(0)
    pair = gen.GanPair(gen.DigitsGenerator(), gen.DigitsCritic())
    x, labels, z = fixed_batch()
    old = gen.GanPair(gen.DigitsGenerator(), gen.DigitsCritic())
    old.load_state_dict(pair.state_dict())
    d_before, g_before = gen.gan_losses(pair, x, labels, z)
    optimizer = torch.optim.AdamW(pair.parameters(), lr=1e-4, betas=(0.5, 0.999), weight_decay=0.0)
    gen.gan_loss_fn(pair)(dict(x0=x, labels=labels, z=z)).backward()
    optimizer.step()
    d_after, _ = gen.gan_losses(gen.GanPair(old.generator, pair.critic), x, labels, z)
    _, g_after = gen.gan_losses(gen.GanPair(pair.generator, old.critic), x, labels, z)
    assert d_after < d_before and g_after < g_before


def test_vae_loss_is_the_negative_elbo():
    torch.manual_seed(0)
    vae = gen.DigitsVAE(gen.DigitsEncoder(), gen.DigitsGenerator())
    x, labels, eps = fixed_batch(8)
    reconstruction, kl = gen.vae_loss(vae, x, labels, eps)
    mean, logvar = vae.encoder(x, labels)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1).mean())
    recon = vae.decoder(mean + (0.5 * logvar).exp() * eps, labels)
    log_lik = torch.distributions.Normal(recon, gen.VAE_SIGMA).log_prob(x).flatten(1).sum(1).mean()
    constant = 256 * torch.log(torch.tensor(gen.VAE_SIGMA * (2 * torch.pi) ** 0.5))
    torch.testing.assert_close(reconstruction, -log_lik - constant)


def test_a_vae_training_step_lowers_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    vae = gen.DigitsVAE(gen.DigitsEncoder(), gen.DigitsGenerator())
    x, labels, eps = fixed_batch()
    loss_fn = gen.vae_loss_fn(vae)
    batch = dict(x0=x, labels=labels, z=eps)
    before = loss_fn(batch)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    before.backward()
    optimizer.step()
    assert loss_fn(batch) < before


def test_class_coverage_counts_the_digits_drawn_right():
    x, labels = load_digits("test")
    classifier = train_digit_classifier()
    assert class_coverage(x, labels, classifier).value == 1.0
    swapped = labels.clone()
    swapped[labels == 3], swapped[labels == 4] = 4, 3    # asked for a 3, drew a 4, and the other way round
    found = class_coverage(x, swapped, classifier)
    assert found.value == pytest.approx(0.8) and found.n == 10


@pytest.mark.parametrize("call, match", [
    (lambda: gen.generate(torch.nn.Linear(2, 2), [0]), "generator_net"),
    (lambda: gen.generate(gen.DigitsGenerator(), [10]), "labels"),
    (lambda: gen.generate(gen.DigitsGenerator(), []), "labels"),
    (lambda: gen.gan_losses(gen.GanPair(gen.DigitsGenerator(), gen.DigitsCritic()), torch.zeros(2, 1, 16, 16),
                            torch.zeros(3, dtype=torch.long), torch.zeros(2, gen.Z_DIM)), "labels must be a tensor"),
    (lambda: gen.vae_loss(gen.DigitsVAE(gen.DigitsEncoder(), gen.DigitsGenerator()), torch.zeros(2, 1, 16, 16),
                          torch.zeros(2, dtype=torch.long), torch.zeros(3, gen.Z_DIM)), "eps must have"),
    (lambda: gen.DigitsGenerator(sample_size=32), "sample_size"),
])
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


needs_models = pytest.mark.skipif(not (ROOT / "measurements.json").is_file(), reason="digits-gan-vae is not shipped")


@needs_models
def test_shipped_models_load_from_safetensors_and_their_record_holds():
    """The shipped generator and decoder load by from_pretrained (safetensors only); re-measured on a fresh
    seed, their fidelity lies within the record's interval widened by 0.1."""
    classifier = train_digit_classifier()
    record = json.loads((ROOT / "measurements.json").read_text())
    labels = torch.arange(10).repeat_interleave(10)
    for name, folder in (("gan", "generator"), ("vae", "vae_decoder")):
        net = gen.DigitsGenerator.from_pretrained(ROOT / folder, use_safetensors=True).eval()
        images = gen.generate(net, labels, torch.Generator().manual_seed(99))
        fid = (classifier.predict(images) == labels).float().mean().item()
        assert record[name]["fidelity"]["low"] - 0.1 <= fid <= record[name]["fidelity"]["high"] + 0.1


def test_lesson17_exercise_references_agree_with_torch_and_the_package():
    from diffusion_lessons.exercise_bank import lesson17

    torch.manual_seed(0)
    pair = gen.GanPair(gen.DigitsGenerator(), gen.DigitsCritic())
    x, labels, z = fixed_batch(16)
    with torch.no_grad():
        real, fake = pair.critic(x, labels), pair.critic(pair.generator(z, labels), labels)
        for a, b in zip(lesson17.gan_losses_by_hand(real, fake), gen.gan_losses(pair, x, labels, z)):
            torch.testing.assert_close(a, b)
    mean, logvar = torch.randn(4, 6), torch.randn(4, 6)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    torch.testing.assert_close(lesson17.gaussian_kl_by_hand(mean, logvar),
                               torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1))
    scale, shift, points = torch.tensor([2.0, -0.5, 1.5]), torch.tensor([0.3, -1.0, 2.0]), torch.randn(5, 3)
    flow = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1),
        [torch.distributions.AffineTransform(shift, scale, event_dim=1)])
    torch.testing.assert_close(lesson17.affine_flow_log_likelihood(points, scale, shift), flow.log_prob(points))
