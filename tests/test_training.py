"""Training the noise predictor (lesson 03): the simple loss, label dropout, and the one training loop
(fit and train_loop) checked against a hand-written loop with diffusers' EMAModel and cosine schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from diffusion_lessons.data import NULL_LABEL, load_digits
from diffusion_lessons.models import TinyUNet
from diffusion_lessons.schedules import make_schedule
from diffusion_lessons.training import EMA, cosine_lr, diffusion_loss, fit, loss_by_timestep, train_loop


class Recorder(torch.nn.Module):
    """A stand-in model that predicts zero noise and records what it was given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.clone(), t.clone(), class_labels.clone()))
        return x * self.w


@pytest.fixture(scope="module")
def batch():
    x, y = load_digits("train")
    return x[:32], y[:32]


def test_loss_is_the_simple_loss_of_ho_et_al(batch):
    x0, labels = batch
    s, model = make_schedule("cosine"), Recorder()
    t = torch.randint(0, 1000, (32,), generator=torch.Generator().manual_seed(1))
    loss = diffusion_loss(model, s, x0, labels, generator=torch.Generator().manual_seed(0), t=t)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # the same draw
    x_t, t_seen, labels_seen = model.calls[0]
    abar = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    assert torch.equal(t_seen, t) and torch.equal(labels_seen, labels)
    torch.testing.assert_close(loss, eps.square().mean())  # the model predicted 0


def test_label_dropout_reaches_the_model(batch):
    x0, labels = batch
    model = Recorder()
    diffusion_loss(model, make_schedule("cosine"), x0, labels, p_uncond=1.0)
    assert (model.calls[0][2] == NULL_LABEL).all()
    diffusion_loss(model, make_schedule("cosine"), x0, None)
    assert (model.calls[1][2] == NULL_LABEL).all()


def test_a_short_training_run_lowers_the_loss_on_a_fixed_batch(batch):
    x0, labels = batch
    s = make_schedule("cosine")
    torch.manual_seed(0)
    model = TinyUNet(channels=(16, 32))
    t = torch.linspace(50, 950, 32).long()
    probe = lambda: diffusion_loss(model, s, x0, labels, generator=torch.Generator().manual_seed(9), t=t).item()  # noqa: E731
    before = probe()
    losses = fit(model, x0, labels, steps=40, batch_size=32, lr=3e-3, schedule=s, p_uncond=0.0,
                 device="cpu", progress=False)
    after = probe()
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert after < 0.6 * before, (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_fit_is_deterministic_under_its_seed(batch):
    x0, labels = batch
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = TinyUNet(channels=(8, 16))
        runs.append(fit(model, x0, labels, steps=3, batch_size=8, seed=4, device="cpu", progress=False))
    assert runs[0] == runs[1]


def test_ema_is_diffusers_ema_model_with_a_warming_up_decay():
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema, reference = EMA(model, max_decay=0.9), EMAModel(model.parameters(), decay=0.9)
    decays = []
    for n in range(30):
        decays.append(ema.decay())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape))
        ema.update(model)
        reference.step(model.parameters())
        assert ema.num_updates == reference.optimization_step == n + 1
        for p_ema, p_ref in zip(ema.model.parameters(), reference.shadow_params):
            torch.testing.assert_close(p_ema, p_ref)
    # the warm-up: d = min(max_decay, (1 + n) / (10 + n)) at update n (n = 0 copies the weights)
    assert decays == [0.0] + [min(0.9, (1 + n) / (10 + n)) for n in range(1, 30)]
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_fit_updates_the_ema_copy(batch):
    x0, labels = batch
    model = TinyUNet(channels=(8, 16))
    ema = EMA(model)
    start = [p.clone() for p in ema.model.parameters()]
    fit(model, x0, labels, steps=2, batch_size=8, ema=ema, device="cpu", progress=False)
    assert ema.num_updates == 2
    assert any(not torch.equal(a, b) for a, b in zip(start, ema.model.parameters()))


