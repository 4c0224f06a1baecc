"""VPTTA, GraTa and TENT against the definitions of their reference code (small random networks)."""
import numpy as np
import pytest
import torch

from medsegsuite.tta.common import binary_entropy, bn_affine_params, bn_layers, per_image_statistics
from medsegsuite.tta.grata import GraTa, lr_multiplier, unview, view
from medsegsuite.tta.network import build_unet
from medsegsuite.tta.tent import Tent
from medsegsuite.tta.vptta import (VPTTA, FourierPrompt, PromptMemory, WarmupBatchNorm2d, convert_batchnorm,
                                   warmup_lambda)

TINY = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks on 32 px images gain nothing from threads; on a busy 2-core machine the
    thread hand-offs of such small ops cost up to a second per image."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_net(seed=0):
    torch.manual_seed(seed)
    net = build_unet(TINY)
    # give BN non-trivial source statistics, as a trained network has
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, 32, 32))
    return net.eval()


def image(seed, size=32, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = ((xx ** 2 + yy ** 2) < 0.4).float()
    return (0.3 + 0.5 * blob + 0.05 * torch.randn(size, size, generator=g) + shift)[None, None]


# ------------------------------------------------------------------ VPTTA

def test_prompt_parameter_count_follows_alpha():
    assert FourierPrompt(512, channels=3).data_prompt.numel() == 75
    assert FourierPrompt(352, channels=3).data_prompt.numel() == 27
    assert FourierPrompt(128, channels=1).data_prompt.numel() == 1


def test_all_ones_prompt_reproduces_the_input():
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out, key = FourierPrompt(512, channels=3)(x)
    assert out.shape == x.shape and float((out - x).abs().max()) <= 1e-4
    x1 = torch.rand(1, 1, 128, 128) * 100
    with torch.no_grad():
        assert float((FourierPrompt(128)(x1)[0] - x1).abs().max()) <= 1e-4 * 100


def test_prompt_transform_matches_an_independent_numpy_version():
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 40, 40)).astype(np.float32)
    p = FourierPrompt(400, channels=3)  # s = 4
    vals = rng.uniform(0.5, 1.5, (1, 3, 4, 4)).astype(np.float32)
    p.set(vals)
    out, key = p(torch.from_numpy(x))
    spec = np.fft.fft2(x, axes=(-2, -1))
    amp, pha = np.abs(spec), np.angle(spec)
    amp_s = np.fft.fftshift(amp)  # the reference shifts every axis (batch 1)
    mask = np.ones_like(amp_s)
    o = (40 - 4) // 2
    mask[..., o:o + 4, o:o + 4] = vals
    ref = np.real(np.fft.ifft2(np.fft.ifftshift(amp_s * mask) * np.exp(1j * pha), axes=(-2, -1)))
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-4)
    np.testing.assert_allclose(key.numpy(), amp_s[..., o:o + 4, o:o + 4], rtol=1e-4, atol=1e-3)


