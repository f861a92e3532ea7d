"""The C ABI's ctypes mirror for the benchmark scripts.

There is one mirror of flash3_c.h in Python: the package's own (python/flash3/_lib.py, standard library only). It is
loaded here by path, so the scripts need neither the package installed nor torch at import time.
"""
import importlib.util
import os
import sys

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "flash3", "_lib.py")
_spec = importlib.util.spec_from_file_location("flash3_c_abi_mirror", _PATH)
_lib = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _lib
_spec.loader.exec_module(_lib)

Tensor = _lib.Tensor
Params = _lib.Params
MAX_RANK = _lib.MAX_RANK
C_API_VERSION = _lib.C_API_VERSION
