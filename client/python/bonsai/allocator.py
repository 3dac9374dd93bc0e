"""glibc malloc settings for a process that streams a model through gRPC.

Every chunk of a Compress call passes through several 1 MiB buffers (the
file read, the protobuf message, gRPC's slices, the bytes handed back). With
glibc's defaults those are mmapped until its dynamic threshold has grown, and
the heap's top is given back to the kernel whenever 2 MiB of it is free, so
the same pages are faulted in again for every chunk. On the 384 MiB bench
model (bench/e2e_compress.py) the CLI took 155k page faults and 5.0-5.4 s of
CPU per job with the defaults, and 17-20k faults and 1.8-2.0 s with the
settings below; the job's wall time fell from 6.5-7.0 s to 3.7-4.8 s.

The CLI applies them at start-up. A library user's process is theirs to
tune: `tune_for_streaming()` is there to call once, early, in a process that
moves big models; MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the
environment do the same for any process and win over this.
"""
from __future__ import annotations

import ctypes
import os

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 4 << 20   # above the 1 MiB chunks: they come from the heap
TRIM_THRESHOLD_BYTES = 64 << 20  # keep up to 64 MiB of free heap for the next chunks


def tune_for_streaming() -> bool:
    """Applies the settings above; False where the C library is not glibc
    (or the environment already sets them), which changes nothing else."""
    try:
        # The symbols already loaded into this process, libc's among them:
        # ctypes.util.find_library would run `ldconfig -p` (~50 ms at start-up).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = False
    for variable, option, value in (("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                                    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        if variable not in os.environ:
            applied = bool(mallopt(option, value)) or applied
    return applied
