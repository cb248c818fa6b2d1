"""DivergenceGuard: a network whose training loss blows up is rolled back and goes on at half the rate.

Why: a SIREN (sin(30·(Wx + b))) at a high learning rate can leave its basin for good. On an H100 a 10-minute
run with `--lr-scale 6` lost its face morpher at step ~6,000: the face loss went from 0.5 to 2.9 and stayed
there, the hidden weights grew 6×, and the run wrote a 23.7 dB student without a word (the same recipe's
previous run, another random stream, ended at 32.2 dB; docs/benchmarks.md session 16). A user's unseen
character should not cost a wasted run.

How (no GPU sync between checks): each step adds one loss per network to running sums on the device (the
face's loss, and the body's unweighted blended-image L1: the body's total loss changes with its phase's
weights, this term does not). Every `every_steps` steps the sums are read back as the window's means. A
network whose window mean exceeds `ratio` × its lowest window mean so far has diverged: its weights, its
Adam state and its share of the weight average go back to the snapshot taken two healthy checks ago,
and its learning rate is halved (for good: the rate that diverged once would again). Otherwise the window
was healthy and a new snapshot is taken (a copy of ~3 MB on the device); two are kept, and a rollback goes to
the older, which a whole healthy window followed.

Checks fall on fixed steps, so every rank of a multi-GPU run checks together; the main rank decides and
the decision is broadcast (the ranks' weights are identical, each restores its own snapshot).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

NETWORKS = ("face", "body")


@dataclass
class Rollback:
    """One rollback: which network, at which step, its window mean loss against the best one, the step whose
    state it went back to (None: no snapshot yet, only the rate changed), and its learning-rate factor from then on."""
    network: str
    step: int
    loss: float
    best: float
    restored_step: int | None
    lr_factor: float


@dataclass
class _Network:
    params: list[torch.nn.Parameter]      # the parameters themselves: the optimizer's state is keyed by them
    optimizer: torch.optim.Optimizer
    average: list[torch.Tensor] = field(default_factory=list)   # this network's tensors of the WeightAverage
    lr_factor: float = 1.0
    best: float = float("inf")
    snapshots: list[tuple[int, list[torch.Tensor]]] = field(default_factory=list)   # (step, state), oldest first, ≤ 2

    def tensors(self) -> list[torch.Tensor]:
        """Everything a rollback restores: weights, Adam's moments and step counts, the average."""
        state = [t for p in self.params for t in self.optimizer.state.get(p, {}).values() if torch.is_tensor(t)]
        return [p.detach() for p in self.params] + state + self.average


class DivergenceGuard:
    """Watches the face and body morphers of one run (see the module docstring).

    networks: name ("face", "body") → (its parameters, its optimizer, its tensors of the weight average
    (empty without one)). ratio > 1: how far above its best a window's mean loss must be to count as
    divergence. lr_factors, best, rollbacks: a resumed run's (``state()`` of its checkpoint)."""

    def __init__(self, networks: dict[str, tuple[list[torch.Tensor], torch.optim.Optimizer, list[torch.Tensor]]],
                 every_steps: int, ratio: float = 2.0, lr_factors: dict[str, float] | None = None,
                 best: dict[str, float] | None = None, rollbacks: list[dict] | None = None):
        if every_steps < 1 or not ratio > 1:
            raise ValueError(f"DivergenceGuard needs every_steps >= 1 and ratio > 1, got {every_steps}, {ratio}")
        self.every_steps, self.ratio = every_steps, ratio
        self.networks = {name: _Network(list(params), opt, list(average))
                         for name, (params, opt, average) in networks.items()}
        for name, factor in (lr_factors or {}).items():
            self.networks[name].lr_factor = float(factor)
        for name, value in (best or {}).items():
            self.networks[name].best = float(value)
        self._sums: torch.Tensor | None = None
        self._count = 0
        self.rollbacks: list[Rollback] = [Rollback(**r) for r in rollbacks or []]

    def due(self, step: int) -> bool:
        """Whether `step` (steps done) ends a window."""
        return step % self.every_steps == 0

    def lr_factor(self, name: str) -> float:
        return self.networks[name].lr_factor

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        """One step's losses (0-d device tensors, one per watched network): summed on the device, no sync."""
        values = torch.stack([losses[name].detach().float().reshape(()) for name in self.networks])
        self._sums = values if self._sums is None else self._sums + values
        self._count += 1

    @torch.no_grad()
    def check(self, step: int, decide=None) -> list[Rollback]:
        """At a check step: compare the window's means with the bests, roll back what diverged, snapshot what
        did not. decide (optional): maps the main rank's divergence bitmask to the one every rank uses
        (Ranks.broadcast_int). Returns this check's rollbacks (also appended to self.rollbacks)."""
        if self._sums is None:
            return []
        means = (self._sums / self._count).tolist()               # the one sync of the window
        self._sums, self._count = None, 0
        names = list(self.networks)
        mask = 0
        for bit, (name, mean) in enumerate(zip(names, means)):
            net = self.networks[name]
            # a non-finite mean has diverged too (NaN compares false, so test it by name)
            if not (mean == mean and mean < float("inf")) or (net.snapshots and mean > self.ratio * net.best):
                mask |= 1 << bit
        if decide is not None:
            mask = decide(mask)
        done = []
        for bit, (name, mean) in enumerate(zip(names, means)):
            net = self.networks[name]
            tensors = net.tensors()
            if mask >> bit & 1:
                # back to the older snapshot: a full healthy window followed it, where the newer one may already
                # hold the first steps of the blow-up (a loss climbs for a while before it doubles)
                restored = None
                if net.snapshots:
                    restored, state = net.snapshots[0]
                    _copy(tensors, state)
                    net.snapshots = net.snapshots[:1]
                net.lr_factor *= 0.5
                done.append(Rollback(name, step, mean, net.best, restored, net.lr_factor))
            else:
                net.best = min(net.best, mean)
                if len(net.snapshots) < 2 or len(net.snapshots[0][1]) != len(tensors):   # Adam's state appears at step 1
                    net.snapshots = net.snapshots[-1:] + [(step, [t.clone() for t in tensors])]
                else:                                                  # reuse the older buffers: no allocation
                    _, state = net.snapshots.pop(0)
                    _copy(state, tensors)
                    net.snapshots.append((step, state))
        self.rollbacks += done
        return done

    def state(self) -> dict:
        """For a checkpoint's metadata: the learning-rate factors, the best window means and the rollbacks."""
        return {"lr_factors": {n: net.lr_factor for n, net in self.networks.items()},
                "best": {n: net.best for n, net in self.networks.items() if net.best < float("inf")},
                "rollbacks": [r.__dict__ for r in self.rollbacks]}


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """In place, so CUDA graphs that captured these tensors' addresses see the restored values. One by one:
    Adam's step counts live on the CPU beside device tensors."""
    for d, s in zip(dst, src):
        d.copy_(s)
