"""Where new rows come from when ACT slots halt: per-slot example streams, curriculum, augmentation.

NOTE: the original packs a fresh batch every step and *discards* the rows that land in slots whose
previous puzzle has not halted yet. Here a slot draws an example only when it has halted, so no
example is skipped: each global slot s reads its own sub-sequence (positions s, s+B, s+2B, ...) of
the original's epoch order (shuffle the groups, pick one random puzzle of each group, take all its
examples in random order). Because a slot's draws depend only on (seed, slot, draw count), a run
with W ranks (rank r owning slots [r*B/W, (r+1)*B/W)) draws exactly what one process with the same
global batch draws, and resuming needs nothing but the per-slot draw counters.

Curriculum (Sudoku and Maze, `data.reveal_*`): a fraction of the cells the model must fill in is
copied from the answer into the input, annealed from reveal_start to reveal_end; the puzzles stay
real, only easier early on. Sudoku: blanks get their digit. Maze: cells of the shortest path get
'o' (the codec accepts 'o' in a puzzle), so the model first learns to join the revealed dots and
then, as the fraction falls, to find the path alone. With `data.reveal_uniform` each example draws
its own fraction, uniform in [0, 2 x the curriculum's value], so one batch mixes puzzles as posted
with easier ones at the same mean.
Augmentation (`data.augment`): an example is transformed with its own seeded RNG as it is drawn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .examples import Examples

__all__ = ["SlotStream", "reveal_fraction", "reveal_givens", "Augment"]

# (inputs [L], labels [L], rng) -> (inputs, labels); for tasks whose augmentations keep puzzle ids
Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def reveal_fraction(step: int, start: float, end: float, steps: int) -> float:
    """Linear anneal of the revealed-blank fraction over `steps` optimizer steps, then constant `end`."""
    if steps <= 0 or step >= steps:
        return end  # exactly `end` (start + (end - start) * 1.0 can be off by one ulp)
    t = max(0.0, step / steps)
    return start + (end - start) * t


def reveal_givens(inputs: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Copy the answer into each cell to fill in with probability `fraction` (inputs, labels [..., L]).

    The cells to fill in are those where the label differs from the input and is a real token
    (> 0; PAD and ignored labels are never copied): a Sudoku's blanks (its givens equal the
    solution) and a maze's path cells (open ' ' in the input, 'o' in the answer). One uniform draw
    per cell in either case, so a seeded reveal does not depend on the task.
    """
    if fraction <= 0:
        return inputs
    to_fill = (inputs != labels) & (labels > 0)
    reveal = to_fill & (rng.random(inputs.shape) < fraction)
    return np.where(reveal, labels, inputs).astype(inputs.dtype)


class SlotStream:
    """Deterministic per-slot draws over an endless sequence of epochs (see module NOTE)."""

    def __init__(self, data: Examples, global_batch_size: int, slots: range, seed: int,
                 augment: Augment | None = None, reveal_uniform: bool = False) -> None:
        self.data = data
        self.global_batch_size = global_batch_size
        self.slots = slots  # the global slot indices this rank owns, in local-row order
        self.seed = seed
        self.augment = augment
        self.reveal_uniform = reveal_uniform  # per-example fraction uniform in [0, 2 x reveal]
        self.draws = np.zeros(len(slots), dtype=np.int64)  # per local slot: examples drawn so far
        self.pids = data.example_puzzle_ids()
        self._epochs: dict[int, np.ndarray] = {}
        self._epoch_starts = [0]  # global position where epoch e begins, filled lazily

    # ---- the original's epoch order ---------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        order = self._epochs.get(epoch)
        if order is None:
            d = self.data
            rng = np.random.default_rng([self.seed, 0x5EED, epoch])
            parts = []
            for g in rng.permutation(d.num_groups):
                p0, p1 = int(d.group_indices[g]), int(d.group_indices[g + 1])
                puzzle = int(rng.integers(p0, p1))
                e0, e1 = int(d.puzzle_indices[puzzle]), int(d.puzzle_indices[puzzle + 1])
                parts.append(e0 + rng.permutation(e1 - e0))
            order = np.concatenate(parts).astype(np.int64)
            self._epochs[epoch] = order
        return order

    def _locate(self, position: int) -> tuple[int, int]:
        """Global stream position -> (epoch, offset)."""
        while self._epoch_starts[-1] <= position:
            e = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + len(self._epoch_order(e)))
        e = int(np.searchsorted(self._epoch_starts, position, side="right")) - 1
        return e, position - self._epoch_starts[e]

    def _forget_old_epochs(self) -> None:
        oldest, _ = self._locate(int(self.slots[0]) + int(self.draws.min()) * self.global_batch_size)
        for e in [e for e in self._epochs if e < oldest]:
            del self._epochs[e]

    def epochs_done(self) -> float:
        """Fraction of epochs consumed, from the slowest slot (for logging)."""
        pos = int(self.draws.mean()) * self.global_batch_size
        e, off = self._locate(pos)
        return e + off / max(1, len(self._epoch_order(e)))

    # ---- drawing ----------------------------------------------------------------------------
    def draw(self, rows: np.ndarray, reveal: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New examples for the local rows where `rows` (bool [B_local]) is True.

        Returns inputs [B_local, L], labels [B_local, L], puzzle_ids [B_local] as int64 numpy arrays,
        with zeros in the rows not drawn (the caller only reads the selected rows).
        """
        d = self.data
        B = len(self.slots)
        inputs = np.zeros((B, d.seq_len), np.int64)
        labels = np.zeros((B, d.seq_len), np.int64)
        pids = np.zeros(B, np.int64)
        for i in np.flatnonzero(rows):
            slot, k = int(self.slots[i]), int(self.draws[i])
            epoch, off = self._locate(slot + k * self.global_batch_size)
            ex = int(self._epoch_order(epoch)[off])
            x, y = d.inputs[ex], d.labels[ex]
            if self.augment is not None or reveal > 0:
                rng = np.random.default_rng([self.seed, 0xA116, slot, k])
                if self.augment is not None:
                    x, y = self.augment(x, y, rng)
                fraction = min(1.0, rng.uniform(0.0, 2.0 * reveal)) if self.reveal_uniform and reveal > 0 else reveal
                x = reveal_givens(x, y, fraction, rng)
            inputs[i], labels[i], pids[i] = x, y, self.pids[ex]
            self.draws[i] += 1
        self._forget_old_epochs()
        return inputs, labels, pids

    def state(self) -> np.ndarray:
        return self.draws.copy()

    def load_state(self, draws: np.ndarray) -> None:
        if draws.shape != self.draws.shape:
            raise ValueError(f"stream state has {draws.shape[0]} slots, this rank has {self.draws.shape[0]}; "
                             "resume with the same global batch size and number of ranks")
        self.draws[:] = draws
