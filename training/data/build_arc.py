"""ARC dataset builder: the original `dataset/build_arc_dataset.py`, array for array.

A public ARC checkpoint answers a task only through the puzzle-embedding rows of that task's
versions, so serving one needs exactly the identifiers its training data had. By default this
builder therefore reproduces the original builder bit for bit on the same inputs (the Kaggle
`kaggle/combined/arc-agi_<subset>_challenges.json` files the original reads): identifiers.json,
every train/test array, dataset.json's original fields and test_puzzles.json. What that takes:

- One legacy `np.random.RandomState(seed)` stream (the original seeds the global `np.random`
  once), drawn in the original's order: per subset, shuffle its tasks then plan every task's
  versions, subset after subset; then, per split (train, test), per version, the example kept at
  the origin and the translations of the others.
- Tasks in the file's order before the shuffle (a folder of task files has no order: its files
  are taken sorted by path), examples of a version in the task JSON's key order (ARC-AGI-1's
  Kaggle files list `test` before `train`).
- Versions: the identity plus up to `num_aug` augmentations (dihedral id, then a permutation of
  colours 1-9 with 0 fixed; at most 5*num_aug draws). An augmentation is a duplicate when the
  sorted list of its pairs' hashes equals one seen (the original's `puzzle_hash`).
- Names: `task` for the identity, `task|||t{k}|||{perm}` otherwise; ids are given in the order
  train split then test split, group by group, from 1 (id 0 = "<blank>"). A name seen twice (a
  task in two subsets) keeps its first id, as the original.
- Splits: demonstrations go to train; test pairs too, except for the `test_set` subset, whose test
  pairs form the test split (and whose tasks are written to test_puzzles.json). Translation
  (train split only): each example of a version at a random offset on the 30x30 canvas, except
  one random example per version at (0, 0).

The original keeps every task, including a training task equal to a test-set task (ARC-AGI-1
training 40853293 = evaluation 070dd51e; ARC-AGI-2 training repeats 376 ARC-AGI-1 evaluation
tasks). `drop_overlap=True` drops such tasks and later repeats of a task instead, with a
warning: the result no longer matches the original's ids (for training new models only).

Beyond the original, `arc_tasks.json` maps each task's content fingerprint
(`trm_core.tasks.arc.task_fingerprint`) to its versions `{"puzzle_id", "k", "perm"}` (identity
first), so the service can recognise a posted task and run all its versions (see README.md). It
never changes an id; when two tasks share a fingerprint, the test-set task's versions are listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from trm_core.tasks import arc
from trm_core.tasks.augment import ArcAug, dihedral_tensor

from .dataset import create_split_arrays, save_identifiers, save_split_index

__all__ = ["ArcBuildConfig", "load_subset", "plan_versions", "version_hash", "build_arc"]

logger = logging.getLogger(__name__)
RETRIES_FACTOR = 5  # draws per wanted version, as the original
SPLITS = ("train", "test")
Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ArcBuildConfig:
    out: Path
    subsets: tuple[Path, ...]
    test_set: Path | None = None  # one of `subsets`; its test pairs form the test split
    num_aug: int = 1000
    seed: int = 42
    max_tasks: int | None = None  # per subset, its first N tasks in file order (small builds)
    translate: bool = True
    drop_overlap: bool = False  # drop tasks equal to test-set tasks and repeats (ids then differ)


@dataclass
class _Task:
    name: str
    raw: dict[str, Any]  # the task JSON as read (test outputs merged in), for test_puzzles.json
    is_test: bool
    fingerprint: str
    examples: dict[str, list[Pair]]  # split -> pairs in the JSON's key order
    versions: list[ArcAug] = field(default_factory=list)


def load_subset(path: Path) -> dict[str, dict[str, Any]]:
    """Task name -> task JSON (with test outputs where known) from a folder or a Kaggle challenges file.

    A Kaggle file keeps its order (the original builder shuffles from it); a folder's files are
    taken sorted by path.
    """
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise FileNotFoundError(f"{path} holds no task .json files")
        return {f.stem: json.loads(f.read_text()) for f in files}
    if path.is_file() and path.name.endswith("_challenges.json"):
        tasks = json.loads(path.read_text())
        sols = path.with_name(path.name.replace("_challenges.json", "_solutions.json"))
        if sols.is_file():
            for name, outputs in json.loads(sols.read_text()).items():
                for pair, out in zip(tasks[name]["test"], outputs, strict=True):
                    pair["output"] = out
        return tasks
    raise FileNotFoundError(f"{path} is neither a folder of task files nor a *_challenges.json file")


def _apply(aug: ArcAug, grid: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The version's colour map then dihedral transform (`trm_core.tasks.augment`), as a numpy grid."""
    return dihedral_tensor(torch.from_numpy(perm[grid]), aug.k).contiguous().numpy()


def _grid_hash(grid: np.ndarray) -> str:
    return hashlib.sha256(bytes(grid.shape) + grid.tobytes()).hexdigest()


