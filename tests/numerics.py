"""What the tests may assume of floating point: which results are exact, and bounds for the rest.

Exact, to the last bit, by construction: two computations that run the same operations on the
same operands in the same order, i.e. the same code on equal tensors of equal shapes, in processes
with the same torch build, CPU kind and thread count. A test that compares to the last bit says in
a comment why its two sides are such a pair, and prints :func:`cpu` when they differ.

Nothing else is exact. A row computed in another batch, at another padding, or at another position
in a batch runs through kernels the math library chooses, and its additions may be grouped
differently: MKL's float32 GEMM on AVX-512 (this suite's Sapphire Rapids) computes rows of one
product with different kernels when the output is narrow (a classifier's 2 columns), on AVX2 also
at BERT-base widths, and not at all under ``MKL_CBWR=COMPATIBLE``. Such results differ by rounding
alone, and are compared within the bounds below.

The bound (float32). Rounding errors modelled as independent and of mean zero, a sum or dot product
of n terms has an error of at most lambda * sqrt(n) * u (u = 2^-24) relative to the sizes of its
terms, with probability at least 1 - 2n exp(-lambda^2 / 2) (Higham and Mary, "A new approach to
probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019); lambda = 10 makes that
1 - n * 4e-22. (The worst case, n * u, needs every rounding to go the same way.) A BERT output is
the end of a chain of such reductions (:func:`reduction_path`); LayerNorm brings each layer back to
unit scale, so the errors add along the chain rather than compound, and the layers after an error
carry it to the outputs as they carry the activations themselves. So an output's error is at most
lambda * sqrt(sum of the lengths) * u relative to the largest output of its kind (the largest
|logit| of a batch: a norm-wise bound, as one logit near 0 need not be small in error), and two
evaluations differ by at most twice that (:func:`float32_bound`): 2.0e-4 for MiniLM-L6 at 128
tokens, 5.8e-5 for the tests' tiny BERTs. Measured differences are about 1,000 times smaller
(docs/distill.md), so the bound never fails on rounding; a wrong row, a token too many or a padding
token attended move outputs by far more.
"""
from __future__ import annotations

import math
import os
import platform

import torch

U32 = 2.0 ** -24  # float32 unit roundoff
U_BF16 = 2.0 ** -8  # bfloat16 unit roundoff (8 significant bits)
LAMBDA = 10.0  # the probabilistic bound's lambda (module docstring)


