"""The on-disk dataset format the trainer reads: exactly the original builders' layout.

    <root>/identifiers.json                 id -> name, index 0 = "<blank>"
    <root>/{train,test}/dataset.json        metadata (fields below)
    <root>/{train,test}/all__inputs.npy     uint8  [N, seq_len] token ids
    <root>/{train,test}/all__labels.npy     uint8  [N, seq_len] token ids, 0 = ignored
    <root>/{train,test}/all__puzzle_identifiers.npy  int32 [P]    embedding id of each puzzle
    <root>/{train,test}/all__puzzle_indices.npy      int32 [P+1]  example offsets of each puzzle
    <root>/{train,test}/all__group_indices.npy       int32 [G+1]  puzzle offsets of each group
    ARC also: <root>/test_puzzles.json (tasks scored at eval) and <root>/arc_tasks.json (ours).

`dataset.json` holds the original fields (pad_id, ignore_label_id, blank_identifier_id,
vocab_size, seq_len, num_puzzle_identifiers, total_groups, mean_puzzle_examples, total_puzzles,
sets) plus our optional keys `task` ("sudoku"|"maze"|"arc"), `grid_height`, `grid_width`,
which the original loader ignores; datasets written by the original builders (without them,
and with `total_puzzles` missing in HRM's version) load too. Labels keep the original convention
on disk (0 = ignore); the trainer maps them to -100. Numpy is fine here (training side only).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PuzzleSplit", "DatasetFormatError", "load_split", "save_split", "create_split_arrays",
           "save_split_index", "save_identifiers", "load_identifiers", "ARRAY_NAMES", "REQUIRED_META"]

logger = logging.getLogger(__name__)

ARRAY_NAMES = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
REQUIRED_META = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                 "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "sets")


class DatasetFormatError(ValueError):
    """A dataset directory that does not follow the layout above; the message says which file and why."""


@dataclass
class PuzzleSplit:
    """One split (train or test) in memory: the five arrays plus dataset.json's fields."""

    inputs: np.ndarray  # uint8 [N, L]
    labels: np.ndarray  # uint8 [N, L], 0 = ignored
    puzzle_identifiers: np.ndarray  # int32 [P]
    puzzle_indices: np.ndarray  # int32 [P+1]
    group_indices: np.ndarray  # int32 [G+1]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_puzzles(self) -> int:
        return int(self.puzzle_identifiers.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0]) - 1

    def validate(self, where: str = "split", *, check_values: bool = True) -> None:
        """Raise DatasetFormatError unless the arrays are consistent with each other and with meta.

        `check_values=False` skips the scan of every token (seconds on a multi-GB memory-mapped build).
        """
        problems = _check(self, check_values)
        if problems:
            raise DatasetFormatError(f"{where}: " + "; ".join(problems))


def _check(s: PuzzleSplit, check_values: bool) -> list[str]:
    out: list[str] = []
    if s.inputs.ndim != 2 or s.labels.shape != s.inputs.shape:
        out.append(f"inputs {s.inputs.shape} and labels {s.labels.shape} must be the same [N, seq_len] shape")
        return out
    n, seq_len = s.inputs.shape
    if "seq_len" in s.meta and int(s.meta["seq_len"]) != seq_len:
        out.append(f"arrays have seq_len {seq_len} but dataset.json says {s.meta['seq_len']}")
    for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        if getattr(s, name).ndim != 1:
            out.append(f"{name} must be 1-D; got shape {getattr(s, name).shape}")
    if out:
        return out
    p = s.puzzle_identifiers.shape[0]
    for name, arr, total, what in (("puzzle_indices", s.puzzle_indices, n, "examples"),
                                   ("group_indices", s.group_indices, p, "puzzles")):
        if arr.shape[0] < 1 or arr[0] != 0 or arr[-1] != total:
            out.append(f"{name} must start at 0 and end at the number of {what} ({total}); "
                       f"got {arr[:1].tolist()}...{arr[-1:].tolist()}")
        elif np.any(np.diff(arr) < 0):
            out.append(f"{name} must be non-decreasing")
    if s.puzzle_indices.shape[0] != p + 1:
        out.append(f"puzzle_indices has {s.puzzle_indices.shape[0]} entries; expected puzzles+1 = {p + 1}")
    vocab = s.meta.get("vocab_size")
    if vocab is not None and n and check_values:
        top = int(max(s.inputs.max(), s.labels.max()))
        if top >= int(vocab):
            out.append(f"token id {top} is outside vocab_size {vocab}")
    num_ids = s.meta.get("num_puzzle_identifiers")
    if num_ids is not None and p and int(s.puzzle_identifiers.max()) >= int(num_ids):
        out.append(f"puzzle identifier {int(s.puzzle_identifiers.max())} >= num_puzzle_identifiers {num_ids}")
    return out


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetFormatError(f"{path} not found; build the dataset first (trm build-data ...)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} is not valid JSON: {e}") from e