def version_hash(pairs: list[Pair]) -> str:
    """The original's `puzzle_hash`: sha256 of the sorted per-pair hashes (pair order does not count)."""
    hashes = sorted(f"{_grid_hash(i)}|{_grid_hash(o)}" for i, o in pairs)
    return hashlib.sha256("|".join(hashes).encode()).hexdigest()


def _draw(rng: np.random.RandomState | np.random.Generator) -> ArcAug:
    """One augmentation, drawn as the original's `aug` (dihedral id, then the colour shuffle)."""
    if isinstance(rng, np.random.RandomState):
        k = int(rng.randint(0, 8))
        perm = rng.permutation(np.arange(1, 10, dtype=np.uint8))
    else:  # a Generator (adaptation jobs): same kind of draw, not the original's stream
        k = int(rng.integers(0, 8))
        perm = rng.permutation(9) + 1
    return ArcAug(k, (0, *perm.tolist()))


def plan_versions(pairs: list[Pair], num_aug: int, rng: np.random.RandomState | np.random.Generator,
                  name: str = "") -> list[ArcAug]:
    """Identity plus up to `num_aug` augmentations whose transformed pair sets all differ.

    With a `RandomState` the draws are the original builder's; `pairs` are all the task's pairs
    (both splits; unknown test outputs as the dummy [[0]]).
    """
    def digest(aug: ArcAug) -> str:
        perm = np.array(aug.perm, np.uint8)
        return version_hash([(_apply(aug, i, perm), _apply(aug, o, perm)) for i, o in pairs])

    versions = [ArcAug()]
    seen = {digest(versions[0])}
    for _ in range(RETRIES_FACTOR * num_aug):
        if len(versions) > num_aug:
            break
        aug = _draw(rng)
        d = digest(aug)
        if d not in seen:
            seen.add(d)
            versions.append(aug)
    if len(versions) < num_aug + 1:
        logger.info("task %s: only %d distinct versions", name, len(versions))
    return versions


def _task(name: str, raw: dict[str, Any], is_test: bool, loc: tuple[str, str]) -> _Task:
    """Validate one task and sort its pairs into splits in the JSON's key order, as the original."""
    parsed = arc.parse_task(raw, loc=loc)
    # unknown test outputs become the dummy [[0]], as the original
    raw = {**raw, "test": [p if "output" in p else {**p, "output": [[0]]} for p in raw["test"]]}
    examples: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    for key, pairs in raw.items():
        if key not in ("train", "test"):
            continue
        dest = "test" if key == "test" and is_test else "train"
        examples[dest] += [(np.array(p["input"], np.uint8), np.array(p["output"], np.uint8)) for p in pairs]
    return _Task(name, raw, is_test, arc.task_fingerprint(parsed), examples)


def _collect(cfg: ArcBuildConfig, rng: np.random.RandomState) -> tuple[list[_Task], dict[str, int]]:
    """Load every subset, shuffle it and plan its tasks' versions, subset after subset (the original's draws)."""
    test_key = cfg.test_set.resolve() if cfg.test_set else None
    loaded = []
    for path in cfg.subsets:
        tasks = load_subset(path)
        names = list(tasks)[:cfg.max_tasks] if cfg.max_tasks else list(tasks)
        loaded.append((path, path.resolve() == test_key, names, tasks))
    test_names: set[str] = set()
    test_fps: set[str] = set()
    if cfg.drop_overlap:
        for _, is_test, names, tasks in loaded:
            if is_test:
                test_names.update(names)
                test_fps.update(arc.task_fingerprint(tasks[n]) for n in names)
    counts = {"dropped_overlapping_test_set": 0, "dropped_duplicates": 0}
    seen_names: set[str] = set()
    seen_fps: set[str] = set()
    out: list[_Task] = []
    for path, is_test, names, tasks in loaded:
        order = list(names)
        rng.shuffle(order)  # the original shuffles the (name, task) list: the same draws
        for name in tqdm(order, desc=f"versions {path.name}", unit="task"):
            t = _task(name, tasks[name], is_test, (str(path), name))
            if cfg.drop_overlap:
                if not is_test and (name in test_names or t.fingerprint in test_fps):
                    counts["dropped_overlapping_test_set"] += 1
                    continue
                if name in seen_names or t.fingerprint in seen_fps:
                    counts["dropped_duplicates"] += 1
                    continue
                seen_names.add(name)
                seen_fps.add(t.fingerprint)
            t.versions = plan_versions([p for split in SPLITS for p in t.examples[split]], cfg.num_aug, rng, name)
            out.append(t)
    if cfg.drop_overlap:
        logger.warning("ARC: --drop-overlap dropped %s; puzzle ids differ from the original builder's, so "
                       "checkpoints trained on the original's data cannot be served with this build", counts)
    logger.info("ARC tasks: %d kept (%d test)", len(out), sum(t.is_test for t in out))
    return out, counts


