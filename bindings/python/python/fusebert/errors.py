"""The exceptions fusebert raises.

Every error is a :class:`FusebertError`; each kind is also an instance of the built-in exception
a sentence-transformers user would catch (``except ValueError`` keeps working for an input that
is too long, ``except OSError`` for a model folder that cannot be read).
"""

from __future__ import annotations

__all__ = [
    "FusebertError",
    "ModelLoadError",
    "InputTooLongError",
    "InvalidInputError",
    "NoCudaDeviceError",
    "DeviceError",
]


class FusebertError(Exception):
    """Base class of every fusebert error."""


class ModelLoadError(FusebertError, OSError):
    """The model folder is missing, unreadable or not a supported model (config, weights, tokenizer)."""


class InputTooLongError(FusebertError, ValueError):
    """An input is longer than ``max_seq_length`` and truncation was turned off (``truncate=False``)."""


class InvalidInputError(FusebertError, ValueError):
    """An argument or input the model cannot take (unknown device, prompt name, bad pair, ...)."""


class NoCudaDeviceError(FusebertError, RuntimeError):
    """``device="cuda"`` was asked for but no usable CUDA driver or GPU (sm_80 or newer) is present."""


class DeviceError(FusebertError, RuntimeError):
    """A CUDA or emulator failure during a forward pass."""
