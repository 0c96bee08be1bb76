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
    """The loop the VAE and text-to-image recipes use: batch_fn draws the batch and all its randomness, loss_fn
    is deterministic; a seeded run repeats; another seed differs."""
    target = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))

    def run(seed: int, warmup: int = 2) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 3)

        def batch_fn(g):
            x = target[torch.randint(0, 64, (8,), generator=g)]
            return x, 0.1 * torch.randn(x.shape, generator=g)

        loss_fn = lambda batch: (model(batch[0] + batch[1]) - batch[0]).square().mean()  # noqa: E731
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


# fit() on the digits recipe's settings, 5 steps, seed 0, CPU, 1 thread, recorded with the code of commit 44e5cc5
# (before the loop moved onto accelerate) on this project's CPU: the losses and SHA-256 of the weights (raw and
# EMA, state_dict in key order). Floating-point kernels differ between CPU models, so elsewhere the test above
# (fit against a hand-written loop) is the check.
BEFORE_ACCELERATE = dict(
    cpu="AMD EPYC",
    losses=[0.8077229261398315, 0.5700881481170654, 0.5176104307174683, 0.47324520349502563, 0.4381273090839386],
    model="a428b8c0ee4818cb409f7c272d7b91d14322d9e3884df9b9f11d251f3fd44e8f",
    ema="9276bfa8d9a94fb4655f90c0e571c16eef6f80995e70cc63ea5f4500daa655f0")


def weights_sha256(model: torch.nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_single_process_fit_is_bit_identical_to_the_loop_before_accelerate():
    from pathlib import Path

    from diffusion_lessons.data import DIGITS_SIZE
    from diffusion_lessons.device import seed_everything
    from diffusion_lessons.models import build_digits_unet
    from diffusion_lessons.recipes import digits

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    if cpu != BEFORE_ACCELERATE["cpu"]:
        pytest.skip(f"values recorded on {BEFORE_ACCELERATE['cpu']}, this is {cpu}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(0)
        x0, labels = load_digits("train", DIGITS_SIZE)
        model = build_digits_unet(seed=0)
        ema = EMA(model, max_decay=digits.EMA_MAX_DECAY)
        losses = fit(model, x0, labels, steps=5, batch_size=digits.BATCH_SIZE, lr=digits.LR,
                     schedule=make_schedule(digits.NOISE_SCHEDULE), p_uncond=digits.P_UNCOND, ema=ema, seed=0,
                     device="cpu", prediction_type=digits.PREDICTION_TYPE, snr_gamma=digits.SNR_GAMMA, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert losses == BEFORE_ACCELERATE["losses"]
    assert weights_sha256(model) == BEFORE_ACCELERATE["model"] and weights_sha256(ema.model) == BEFORE_ACCELERATE["ema"]


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(batch):
    """K micro-batches of B/K rows (each loss divided by K, gradients summed) = one batch of B rows, up to float
    rounding; the noise, t and dropout of each row are the same, drawn for the whole batch."""
    from diffusion_lessons.training import make_accelerator

    x0, labels = batch
    runs = []
    for k in (1, 4):
        torch.manual_seed(0)
        model = TinyUNet(channels=(8, 16))
        losses = fit(model, x0, labels, steps=3, batch_size=16, lr=1e-3, device="cpu", progress=False,
                     accelerator=make_accelerator("cpu", gradient_accumulation_steps=k))
        runs.append((losses, predictions(model, x0, labels)))
    (l1, out1), (l4, out4) = runs
    assert l4 == pytest.approx(l1, abs=1e-6)
    # the trained networks agree. (Their raw weights may not, to 1e-5: a bias that a following GroupNorm cancels
    # has a gradient of pure rounding noise, which Adam scales up to steps of about lr; it changes no output.)
    torch.testing.assert_close(out4, out1, atol=1e-5, rtol=0)


@torch.no_grad()
def predictions(model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's outputs on a fixed probe: x0 noised at 8 timesteps from 0 to 999."""
    from diffusion_lessons.models import predict_eps

    s = make_schedule("cosine")
    t = torch.linspace(0, 999, 8).long().repeat_interleave(4)
    x = x0[:4].repeat(8, 1, 1, 1)
    x_t = s.add_noise(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(3)), t)
    return predict_eps(model.eval(), x_t, t, labels[:4].repeat(8))


def test_the_loop_refuses_what_it_cannot_split_or_run(batch):
    from diffusion_lessons.training import make_accelerator

    x0, labels = batch
    model = TinyUNet(channels=(8, 16))
    with pytest.raises(ValueError, match="split evenly"):
        fit(model, x0, labels, steps=1, batch_size=6, device="cpu", progress=False,
            accelerator=make_accelerator("cpu", gradient_accumulation_steps=4))
    with pytest.raises(ValueError, match="bf16.*CUDA"):
        make_accelerator("cpu", mixed_precision="bf16")
    with pytest.raises(ValueError, match="mixed_precision"):
        make_accelerator("cpu", mixed_precision="fp8")
    with pytest.raises(ValueError, match="generator"):
        train_loop(model, lambda b: b.sum(), lambda g: torch.zeros(2), steps=1, lr=1.0, generator=None)


def test_train_loop_betas_reach_adamw_and_the_callback_sees_every_step():
    """betas are AdamW's (checked against torch's AdamW run by hand on the same batches); callback(step) is
    called once after each step's update, in order, with the weights of that step."""
    target = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))

    def batch_fn(g):
        return target[torch.randint(0, 32, (8,), generator=g)]

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    reference = torch.nn.Linear(3, 3)
    reference.load_state_dict(model.state_dict())
    seen = []
    train_loop(model, lambda x: (model(x) - x).square().mean(), batch_fn, steps=5, lr=0.05,
               generator=torch.Generator().manual_seed(1), weight_decay=0.0, max_grad_norm=None, progress=False,
               betas=(0.5, 0.9), callback=lambda step: seen.append((step, model.weight.detach().clone())))
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.05, betas=(0.5, 0.9), weight_decay=0.0)
    scheduler = cosine_lr(optimizer, 5)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 6):
        x = batch_fn(g)
        (reference(x) - x).square().mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        assert seen[step - 1][0] == step
        torch.testing.assert_close(seen[step - 1][1], reference.weight.detach())
    for bad, match in ((dict(betas=(0.5,)), "betas"), (dict(betas=(1.0, 0.9)), "betas"), (dict(callback=3), "callback")):
        with pytest.raises(ValueError, match=match):
            train_loop(model, lambda x: model(x).sum(), batch_fn, steps=1, lr=0.1,
                       generator=torch.Generator().manual_seed(0), progress=False, **bad)
