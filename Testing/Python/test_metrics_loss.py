"""THE Dice+CE training loss (medsegsuite.losses): the formula on tiny tensors, MONAI's DiceCELoss for the
binary cases, and the three trainers (CoSAM, TTA source models, scribble full supervision) using it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medsegsuite.losses import cross_entropy, dice_ce_loss, dice_ce_terms, dice_loss


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_binary_formula_by_hand():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]], [[[1.0, -2.0], [0.5, 0.0]]]])  # (2, 1, 2, 2)
    y = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    p = torch.sigmoid(logits)
    per = [1 - (2 * (p[b] * y[b]).sum() + 1) / (p[b].sum() + y[b].sum() + 1) for b in range(2)]
    pooled = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    bce = F.binary_cross_entropy_with_logits(logits, y)
    assert dice_loss(logits, y, per_sample=True).item() == pytest.approx(((per[0] + per[1]) / 2).item(), abs=1e-7)
    assert dice_loss(logits, y).item() == pytest.approx(pooled.item(), abs=1e-7)
    assert dice_ce_loss(logits, y).item() == pytest.approx((pooled + bce).item(), abs=1e-7)
    d, ce = dice_ce_terms(logits, y, per_sample=True)
    assert ce.item() == pytest.approx(bce.item()) and d.item() == pytest.approx(((per[0] + per[1]) / 2).item())


@pytest.mark.parametrize("per_sample", [True, False])
def test_binary_equals_monai_dice_ce(per_sample):
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 9, 7, generator=g)
    y = (torch.rand(3, 1, 9, 7, generator=g) > 0.6).float()
    ref = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, batch=not per_sample)(logits, y)
    assert dice_ce_loss(logits, y, per_sample=per_sample).item() == pytest.approx(ref.item(), rel=1e-6)


def test_multiclass_ignores_unlabelled_pixels_and_absent_classes():
    lab = torch.zeros(1, 6, 6, dtype=torch.long)
    lab[0, 1:4, 1:4] = 1
    lab[0, 0, :] = 255  # unlabelled
    perfect = F.one_hot(lab.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 40
    perfect[0, :, 0, :] = torch.tensor([-40.0, -40.0, 40.0])[:, None]  # wrong only where unlabelled
    kw = {"multiclass": True, "ignore_index": 255, "smooth": 1e-5}
    assert dice_loss(perfect, lab, present_only=True, **kw).item() < 1e-4
    # class 2 is absent from the labels: present_only averages over classes 0 and 1 only
    g = torch.Generator().manual_seed(3)
    rnd = torch.randn(1, 3, 6, 6, generator=g)
    valid = (lab != 255).float()[:, None]
    pr = torch.softmax(rnd, 1) * valid
    oh = F.one_hot(lab.clamp(max=2), 3).permute(0, 3, 1, 2).float() * valid
    per_class = 1 - (2 * (pr * oh).sum((0, 2, 3)) + 1e-5) / (pr.sum((0, 2, 3)) + oh.sum((0, 2, 3)) + 1e-5)
    assert dice_loss(rnd, lab, **kw).item() == pytest.approx(per_class.mean().item(), rel=1e-6)
    assert dice_loss(rnd, lab, present_only=True, **kw).item() == pytest.approx(per_class[:2].mean().item(), rel=1e-6)
    assert per_class[2].item() > 0.99  # an absent class predicted anywhere is a full miss when counted
    assert cross_entropy(perfect, lab, **{k: kw[k] for k in ("multiclass", "ignore_index")}).item() < 1e-6
    none = torch.full_like(lab, 255)
    z = cross_entropy(perfect.requires_grad_(), none, multiclass=True, ignore_index=255)
    assert z.item() == 0.0 and z.requires_grad  # nothing labelled: zero, still differentiable
    # softmax CE half = F.cross_entropy over labelled pixels
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    lab2 = torch.randint(0, 3, (2, 5, 5), generator=g)
    lab2[1, 2] = 255
    _, ce = dice_ce_terms(logits, lab2, **kw)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, lab2, ignore_index=255).item())


def test_the_three_trainers_use_the_shared_loss():
    import inspect

    import medsegsuite.cosam.train as cosam_train
    import medsegsuite.scribble.train as scribble_train
    import medsegsuite.tta.train as tta_train

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 1, 8, 8, generator=g)
    y = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    assert cosam_train.seg_loss(logits, y).item() == dice_ce_loss(logits, y, per_sample=True).item()
    assert "dice_ce_loss(logits, y)" in inspect.getsource(tta_train.fit)  # train_source and the LOCO recipe fit with it
    assert "fit(" in inspect.getsource(tta_train.train_source)
    assert "dice_ce_terms(logits, yb, **FULL_LOSS)" in inspect.getsource(scribble_train)
    assert not hasattr(scribble_train, "dense_dice_loss")
