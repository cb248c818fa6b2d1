"""Muon for a SIREN's hidden layers, Adam for the rest (DistillConfig.optimizer = "muon"; off by default).

Why try it: a 10-minute student is limited by how far its optimisation gets, not by its capacity or by
over-fitting (docs/benchmarks.md, sessions 17 and 37), so a better step is worth as much as a faster one.
Muon (Jordan et al. 2024) replaces a weight matrix's momentum update by the nearest semi-orthogonal matrix
(its singular values set to ~1, by a Newton–Schulz iteration), which spreads the step over all of the
matrix's directions instead of the few that dominate its gradient.

Which parameters: the weight of every sine layer except a network's very first (that one reads raw position
and pose coordinates, like an embedding: Adam, as in Muon's own recipe for input layers), and nothing else:
biases and the linear heads stay on Adam, with THA4's betas. One optimizer object holds both kinds, so the
loop's schedule (which sets every group's ``lr``), the checkpoint and the divergence guard see one optimizer
per network, as with Adam.

Step size: a Muon update U has every singular value ~1, so its root-mean-square entry is ~1/sqrt(max(m, n));
it is scaled by RMS_MATCH · sqrt(max(m, n)) so that its entries' RMS is RMS_MATCH (0.2, Liu et al. 2025,
"Muon is scalable"), about what Adam's are at the same ``lr``: the schedule's rates carry over unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.adam import adam

from kyara.nn.siren import SineLinear

RMS_MATCH = 0.2            # RMS of a Muon update's entries, per unit lr (≈ Adam's; Liu et al. 2025)
NS_STEPS = 5               # Newton–Schulz iterations (Jordan et al.: 5 suffice for the quintic below)
NS_COEFFS = (3.4445, -4.7750, 2.0315)   # the quintic's coefficients that push singular values to ~[0.7, 1.2] fast


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """g (m, n) or a batch (K, m, n) → ~U Vᵀ of each matrix's SVD (singular values ~0.7–1.2, not exactly 1:
    Muon's quintic trades exactness for speed), in float32. A zero matrix stays zero."""
    a, b, c = NS_COEFFS
    x = g.float()
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:                      # iterate on the wide side: x xᵀ is the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)   # spectral norm ≤ Frobenius norm ≤ 1: the basin
    # x ← a·x + (b·G + c·G²)·x with G = x xᵀ, the scalings folded into the products (three kernels a step, not
    # eight: on a GPU the iteration is launch-bound)
    multiply_add = torch.baddbmm if x.dim() == 3 else torch.addmm
    for _ in range(steps):
        gram = x @ x.mT
        x = multiply_add(x, multiply_add(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if transposed else x


def orthogonalize_padded(matrices: list[torch.Tensor]) -> list[torch.Tensor]:
    """orthogonalize of each matrix, all in one batch: each turned wide and zero-padded to the largest shape.
    The same maths (a zero row or column stays zero through the iteration, and the Frobenius norm ignores it;
    only the float rounding of the batched products differs: 7e-7, tests/test_distill_muon.py). Why: on a GPU
    the iteration is a few dozen small kernel launches; one matrix at a time that is some hundreds a step, which
    a launch-bound step (session 12) would feel more than the sums."""
    wide = [m.mT if m.shape[0] > m.shape[1] else m for m in matrices]
    rows, cols = max(w.shape[0] for w in wide), max(w.shape[1] for w in wide)
    if all(w.shape == (rows, cols) for w in wide):   # one shape (the face morpher's): no padding, one copy
        batch = torch.stack(wide).float()
    else:
        batch = torch.zeros(len(wide), rows, cols, dtype=torch.float32, device=wide[0].device)
        for i, w in enumerate(wide):
            batch[i, : w.shape[0], : w.shape[1]] = w
    out = orthogonalize(batch)
    return [o[: w.shape[0], : w.shape[1]].mT if m.shape[0] > m.shape[1] else o[: w.shape[0], : w.shape[1]]
            for o, w, m in zip(out, wide, matrices)]


def one_batch(parameter: torch.Tensor) -> bool:
    """Whether a network's matrices go through the iteration as one padded batch: on a GPU (kernel launches), not
    elsewhere (padding would multiply a CPU's sums)."""
    return parameter.is_cuda


def muon_parameters(network: nn.Module) -> set[int]:
    """ids of network's parameters that Muon updates: every SineLinear's weight but the network's first."""
    sine_layers = [m for m in network.modules() if isinstance(m, SineLinear)]
    return {id(layer.linear.weight) for layer in sine_layers[1:]}


class MuonWithAdam(torch.optim.Optimizer):
    """One network's optimizer: Muon (Nesterov momentum `momentum`) on the parameters ``muon_parameters``
    names, Adam (betas, eps) on the others. Two param groups, ``{"muon": True}`` and ``{"muon": False}``; both
    take the schedule's ``lr``. State per parameter: ``momentum_buffer`` (Muon) or ``step``, ``exp_avg``,
    ``exp_avg_sq`` (Adam), created at the first step, as torch's Adam does."""

    def __init__(self, network: nn.Module, lr: float = 1e-4, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        chosen = muon_parameters(network)
        params = list(network.parameters())
        groups = [{"params": [p for p in params if id(p) in chosen], "muon": True},
                  {"params": [p for p in params if id(p) not in chosen], "muon": False}]
        super().__init__([g for g in groups if g["params"]],
                         {"lr": lr, "momentum": momentum, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["muon"]:
                self._muon(params, group["lr"], group["momentum"])
            else:
                self._adam(params, group["lr"], group["betas"], group["eps"])
        return loss

    def _muon(self, params: list[torch.Tensor], lr: float, momentum: float) -> None:
        # a 1×1 conv's (out, in, 1, 1) weight and gradient as the (out, in) matrix
        grads = [p.grad.reshape(p.shape[0], -1) for p in params]
        buffers = []
        for p, g in zip(params, grads):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(g)
            buffers.append(state["momentum_buffer"])
        # foreach: one kernel for all of a network's matrices on a GPU, not one each (a step is launch-bound)
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads)
        nesterov = torch._foreach_add(grads, buffers, alpha=momentum)   # the gradient plus the new momentum
        updates = (orthogonalize_padded(nesterov) if one_batch(params[0])
                   else [orthogonalize(m) for m in nesterov])
        by_scale: dict[float, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for p, update in zip(params, updates):
            targets, sources = by_scale.setdefault(RMS_MATCH * math.sqrt(max(update.shape)), ([], []))
            targets.append(p.view(update.shape))
            sources.append(update.to(p.dtype))
        for scale, (targets, sources) in by_scale.items():   # one kernel a shape (the face: one in all)
            torch._foreach_add_(targets, sources, alpha=-lr * scale)

    def _adam(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float], eps: float) -> None:
        """torch's own Adam update (torch.optim.adam.adam: the same code as torch.optim.Adam, foreach on a GPU)."""
        for p in params:
            state = self.state[p]
            if "step" not in state:   # as torch.optim.Adam's state: a float32 step count on the CPU
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
             [], [s["step"] for s in states], amsgrad=False, beta1=betas[0], beta2=betas[1], lr=lr,
             weight_decay=0.0, eps=eps, maximize=False)
