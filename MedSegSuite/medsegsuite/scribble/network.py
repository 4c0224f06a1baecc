"""The segmentation network: a MONAI 2D U-Net by default, built from a plain config dict that
travels in the checkpoint so inference rebuilds exactly the trained network."""
from __future__ import annotations

from ..errors import CheckpointError, InputError
from ..models.loader import architecture

ARCHITECTURE = "scribble.unet2d/1"
DEFAULT_NET = {"name": "unet", "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1,
               "norm": "instance", "dropout": 0.0}
NETS = ("unet", "basicunet")


def net_config(overrides: dict | None = None) -> dict:
    cfg = dict(DEFAULT_NET)
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if cfg["name"] not in NETS:
        raise InputError(f"unknown network '{cfg['name']}'; choose one of {', '.join(NETS)}")
    return cfg


def divisor(cfg: dict) -> int:
    """Input sizes must be multiples of this (the U-Net's total downsampling)."""
    if cfg["name"] == "basicunet":
        return 16
    d = 1
    for s in cfg["strides"]:
        d *= int(s)
    return d


def in_channels(cfg: dict) -> int:
    """Input channels: the slice plus ``context`` neighbours on each side (cards before 2.5D: 1)."""
    return int(cfg.get("in_channels", 1))


def build_network(cfg: dict, n_classes: int):
    from monai.networks.nets import BasicUNet, UNet

    if cfg["name"] == "unet":
        return UNet(spatial_dims=2, in_channels=in_channels(cfg), out_channels=n_classes, channels=tuple(cfg["channels"]),
                    strides=tuple(cfg["strides"]), num_res_units=int(cfg["num_res_units"]), norm=cfg["norm"],
                    dropout=float(cfg.get("dropout", 0.0)))
    if cfg["name"] == "basicunet":
        feats = list(cfg["channels"]) + [cfg["channels"][-1]] * (6 - len(cfg["channels"]))
        return BasicUNet(spatial_dims=2, in_channels=in_channels(cfg), out_channels=n_classes, features=tuple(feats[:6]))
    raise CheckpointError(f"unknown network '{cfg['name']}'")


@architecture(ARCHITECTURE)
def build_checkpoint(state_dict: dict, card: dict, device: str = "cpu", **_):
    """The loader's builder for scribble checkpoints (registered in `models.loader`)."""
    from ..models.checkpoints import load_state_into

    if "classes" not in card or "net" not in card:
        raise CheckpointError("the scribble model has no class list or network config in its card")
    net = build_network(card["net"], len(card["classes"]) + 1)
    load_state_into(net, state_dict, "the scribble model")
    return net.to(device).eval()