def cpu() -> str:
    """This machine's CPU model, torch's CPU capability (the kernels it dispatches to), torch
    version and thread count: what decides how a float computation rounds here."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    mkl = f", MKL_CBWR={os.environ['MKL_CBWR']}" if os.environ.get("MKL_CBWR") else ""
    return (f"CPU {model}; torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads{mkl}")


def not_exact(what: str) -> str:
    """The failure message of an exactness test: what differed, and on which CPU."""
    return f"{what} differ in their last bits on {cpu()}; the test claims they are exact by construction"


def reduction_path(config, length: int) -> int:
    """The summed lengths of the float32 reductions on the path from a BERT-like model's input to one
    of its outputs at ``length`` tokens: per layer a Q/K/V projection (H), a score (H / heads), the
    softmax's sum and the context over the keys (2 x T), the attention output (H), two LayerNorms
    (mean and variance, 2 x H each), the feed-forward (H, then I); the embeddings' sum and LayerNorm;
    a pooler or transform and a head (H each)."""
    h, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    per_layer = h + h // heads + 2 * length + h + 2 * h + h + config.intermediate_size + 2 * h
    return 3 + 2 * h + layers * per_layer + 2 * h


def float32_bound(config, length: int) -> float:
    """How far two float32 evaluations of the model's outputs may differ, relative to the largest
    |output|, when only the grouping of their additions differs (module docstring)."""
    return 2 * LAMBDA * math.sqrt(reduction_path(config, length)) * U32


def bf16_bound(config) -> float:
    """The same for bfloat16 under autocast, relative to the largest |output|. There every matrix
    product's output (and each layer's input to the next) is rounded to 8 significant bits: where
    two evaluations' float32 sums straddle a rounding boundary they end one bfloat16 unit (2 u)
    apart, and each layer passes such differences on and adds its own. Counting the rounding points
    on the path (7 per layer: Q/K/V, scores, context, attention output, feed-forward in, its
    activation, out; 3 more for embeddings and head) as N, each at most 2 u apart, independent and
    of either sign: Hoeffding's inequality bounds their sum at lambda * 2u * sqrt(N) with
    probability 1 - 2 exp(-lambda^2 / 2); lambda = 6 (1 - 3e-8). Loose, as bfloat16 is: 0.31 for
    MiniLM-L6; measured at most 0.014 (docs/distill.md)."""
    return 6 * 2 * U_BF16 * math.sqrt(7 * config.num_hidden_layers + 3)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """|actual - expected| <= rel * max |expected|, elementwise; the message gives the largest
    difference against its allowance, and the CPU."""
    actual, expected = actual.double(), expected.double()
    allowed = rel * expected.abs().max().item()
    diff = (actual - expected).abs()
    worst = int(diff.flatten().argmax())
    assert diff.max() <= allowed, (
        f"{what}: {actual.flatten()[worst].item()!r} vs {expected.flatten()[worst].item()!r}, difference "
        f"{diff.max().item():.3g} > allowed {allowed:.3g} ({rel:.3g} of the largest |value|); {cpu()}")


# --------------------------------------------------------------------------------------------------
# What a bound on the teacher's outputs means for a training step


def soft_ce_bound(student: torch.Tensor, loss: float, delta: torch.Tensor, temperature: float,
                  mask: torch.Tensor | None = None) -> float:
    """The most the soft cross-entropy ``mean_b sum_c -p_bc log q_bc`` (p = softmax(teacher / T),
    q = softmax(student / T), over the last dimension) can move when each teacher logit moves by
    at most ``delta`` (same shape), plus the loss's own rounding.

    Row b: p's ratios move by at most e^(2 d_b / T) with d_b = max delta over the row, so
    sum_c |dp_c| <= e^(2 d_b / T) - 1; since sum_c dp_c = 0, the loss moves by at most that times
    half the range of log q, which is range(student / T) / 2. The two losses are the same float32
    operations on nearly equal inputs: each is within (n + 4) u of its exact value, n = the terms
    summed (rows and classes), relative to the loss plus the largest |log q| (the terms' scale).

    Args:
        student: (..., C) student logits; delta: like it; mask: (..., C), 1 = in the distribution.
    """
    s = student.detach().double() / temperature
    d = delta.double()
    if mask is not None:
        keep = mask.bool()
        s_hi, s_lo = s.masked_fill(~keep, -math.inf), s.masked_fill(~keep, math.inf)
        d = d.masked_fill(~keep, 0.0)
    else:
        s_hi = s_lo = s
    spread = s_hi.amax(-1) - s_lo.amin(-1)  # range of log q per row
    moved = (torch.exp(2 * d.amax(-1) / temperature) - 1) * spread / 2
    terms = s.numel()
    rounding = 2 * (terms + 4) * U32 * (abs(loss) + (spread.max().item() + math.log(s.shape[-1])))
    return moved.mean().item() + rounding


def mse_bound(student: torch.Tensor, teacher: torch.Tensor, loss: float, delta: torch.Tensor) -> float:
    """The most ``mean((s - t)^2)`` can move when each t moves by at most ``delta``:
    mean(2 |s - t| delta + delta^2), plus both losses' rounding ((n + 4) u of the loss each)."""
    r = (student.detach().double() - teacher.double()).abs()
    d = delta.double()
    return (2 * r * d + d * d).mean().item() + 2 * (student.numel() + 4) * U32 * abs(loss)


def gradient_bound(outputs: torch.Tensor, params, upstream: torch.Tensor, moved: torch.Tensor, config,
                   length: int, rows: int) -> list[torch.Tensor]:
    """Per parameter, how far its gradient ``J^T u`` can move when the gradient ``u`` reaching the
    model's ``outputs`` moves by at most ``moved`` (elementwise), the model's computation being the
    same: |J|^T moved (J_i, the gradient of output i, from one backward each), plus the rounding of
    the two backward passes, the same operations on nearly equal inputs: rho = 2 lambda sqrt(n) u
    (n the forward's reduction path plus the sum over the batch's tokens that makes a weight's
    gradient) of the largest |J|^T |u| of the model. Norm-wise, as for the forward: a gradient that
    is 0 but for rounding (a key bias's: softmax ignores it) is a sum of terms that cancel.
    """
    rho = 2 * LAMBDA * math.sqrt(reduction_path(config, length) + rows * length) * U32
    first = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    sizes = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    moved, size = moved.double().flatten(), upstream.double().abs().flatten()
    flat = outputs.flatten()
    for i in range(flat.numel()):
        grads = torch.autograd.grad(flat[i], params, retain_graph=True, allow_unused=True)
        for f, z, g in zip(first, sizes, grads):
            if g is not None:
                f += g.double().abs() * moved[i]
                z += g.double().abs() * size[i]
    rounding = rho * max(z.max().item() for z in sizes)
    return [f + rounding for f in first]
