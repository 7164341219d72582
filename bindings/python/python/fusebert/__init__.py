"""fusebert: BERT-family encoder inference (hand-written CUDA kernels, an f32 CPU reference and a
PTX emulator) behind sentence-transformers' API.

    from fusebert import SentenceTransformer, CrossEncoder

One wheel runs on the CPU, the emulator (``device="emu"``) and any sm_80+ GPU (the CUDA driver
is loaded at run time; the kernels ship as PTX). See docs/python.md.
"""

from ._fusebert import __version__
from ._st import CrossEncoder, SentenceTransformer, cuda_available, default_model_path
from . import errors
from .errors import (
    DeviceError,
    FusebertError,
    InputTooLongError,
    InvalidInputError,
    ModelLoadError,
    NoCudaDeviceError,
)

__all__ = [
    "__version__",
    "SentenceTransformer",
    "CrossEncoder",
    "cuda_available",
    "default_model_path",
    *errors.__all__,
]
