"""Training the noise predictor (lesson 03): the simple loss, label dropout, EMA, the fit loop."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_lessons.data import NULL_LABEL, load_digits
from diffusion_lessons.models import TinyUNet
from diffusion_lessons.schedules import make_schedule
from diffusion_lessons.training import EMA, cosine_lr, diffusion_loss, fit, loss_by_timestep


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


def test_ema_warms_up_and_averages():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, max_decay=0.999)
    assert ema.decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    old = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for p_ema, p_old, p in zip(ema.model.parameters(), old, model.parameters()):
        torch.testing.assert_close(p_ema, 0.1 * p_old + 0.9 * p)
    ema.num_updates = 10**6
    assert ema.decay() == 0.999
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_fit_updates_the_ema_copy(batch):
    x0, labels = batch
    model = TinyUNet(channels=(8, 16))
    ema = EMA(model)
    start = [p.clone() for p in ema.model.parameters()]
    fit(model, x0, labels, steps=2, batch_size=8, ema=ema, device="cpu", progress=False)
    assert ema.num_updates == 2
    assert any(not torch.equal(a, b) for a, b in zip(start, ema.model.parameters()))


def test_cosine_learning_rate_decays_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    sched = cosine_lr(opt, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-3) and lrs[5] == pytest.approx(1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


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
