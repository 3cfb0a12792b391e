"""Learning-rate schedules for ``smartcash.training.scheduler``, as Ultralytics-style ``lf(epoch)`` multipliers of lr0.

Ultralytics sets every parameter group's lr to ``initial_lr * lf(epoch)`` at the start of each epoch (a ``LambdaLR``)
and, during its iteration-based warm-up, ramps the lr towards that value. So a schedule is only the multiplier, and
warm-up, optimizers and resume stay Ultralytics' own. Every schedule starts at 1 (lr0) and never goes below ``lrf``,
Ultralytics' final-lr fraction (min_lr = lr0 * lrf). From epoch ``length`` on it holds the value of its last epoch
(``length - 1``): a finished run extended beyond its schedule keeps training at the lr it ended with.

``python -m smartcash_ultra.engine.schedules`` prints the per-epoch lr of each schedule as a Markdown table.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ultralytics.utils.torch_utils import one_cycle

from smartcash_ultra.utils.settings import SCHEDULERS

DEFAULT_GAMMA = {"step": 0.1, "exponential": 0.95}
"""Decay factor when ``smartcash.training.gamma`` is null: per ``step_size`` epochs (step) or per epoch."""


@dataclass(frozen=True)
class Schedule:
    """The lr multiplier ``lf(epoch)`` of one schedule; call it with a 0-based epoch.

    - ``linear``: ``(1 - e / length) * (1 - lrf) + lrf`` (Ultralytics' own, ``cos_lr=False``)
    - ``cosine``: ``1 - (1 - cos(pi * e / length)) / 2 * (1 - lrf)`` (Ultralytics' ``one_cycle``, ``cos_lr=True``)
    - ``step``: ``max(gamma ** (e // step_size), lrf)``
    - ``exponential``: ``max(gamma ** e, lrf)``

    with ``e = min(epoch, length - 1)``. Linear and cosine would reach ``lrf`` at ``e = length``, one epoch after the
    last; step and exponential reach it when the decay passes it, and stay there.
    """

    name: str
    length: int
    lrf: float
    step_size: int = 10
    gamma: float | None = None

    def __post_init__(self):
        """Reject what no schedule can use, and fill in the named schedule's default gamma."""
        if self.name not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.name!r}")
        if not isinstance(self.length, int) or self.length < 1:
            raise ValueError(f"schedule length must be an integer >= 1, got {self.length!r}")
        if not 0 <= self.lrf <= 1:
            raise ValueError(f"lrf must be in [0, 1], got {self.lrf!r}")
        if self.gamma is None:
            object.__setattr__(self, "gamma", DEFAULT_GAMMA.get(self.name))

    def __call__(self, epoch: int) -> float:
        """Return the multiplier of lr0 for 0-based ``epoch``."""
        x = min(epoch, self.length - 1)
        if self.name == "cosine":
            return one_cycle(1, self.lrf, self.length)(x)
        if self.name == "linear":  # the very expression of Ultralytics' _setup_scheduler, which has it inline
            return max(1 - x / self.length, 0) * (1.0 - self.lrf) + self.lrf
        return max(self.gamma ** (x // (self.step_size if self.name == "step" else 1)), self.lrf)

    @property
    def label(self) -> str:
        """Name the schedule with the settings it uses, e.g. ``step (step_size 3, gamma 0.1)``."""
        if self.name == "step":
            return f"step (step_size {self.step_size}, gamma {self.gamma})"
        return f"exponential (gamma {self.gamma})" if self.name == "exponential" else self.name

    def __str__(self) -> str:
        return f"{self.label} over {self.length} epochs, floor lr0 * {self.lrf}"


def recorded_lrs(
    lf, lr0: float, epochs: int, warmup_epochs: float = 0.0, batches: int = 100, start: float = 0.0
) -> list[float]:
    """Return the lr of a parameter group at the end of each epoch, as Ultralytics records it (``lr/pgN``).

    This follows Ultralytics 8.4's ``_do_train``: warm-up lasts ``round(min(warmup_epochs, epochs - 1) * batches)``
    iterations and ramps the lr linearly from ``start`` (0 for weights, ``warmup_bias_lr`` for biases) to
    ``lr0 * lf(epoch)`` of the current epoch; after it the lr is ``lr0 * lf(epoch)``. A real run checks it
    (tests/test_schedulers.py).
    """
    nw = round(min(warmup_epochs, max(epochs - 1, 0)) * batches) if warmup_epochs > 0 else 0
    lrs = []
    for epoch in range(epochs):
        target, ni = lr0 * lf(epoch), batches * (epoch + 1) - 1  # ni: the epoch's last iteration
        lrs.append(start + (target - start) * ni / nw if nw and ni <= nw else target)
    return lrs


def lr_table(schedules: list[Schedule], lr0: float, epochs: int, warmup_epochs: float = 0.0, batches: int = 100) -> str:
    """Return a Markdown table of the weights' recorded lr: one row per epoch (1-based), one column per schedule."""
    columns = [recorded_lrs(s, lr0, epochs, warmup_epochs, batches) for s in schedules]
    rows = ["| epoch | " + " | ".join(s.label for s in schedules) + " |", "|---:|" + "---:|" * len(schedules)]
    rows += [f"| {e + 1} | " + " | ".join(f"{lrs[e]:.3g}" for lrs in columns) + " |" for e in range(epochs)]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Print the lr tables the docs show, for the settings given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr0", type=float, default=0.001)
    parser.add_argument("--lrf", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=float, nargs="+", default=[0, 3], help="warm-up epochs, one table each")
    parser.add_argument("--batches", type=int, default=100, help="batches per epoch (only warm-up depends on it)")
    args = parser.parse_args(argv)
    schedules = [
        Schedule("linear", args.epochs, args.lrf),
        Schedule("cosine", args.epochs, args.lrf),
        Schedule("step", args.epochs, args.lrf),  # the model YAML's defaults: step_size 10, gamma 0.1
        Schedule("step", args.epochs, args.lrf, step_size=3),
        Schedule("exponential", args.epochs, args.lrf),
        Schedule("exponential", args.epochs, args.lrf, gamma=0.5),
    ]
    for warmup in args.warmup:
        print(f"\nlr0 {args.lr0}, lrf {args.lrf} (floor {args.lr0 * args.lrf:.3g}), {args.epochs} epochs, ", end="")
        print(f"warm-up {warmup:g} epochs ({args.batches} batches per epoch): lr at the end of each epoch\n")
        print(lr_table(schedules, args.lr0, args.epochs, warmup, args.batches))


if __name__ == "__main__":
    main()