def _version_name(t: _Task, vi: int) -> str:
    return t.name if vi == 0 else t.versions[vi].name(t.name)


def _identifiers(tasks: list[_Task]) -> tuple[list[str], dict[str, int]]:
    """Ids in the original's order: train split then test split, group by group, version by version."""
    names = ["<blank>"]
    ids: dict[str, int] = {}
    for split in SPLITS:
        for t in tasks:
            if not t.examples[split]:
                continue
            for vi in range(len(t.versions)):
                name = _version_name(t, vi)
                if name not in ids:
                    ids[name] = len(names)
                    names.append(name)
    return names, ids


def _write_split(cfg: ArcBuildConfig, split: str, tasks: list[_Task], ids: dict[str, int],
                 rng: np.random.RandomState, meta: dict[str, Any]) -> int:
    """Fill one split: per task one group, per version one puzzle, per pair one example."""
    translate = split == "train" and cfg.translate
    chosen = [t for t in tasks if t.examples[split]]
    total = sum(len(t.versions) * len(t.examples[split]) for t in chosen)
    inputs, labels = create_split_arrays(cfg.out, split, total, arc.SEQ_LEN)
    pids, pidx, gidx = [], [0], [0]
    row = 0
    for t in tqdm(chosen, desc=f"{split} tasks", unit="task"):
        ex = t.examples[split]
        for vi, aug in enumerate(t.versions):
            perm = np.array(aug.perm, np.uint8)
            keep_at_origin = rng.randint(0, len(ex))
            for ei, (inp, out) in enumerate(ex):
                inp, out = _apply(aug, inp, perm), _apply(aug, out, perm)
                offset = (0, 0)
                if translate and ei != keep_at_origin:
                    offset = (int(rng.randint(0, arc.CANVAS - max(inp.shape[0], out.shape[0]) + 1)),
                              int(rng.randint(0, arc.CANVAS - max(inp.shape[1], out.shape[1]) + 1)))
                inputs[row] = arc.encode_tensor(torch.from_numpy(inp), offset=offset).numpy()
                labels[row] = arc.encode_tensor(torch.from_numpy(out), offset=offset).numpy()
                row += 1
            pids.append(ids[_version_name(t, vi)])
            pidx.append(row)
        gidx.append(len(pids))
    save_split_index(cfg.out, split, inputs, labels, np.array(pids, np.int32), np.array(pidx, np.int32),
                     np.array(gidx, np.int32), meta)
    return total


def _task_table(tasks: list[_Task], ids: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """arc_tasks.json: fingerprint -> versions; a test-set task wins over an equal task of another subset."""
    table: dict[str, list[dict[str, Any]]] = {}
    owner: dict[str, _Task] = {}
    for t in sorted(tasks, key=lambda t: not t.is_test):  # stable: test-set tasks first
        if t.fingerprint in owner:
            logger.warning("ARC: task %s has the same content as %s; the service answers it with %s's versions",
                           t.name, owner[t.fingerprint].name, owner[t.fingerprint].name)
            continue
        owner[t.fingerprint] = t
        table[t.fingerprint] = [{"puzzle_id": ids[_version_name(t, vi)], "k": a.k, "perm": "".join(map(str, a.perm))}
                                for vi, a in enumerate(t.versions)]
    return table


def build_arc(cfg: ArcBuildConfig) -> dict[str, int]:
    """Build `cfg.out/{train,test}`, identifiers.json, test_puzzles.json and arc_tasks.json."""
    if cfg.test_set is not None and cfg.test_set.resolve() not in {p.resolve() for p in cfg.subsets}:
        raise ValueError(f"test set {cfg.test_set} must be one of the subsets {[str(p) for p in cfg.subsets]}")
    if cfg.num_aug < 0:
        raise ValueError(f"num_aug must be >= 0; got {cfg.num_aug}")
    rng = np.random.RandomState(cfg.seed)  # the original's legacy global stream, seeded once
    tasks, counts = _collect(cfg, rng)
    names, ids = _identifiers(tasks)
    meta = {"vocab_size": arc.VOCAB_SIZE, "seq_len": arc.SEQ_LEN, "num_puzzle_identifiers": len(names),
            "task": "arc", "grid_height": arc.CANVAS, "grid_width": arc.CANVAS, "seed": cfg.seed,
            "num_aug": cfg.num_aug, "subsets": [str(p) for p in cfg.subsets],
            "test_set": str(cfg.test_set) if cfg.test_set else None, "drop_overlap": cfg.drop_overlap, **counts}
    sizes = {split: _write_split(cfg, split, tasks, ids, rng, dict(meta)) for split in SPLITS}
    save_identifiers(cfg.out, names)
    (cfg.out / "test_puzzles.json").write_text(json.dumps({t.name: t.raw for t in tasks if t.is_test}))
    (cfg.out / "arc_tasks.json").write_text(json.dumps(_task_table(tasks, ids), separators=(",", ":")))
    return {**sizes, "tasks": len(tasks), "puzzle_ids": len(names)}
