"""An exponential moving average of a model's weights (and BatchNorm statistics).

The average of the last few thousand steps generalises better than the last step's weights and
smooths the end of a short schedule; validation, best.pt and the final test use it when
`ema_decay` > 0."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        # state_dict() tensors share storage with the live parameters and buffers, so these
        # references stay current across steps (load_state_dict copies in place).
        self._live = model.state_dict()
        self.shadow = {k: v.detach().clone() for k, v in self._live.items()}
        self._floats = [k for k, v in self.shadow.items() if v.dtype.is_floating_point]
        self._others = [k for k in self.shadow if k not in set(self._floats)]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        # Early on the average would be dominated by the random init: ramp the decay up.
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_([self.shadow[k] for k in self._floats], [self._live[k] for k in self._floats], 1 - d)
        for k in self._others:
            self.shadow[k].copy_(self._live[k])

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The model carries the averaged weights inside the block, its own after."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(backup)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
