"""flash3: FlashAttention-3 for Hopper, for PyTorch.

A thin package over libflash3's C ABI (loaded with ctypes; nothing here is compiled against torch), with FA3's
Python interface: `from flash3 import flash_attn_func` replaces `from flash_attn_interface import flash_attn_func`.
Each op is a torch.library custom op (flash3::fwd, flash3::bwd) with a fake implementation and an autograd formula,
so models using it work with torch.compile(fullgraph=True) and CUDA graphs. See docs/python.md.
"""
__version__ = "0.1.0"
__all__ = [
    "flash_attn_func", "flash_attn_varlen_func", "flash_attn_qkvpacked_func", "flash_attn_with_kvcache",
    "flash_attn_combine", "get_scheduler_metadata", "Flash3Error", "Flash3InvalidArgumentError",
    "Flash3NotSupportedError", "Flash3NoDeviceError", "Flash3CudaError", "LibraryNotFoundError", "library_path",
    "kernel_list",
]

from ._lib import (  # noqa: F401
    Flash3CudaError,
    Flash3Error,
    Flash3InvalidArgumentError,
    Flash3NoDeviceError,
    Flash3NotSupportedError,
    LibraryNotFoundError,
)

_API = (
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_with_kvcache",
    "flash_attn_combine",
    "get_scheduler_metadata",
)

try:
    import torch  # noqa: F401
except ImportError as e:  # the ctypes layer (flash3._lib) works without torch; the attention API does not
    _TORCH_MISSING = e

    def __getattr__(name):
        if name in _API:
            raise ImportError(f"flash3.{name} needs PyTorch (>= 2.4), which is not importable: {_TORCH_MISSING}")
        raise AttributeError(f"module 'flash3' has no attribute {name!r}")

else:
    from .flash_attn_interface import (  # noqa: F401
        flash_attn_combine,
        flash_attn_func,
        flash_attn_qkvpacked_func,
        flash_attn_varlen_func,
        flash_attn_with_kvcache,
        get_scheduler_metadata,
    )

def library_path():
    """The path of the libflash3.so this package loads ($FLASH3_LIBRARY, the installed copy, or a build/ of a
    source checkout)."""
    from . import _lib

    return _lib.get().path


def kernel_list():
    """The kernel variants compiled into the loaded libflash3.so, one name each."""
    from . import _lib

    return _lib.get().kernel_list()