def test_warmup_lambda_and_mixed_statistics():
    assert round(warmup_lambda(1), 4) == 0.8333
    assert warmup_lambda(25) == pytest.approx(0.5)
    bn = WarmupBatchNorm2d(2)
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(1, 2, 8, 8)
    bn.new_sample = True
    for t in range(1, 26):
        mu, var = bn.mixed_statistics(x)
        assert bn.sample_num == t
    lam = 0.5
    np.testing.assert_allclose(mu.flatten().numpy(), (lam * x.mean((0, 2, 3)) + lam * 3.0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(var.flatten().numpy(), (lam * x.var((0, 2, 3)) + lam * 4.0).numpy(), rtol=1e-5)


def test_memory_fifo_cap_and_retrieval_threshold():
    mem = PromptMemory(size=40, neighbours=16)
    rng = np.random.default_rng(1)
    keys = rng.random((50, 4)).astype(np.float32)
    for i in range(15):
        mem.push(keys[i], np.full((1, 1, 2, 2), i, np.float32))
    assert not mem.ready()
    with pytest.raises(RuntimeError):
        mem.retrieve(keys[0])
    mem.push(keys[15], np.full((1, 1, 2, 2), 15, np.float32))
    assert mem.ready()
    for i in range(16, 50):
        mem.push(keys[i], np.full((1, 1, 2, 2), i, np.float32))
    assert len(mem) == 40
    assert np.array_equal(mem.keys[0], keys[10]) and np.array_equal(mem.keys[-1], keys[49])
    q = rng.random(4).astype(np.float32)
    got = mem.retrieve(q)
    ks = keys[10:]
    cos = ks @ q / (np.linalg.norm(ks, axis=1) * np.linalg.norm(q))
    top = np.argsort(cos)[-16:]
    w = np.exp(cos[top] / 0.2)
    w /= w.sum()
    np.testing.assert_allclose(got.ravel()[0], float(np.sum(w * (top + 10))), rtol=1e-5)


def test_vptta_no_retrieval_before_16_and_model_weights_unchanged():
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = VPTTA(net, image_size=400, channels=1)  # s = 4
    calls = []
    orig = a.memory.retrieve
    a.memory.retrieve = lambda k: calls.append(len(a.memory)) or orig(k)
    inits = []
    orig_set = a.prompt.set
    a.prompt.set = lambda v: inits.append(np.array(v)) or orig_set(v)
    adapted_before = {k: v.clone() for k, v in a.model.state_dict().items()}
    for i in range(18):
        a.predict(image(i, shift=0.3))
    assert calls == [16, 17]  # retrieval only once the bank holds 16 entries
    assert all(np.all(v == 1) for v in inits[:16]) and not np.all(inits[16] == 1)
    assert a.images_seen == 18 and len(a.memory) == 18
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, adapted_before[k]), k
    assert not torch.all(a.prompt.data_prompt == 1)


def test_vptta_bn_conversion_keeps_source_statistics():
    net = tiny_net()
    conv = convert_batchnorm(__import__("copy").deepcopy(net))
    bns = [m for m in conv.modules() if isinstance(m, WarmupBatchNorm2d)]
    assert len(bns) == len(bn_layers(net)) > 0
    assert torch.equal(bns[0].running_mean, bn_layers(net)[0].running_mean)


# ------------------------------------------------------------------ GraTa

def test_grata_lr_multiplier():
    assert lr_multiplier(1.0) == 1.0 and lr_multiplier(0.0) == 0.25 and lr_multiplier(-1.0) == 0.0


def test_grata_changes_only_bn_affine_and_scales_its_step():
    net = tiny_net()
    g = GraTa(net, lr=1e-2)
    src = {n: p.detach().clone() for n, p in g.model.named_parameters()}
    bn_ids = {id(p) for p in bn_affine_params(g.model)}
    cos = g.step(image(0, shift=0.4))
    assert -1.0 <= cos <= 1.0
    assert g.last_lr == pytest.approx(1e-2 * (cos + 1) ** 2 / 4)
    changed_bn = 0
    for n, p in g.model.named_parameters():
        if id(p) in bn_ids:
            changed_bn += int(not torch.equal(p, src[n]))
        else:
            assert torch.equal(p, src[n]), f"{n} changed"
    assert changed_bn > 0
    assert all(m.running_mean is None for m in bn_layers(g.model))  # test-image statistics
    g.reset()
    for n, p in g.model.named_parameters():
        assert torch.equal(p, src[n])


def test_per_image_statistics_batch_equals_one_forward_per_image():
    """A batch of k images inside the context gives each image what a forward of it alone gives (BN with
    its own statistics); outside it, BN pools the batch again; eval-mode BN is left alone."""
    g = GraTa(tiny_net(2))
    xs = torch.cat([image(i, shift=0.3 * i) for i in range(4)])
    with torch.no_grad():
        alone = torch.cat([g.model(xs[i:i + 1]) for i in range(4)])
        pooled = g.model(xs)
        with per_image_statistics(g.model):
            batched = g.model(xs)
        assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(pooled, alone, atol=1e-3)  # the batch's statistics differ from each image's
        assert torch.equal(g.model(xs), pooled)  # restored on exit
        frozen = tiny_net(2).eval()
        with per_image_statistics(frozen):
            assert torch.equal(frozen(xs), tiny_net(2).eval()(xs))


def test_grata_pseudo_label_is_the_mean_of_six_separate_views():
    g = GraTa(tiny_net(4))
    x = image(7, shift=0.2)
    with torch.no_grad():
        ref = torch.stack([g.model(x)] + [unview(g.model(view(x, k)), k) for k in range(5)]).sigmoid().mean(0)
        assert torch.allclose(g.pseudo_label(x), ref, atol=1e-6)
        two = torch.cat([x, image(8)])  # several images: one forward per view, the batch's statistics
        ref2 = torch.stack([g.model(two)] + [unview(g.model(view(two, k)), k) for k in range(5)]).sigmoid().mean(0)
        assert torch.equal(g.pseudo_label(two), ref2)


def test_grata_update_uses_pseudo_gradient_at_perturbed_point():
    """The step equals: Adam with g_pse computed at θ − g_aux, learning rate η0·(cos+1)²/4."""
    net = tiny_net(3)
    x = image(5, shift=0.4)
    g = GraTa(net, lr=1e-3)
    x_aug = torch.rand_like(x)
    # manual computation on a twin
    twin = GraTa(net, lr=1e-3)
    twin.optimizer.zero_grad()
    twin.aux_loss(x).backward()
    ga = [p.grad.clone() for p in twin.params]
    with torch.no_grad():
        for p, gg in zip(twin.params, ga):
            p.sub_(gg)
    twin.optimizer.zero_grad()
    twin.pseudo_loss(x, x_aug).backward()
    gp = [p.grad.clone() for p in twin.params]
    cos = sum((a * b).sum() for a, b in zip(ga, gp)) / (
        torch.cat([a.flatten() for a in ga]).norm() * torch.cat([b.flatten() for b in gp]).norm())
    assert g.step(x, x_aug) == pytest.approx(float(cos), abs=1e-5)


# ------------------------------------------------------------------ TENT

def test_tent_lowers_entropy_and_trains_only_bn():
    net = tiny_net()
    t = Tent(net, lr=1e-2)
    x = image(0, shift=0.5)
    first = float(binary_entropy(t.predict(x)).mean())
    for _ in range(15):
        t.predict(x)
    with torch.no_grad():
        last = float(binary_entropy(t.model(x)).mean())
    assert last < first * 0.95
    for (n, p), (_, q) in zip(t.model.named_parameters(), net.named_parameters()):
        if "conv" in n and n.endswith("weight") and p.dim() == 4:
            assert torch.equal(p, q)


@pytest.mark.parametrize("batch", [1, 2])
def test_warmup_bn_output_and_loss_match_the_reference_formula(batch):
    torch.manual_seed(0)
    bn = WarmupBatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
    bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.0]))
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.2, -0.1]))
    bn.sample_num, bn.new_sample = 3, True
    x = torch.randn(batch, 3, 9, 11) * 2 + 1
    y = bn(x)
    lam = 1 / (np.sqrt(4) / 5 + 1)
    mu = lam * x.mean((0, 2, 3), keepdim=True) + (1 - lam) * bn.running_mean.view(1, 3, 1, 1)
    var = lam * x.var((0, 2, 3), keepdim=True) + (1 - lam) * bn.running_var.view(1, 3, 1, 1)
    ref = (x - mu) / (var + bn.eps).sqrt() * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1)
    loss = (mu - x.mean((2, 3), keepdim=True)).abs().mean() + (var.sqrt() - x.std((2, 3), keepdim=True)).abs().mean()
    assert bn.sample_num == 4
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.bn_loss, loss, rtol=1e-5, atol=1e-6)


def test_blank_images_do_not_poison_the_stream():
    """A constant slice (common at a volume's ends) must not turn the adapters' state NaN."""
    net = tiny_net()
    blank = torch.zeros(1, 1, 32, 32)
    vp = VPTTA(net, image_size=400)
    for a in (vp, GraTa(net), Tent(net)):
        for i in range(27):  # 9 blanks (identical keys: one memory entry) + 18 images
            out = a.predict(blank if i % 3 == 0 else image(i, shift=0.3))
            assert torch.isfinite(out).all(), (type(a).__name__, i)
    assert torch.isfinite(vp.prompt.data_prompt).all() and vp.memory.ready()
    assert all(np.all(np.isfinite(v)) for v in vp.memory.values)