def load_split(root: str | Path, split: str, *, mmap: bool = False) -> PuzzleSplit:
    """Read `<root>/<split>/` (ours or the original builders' output) and validate it.

    `mmap=True` memory-maps the arrays (read-only), for datasets larger than RAM such as the full
    ARC build. Several sets listed in dataset.json are concatenated in order.
    """
    d = Path(root) / split
    meta = _read_json(d / "dataset.json")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DatasetFormatError(f"{d / 'dataset.json'} lacks {', '.join(missing)}")
    parts = []
    for set_name in meta["sets"]:
        arrays = {}
        for name in ARRAY_NAMES:
            path = d / f"{set_name}__{name}.npy"
            if not path.is_file():
                raise DatasetFormatError(f"{path} not found (dataset.json lists set {set_name!r})")
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        parts.append(PuzzleSplit(**arrays, meta=meta))
    split_data = parts[0] if len(parts) == 1 else _concat(parts, meta)
    split_data.meta = dict(meta)
    split_data.meta.setdefault("total_puzzles", split_data.num_puzzles)
    split_data.validate(str(d), check_values=not mmap)
    return split_data


def _concat(parts: list[PuzzleSplit], meta: dict[str, Any]) -> PuzzleSplit:
    ex_off = np.cumsum([0] + [p.num_examples for p in parts])
    pz_off = np.cumsum([0] + [p.num_puzzles for p in parts])
    return PuzzleSplit(
        inputs=np.concatenate([p.inputs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        puzzle_identifiers=np.concatenate([p.puzzle_identifiers for p in parts]),
        puzzle_indices=np.concatenate([parts[0].puzzle_indices[:1]] + [
            p.puzzle_indices[1:] + ex_off[i] for i, p in enumerate(parts)]).astype(np.int32),
        group_indices=np.concatenate([parts[0].group_indices[:1]] + [
            p.group_indices[1:] + pz_off[i] for i, p in enumerate(parts)]).astype(np.int32),
        meta=meta,
    )


def save_split(root: str | Path, split: str, data: PuzzleSplit) -> Path:
    """Write `data` in the original layout (set name "all"); derived counts are filled into meta."""
    data.validate(f"{split} split to save")
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    for name in ("inputs", "labels"):
        np.save(d / f"all__{name}.npy", np.ascontiguousarray(getattr(data, name), dtype=np.uint8))
    return _save_index(d, data)


def create_split_arrays(root: str | Path, split: str, num_examples: int,
                        seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped, zero-filled `all__inputs.npy` / `all__labels.npy` to fill in place.

    For builds larger than RAM (full ARC: ~4M examples, several GB); finish with `save_split_index`.
    """
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    shape = (num_examples, seq_len)
    return tuple(np.lib.format.open_memmap(d / f"all__{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
                 for name in ("inputs", "labels"))  # type: ignore[return-value]


def save_split_index(root: str | Path, split: str, inputs: np.ndarray, labels: np.ndarray,
                     puzzle_identifiers: np.ndarray, puzzle_indices: np.ndarray, group_indices: np.ndarray,
                     meta: dict[str, Any]) -> Path:
    """Second half of a `create_split_arrays` build: flush, write the index arrays and dataset.json."""
    for arr in (inputs, labels):
        if isinstance(arr, np.memmap):
            arr.flush()
    data = PuzzleSplit(inputs, labels, puzzle_identifiers, puzzle_indices, group_indices, meta)
    data.validate(f"{split} split to save")
    return _save_index(Path(root) / split, data)


def _save_index(d: Path, data: PuzzleSplit) -> Path:
    for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        np.save(d / f"all__{name}.npy", np.ascontiguousarray(getattr(data, name), dtype=np.int32))
    meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, **data.meta}
    meta.update(seq_len=int(data.inputs.shape[1]), total_groups=data.num_groups, total_puzzles=data.num_puzzles,
                mean_puzzle_examples=data.num_examples / max(data.num_puzzles, 1), sets=["all"])
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DatasetFormatError(f"meta for {d} lacks {', '.join(missing)}")
    (d / "dataset.json").write_text(json.dumps(meta, indent=1))
    logger.info("wrote %s: %d examples, %d puzzles, %d groups", d, data.num_examples, data.num_puzzles,
                data.num_groups)
    return d


def save_identifiers(root: str | Path, names: list[str]) -> None:
    """`identifiers.json`: names[i] is puzzle id i's name; names[0] must be "<blank>"."""
    if not names or names[0] != "<blank>":
        raise DatasetFormatError("identifiers must start with '<blank>' (id 0 is the blank puzzle)")
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / "identifiers.json").write_text(json.dumps(names))


def load_identifiers(root: str | Path) -> list[str]:
    return list(_read_json(Path(root) / "identifiers.json"))
