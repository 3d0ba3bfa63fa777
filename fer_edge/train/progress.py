"""Per-step progress on a terminal only: tqdm when installed, else one rewritten line. Logs
that are not a terminal get just the per-epoch lines the loop prints, never carriage returns."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.done = total, desc, 0
        self.active = enabled and self.stream.isatty()
        self._bar = None
        if self.active:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=self.stream)

    def update(self, n: int = 1, **postfix: float) -> None:
        if not self.active:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        elif postfix or self.done == self.total:
            extra = " ".join(f"{k} {v:.4g}" for k, v in postfix.items())
            print(f"\r{self.desc} {self.done}/{self.total} {extra}", end="", file=self.stream, flush=True)

    def close(self) -> None:
        if not self.active:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print("\r\033[K", end="", file=self.stream, flush=True)
