"""Where a stage computes and in what precision: the device, the DDP group, ``precision: auto``.

``auto`` (the default of every stage) means bf16 autocast where the hardware runs bf16 natively
and fp32 elsewhere. On a CPU, native means AMX tiles or AVX-512 BF16: without them PyTorch emulates
bf16 through fp32 conversions, and a training step under autocast is several times *slower* than
plain fp32 (a MiniLM-L6 step at batch 32 x 64 tokens: 4.8 s fp32 against 35-50 s bf16 on a 2-core
AVX2 AMD EPYC, issue 36). On CUDA, native means ``torch.cuda.is_bf16_supported()`` (Ampere and later).

The runner resolves ``auto`` *before* it fingerprints a stage, so a stage trained in bf16 on one
machine is not silently reused by a run in fp32 on another; the trainer resolves it again (same
answer) to print the choice and record it in the stage's results.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from distill.config import PRECISIONS

log = logging.getLogger(__name__)

#: What autocast runs the named precisions in (fp32: no autocast).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class SlowPrecisionWarning(UserWarning):
    """A precision that this hardware emulates: it runs, several times slower than fp32."""


# -- the device and the process group ----------------------------------------------------------------
def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` -> this process's GPU under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# -- precision ---------------------------------------------------------------------------------------
def cpu_features() -> dict:
    """What this CPU offers for bf16: torch's dispatch capability (``AVX2``, ``AVX512``, ...), and
    whether it has AMX tiles and AVX-512 BF16. Tests replace this function to inject a CPU."""
    cpu = torch.cpu
    probe = (lambda name: bool(getattr(cpu, name)()) if hasattr(cpu, name) else False)
    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "amx": probe("_is_amx_tile_supported"), "avx512_bf16": probe("_is_avx512_bf16_supported")}


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and the evidence in words."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"CUDA device {torch.cuda.get_device_name(device)} {'supports' if ok else 'lacks'} bf16"
    if device.type != "cpu":
        return False, f"device {device.type}: bf16 support unknown"
    f = cpu_features()
    have = [name for name, key in (("AMX", "amx"), ("AVX-512 BF16", "avx512_bf16")) if f[key]]
    if have:
        return True, f"CPU capability {f['capability']} with {' and '.join(have)}"
    return False, f"CPU capability {f['capability']} without AMX or AVX-512 BF16"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is fp32, bf16 or fp16; ``reason`` says why, for logs and results."""

    name: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.name)

    def to_dict(self) -> dict:
        return {"precision": self.name, "reason": self.reason}


def resolve_precision(precision: str, device: torch.device, warn: bool = True) -> Precision:
    """``auto`` -> bf16 where ``device`` runs it natively, else fp32; a named precision stays as
    named, with a :class:`SlowPrecisionWarning` when it is bf16 on a CPU that emulates it.

    Raises ValueError on a name outside :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        ok, why = native_bf16(device)
        return Precision("bf16", f"auto: {why}") if ok else Precision("fp32", f"auto: {why}")
    if precision == "bf16" and device.type == "cpu":
        ok, why = native_bf16(device)
        if not ok:
            message = (f"precision bf16 on a {why}: bf16 is emulated there and a training step runs "
                       f"several times slower than in fp32 (7-10x measured on a 2-core AVX2 AMD EPYC); "
                       f"precision: auto (or fp32) is faster on this CPU")
            if warn:
                warnings.warn(message, SlowPrecisionWarning, stacklevel=2)
            return Precision("bf16", f"set explicitly; {why}: emulated, slow")
    return Precision(precision, "set explicitly")
