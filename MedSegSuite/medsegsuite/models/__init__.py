"""Model registry (id -> file, sha256, architecture, structures) and safe checkpoint loading."""
from .checkpoints import load_checkpoint, save_checkpoint, sha256_file, verify_file
from .registry import ModelEntry, ModelRegistry, default_registry, resolve_model

__all__ = ["load_checkpoint", "save_checkpoint", "sha256_file", "verify_file", "ModelEntry",
           "ModelRegistry", "default_registry", "resolve_model"]
