"""The machine a benchmark ran on, in words, for the headers of the result tables.

The README's tables come from shared machines whose CPUs differ between sessions, and
roofline and LAPACK-floor ratios move with the CPU, so each table names its own.
"""

from __future__ import annotations

import os
import platform


def cpu_description() -> str:
    """E.g. ``"AMD EPYC, AVX-512, 2 cores"``: the CPU model, its widest vector unit, the core count."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    parts = (model or platform.processor() or platform.machine(), simd, f"{os.cpu_count()} cores")
    return ", ".join(p for p in parts if p)
