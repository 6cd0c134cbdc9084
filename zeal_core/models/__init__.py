"""Models: building timm networks from a config, preparing input batches, and the version registry."""

from zeal_core.models.factory import ModelConfig, build_model, create_model, extract_features, prepare_batch

__all__ = ["ModelConfig", "build_model", "create_model", "extract_features", "prepare_batch"]
