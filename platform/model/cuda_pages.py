"""The CUDA libraries' pages in a process on a machine without an NVIDIA GPU.

torch's CUDA wheels load cuBLAS, NVRTC, nvJitLink and the other CUDA libraries when
torch is imported, and reading them in leaves part of each resident in every process
that imports torch, though without a GPU nothing runs them (the same reason the package
root marks triton absent). `page_out_cuda_libraries` asks the kernel to reclaim those
pages (`madvise(MADV_PAGEOUT)`, Linux 5.4+; elsewhere it does nothing). It reclaims
only what it can without losing data: a clean page of a library file is read back from
the file if it is ever touched again; pages the loader wrote (relocations) stay, as
there is no swap to put them in. Only pages no other process maps are reclaimed, so
each process does this for itself: `build_split` calls it, which every process that
computes calls once it has imported torch.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

# The nvidia-* wheels' libraries (site-packages/nvidia/...) and torch's own CUDA parts.
CUDA_LIBRARY = re.compile(r"/nvidia/.+\.so[.\d]*$|/lib(torch|c10)_cuda[^/]*\.so$")
MADV_PAGEOUT = 21  # linux/mman.h

_paged_out = False


def cuda_library_ranges(maps: str) -> list[tuple[int, int]]:
    """The address ranges of CUDA library mappings in a `/proc/<pid>/maps` text."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and CUDA_LIBRARY.search(fields[5].strip()):
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def page_out_cuda_libraries() -> int:
    """Reclaim this process's resident CUDA library pages, once, where there is no
    NVIDIA driver; the number of ranges advised (0: nothing to do here)."""
    global _paged_out
    if _paged_out or os.path.exists("/dev/nvidiactl") or not sys.platform.startswith("linux"):
        return 0
    _paged_out = True
    try:
        with open("/proc/self/maps") as f:
            ranges = cuda_library_ranges(f.read())
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, end in ranges:
        madvise(start, end - start, MADV_PAGEOUT)  # EINVAL on older kernels: nothing reclaimed
    return len(ranges)
