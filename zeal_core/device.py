"""Choosing the compute device: a GPU when there is one, the CPU otherwise."""

from __future__ import annotations

import torch

from zeal_core.errors import ConfigError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable ``torch.device``.

    Raises:
        ConfigError: CUDA was asked for where there is no GPU, or the name is unknown.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible: use cpu or auto")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")


def describe_device(device: torch.device) -> str:
    """A short human description, e.g. ``"cpu (2 threads)"`` or ``"cuda:0 (NVIDIA H100)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"