@pytest.mark.parametrize("warmup", [0, 3])
def test_learning_rate_follows_diffusers_cosine_schedule(warmup):
    from diffusers.optimization import get_scheduler

    lrs = {}
    makers = dict(book=lambda opt: cosine_lr(opt, 10, warmup),
                  diffusers=lambda opt: get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=10))
    for name, make in makers.items():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
        sched, lrs[name] = make(opt), []
        for _ in range(11):
            lrs[name].append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert lrs["book"] == lrs["diffusers"]
    # written out: linear warm-up from 0, then a half cosine from 2e-3 to 0 at step 10
    expected = [2e-3 * n / warmup if n < warmup else 1e-3 * (1 + math.cos(math.pi * (n - warmup) / (10 - warmup)))
                for n in range(11)]
    assert lrs["book"] == pytest.approx(expected, abs=1e-12)


def test_fit_is_the_hand_written_loop_with_diffusers_parts(batch):
    """fit = AdamW + clip + diffusers' cosine LR + diffusers' EMAModel around diffusion_loss, with every
    random draw (batch, t, eps, dropped labels) from one CPU generator."""
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    x0, labels = batch
    s = make_schedule("cosine")
    torch.manual_seed(0)
    model = TinyUNet(channels=(8, 16))
    by_hand = copy.deepcopy(model)
    ema = EMA(model, max_decay=0.99)
    losses = fit(model, x0, labels, steps=4, batch_size=8, lr=1e-3, schedule=s, p_uncond=0.5, ema=ema, seed=7,
                 device="cpu", progress=False, prediction_type="v_prediction", snr_gamma=5.0)

    generator = torch.Generator().manual_seed(7)
    opt = torch.optim.AdamW(by_hand.parameters(), lr=1e-3)
    sched, average = get_cosine_schedule_with_warmup(opt, 0, 4), EMAModel(by_hand.parameters(), decay=0.99)
    expected = []
    for _ in range(4):
        idx = torch.randint(0, len(x0), (8,), generator=generator)
        opt.zero_grad()
        loss = diffusion_loss(by_hand, s, x0[idx], labels[idx], 0.5, generator, prediction_type="v_prediction",
                              snr_gamma=5.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 1.0)
        opt.step()
        sched.step()
        average.step(by_hand.parameters())
        expected.append(loss.item())
    assert losses == expected
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), by_hand.parameters()))
    for p_ema, p_ref in zip(ema.model.parameters(), average.shadow_params):
        torch.testing.assert_close(p_ema, p_ref)


def test_train_loop_takes_any_loss_and_batch():
    """The loop the VAE and text-to-image recipes use: a seeded run repeats; another seed differs."""
    target = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))

    def run(seed: int, warmup: int = 2) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 3)
        batch_fn = lambda g: target[torch.randint(0, 64, (8,), generator=g)]  # noqa: E731
        loss_fn = lambda x, g: (model(x + 0.1 * torch.randn(x.shape, generator=g)) - x).square().mean()  # noqa: E731
        losses = train_loop(model, loss_fn, batch_fn, steps=30, lr=0.05, generator=torch.Generator().manual_seed(seed),
                            weight_decay=0.0, warmup=warmup, max_grad_norm=None, progress=False)
        return losses, model.weight.detach().clone()

    (a, w_a), (b, w_b), (c, _) = run(1), run(1), run(2)
    assert a == b and torch.equal(w_a, w_b) and a != c
    assert sum(a[-5:]) < sum(a[:5])


def test_loss_by_timestep(batch):
    x0, labels = batch
    model = Recorder()
    t, loss = loss_by_timestep(model, make_schedule("cosine"), x0, labels,
                               generator=torch.Generator().manual_seed(0))
    assert t.shape == loss.shape == (20,) and t[0] == 0 and t[-1] == 999
    torch.testing.assert_close(loss, torch.ones(20), atol=0.05, rtol=0)  # zero prediction: E[eps^2] = 1


def test_fit_bad_inputs_name_the_argument(batch):
    x0, labels = batch
    model = TinyUNet(channels=(8, 16))
    cases = [(dict(steps=0), "steps"), (dict(batch_size=0), "batch_size"), (dict(lr=0.0), "lr"),
             (dict(labels=labels[:5]), "labels"), (dict(p_uncond=2.0), "p_uncond")]
    for kwargs, name in cases:
        kwargs = {"labels": labels, "steps": 1, **kwargs}
        with pytest.raises(ValueError, match=name):
            fit(model, x0, device="cpu", progress=False, **kwargs)
    with pytest.raises(ValueError, match="x0"):
        fit(model, x0[0], steps=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="max_decay"):
        EMA(model, max_decay=1.0)
