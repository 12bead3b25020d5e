"""The numeric precision a training runs in when the user names none."""

from __future__ import annotations

import torch


def _cpu_multiplies_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX, Sapphire Rapids and later)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def _trains_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` choice lands on the CPU (``"auto"``: no GPU present)."""
    if accelerator == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
    return accelerator == "cpu"


def default_precision(accelerator: str) -> str:
    """Lightning's ``precision`` for a training on ``accelerator`` that names none.

    ``"bf16-mixed"`` on a CPU with AMX, where bfloat16 matrix products run several times faster
    than float32 ones (trainings measured there took 0.8 to 0.9 of their float32 time; see the method
    notes, "Mixed precision"); ``"32-true"`` elsewhere, GPUs included. Under autocast the likelihoods, the
    embedding and the cluster assignments stay in float32; only the linear layers' products round
    their inputs to bfloat16.
    """
    return "bf16-mixed" if _trains_on_cpu(accelerator) and _cpu_multiplies_bfloat16() else "32-true"
