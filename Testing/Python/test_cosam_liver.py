"""The shipped CoSAM liver model on a few held-out LiTS-117 slices (LiteMedSAM encoder: ~3 s a slice)."""
import numpy as np


def test_shipped_liver_model_on_heldout_slices(lits, backend):
    from medsegsuite.engine.interface import run_job
    from medsegsuite.models.registry import default_registry

    entry = default_registry().get("liver")
    card = entry.load()["card"]
    held = card["split"]["heldout"]
    assert not set(held) & set(card["split"]["train"])
    picks = [held[len(held) // 4], held[len(held) // 2], held[3 * len(held) // 4]]
    ct, ref = lits
    r = run_job(backend, "cosam.segment", ct, {"model": "liver", "plane": "axial", "slices": picks, "iterations": 4,
                                                  "return_rounds": True})
    pred, gt = r.masks["liver"], ref.masks["liver"]
    d = [2 * (pred[:, :, k] & gt[:, :, k]).sum() / (pred[:, :, k].sum() + gt[:, :, k].sum()) for k in picks]
    assert np.mean(d) >= 0.85, d
    assert not pred[:, :, [k for k in range(128) if k not in picks]].any()  # only the asked slices
    # the rounds are kept and the final mask is the last round's
    assert np.array_equal(r.arrays[f"liver_round{4}"] > 0, pred)


def test_shipped_model_final_not_worse_than_coarse_on_heldout_slices(lits, backend):
    """The headline claim: the loop (with the acceptance rule the card states; a card from before the
    rule keeps the old one) does not make the shipped model's held-out slices worse on average."""
    from medsegsuite.cosam.loop import AcceptRule
    from medsegsuite.engine.interface import run_job
    from medsegsuite.metrics import slice_dice
    from medsegsuite.models.registry import default_registry

    card = default_registry().get("liver").load()["card"]
    held = card["split"]["heldout"]
    calib = (card.get("calibration") or {}).get("slices") or []
    assert not set(calib) & set(held) and not set(calib) & set(card["split"]["train"])  # never trained or tested
    AcceptRule.from_dict(card.get("acceptance"))  # a complete, valid rule
    picks = held[1::4]  # 8 held-out slices from the liver's tip to its dome
    ct, ref = lits
    r = run_job(backend, "cosam.segment", ct, {"model": "liver", "plane": "axial", "slices": picks, "iterations": 4,
                                                  "return_rounds": True})
    coarse, final, gt = r.arrays["liver_round0"] > 0, r.masks["liver"], ref.masks["liver"]
    dc = slice_dice(coarse, gt, slices=(2, picks))
    df = slice_dice(final, gt, slices=(2, picks))
    print("coarse", np.round(dc, 3), "final", np.round(df, 3))
    assert np.mean(df) >= np.mean(dc), (dc, df)
