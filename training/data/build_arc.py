"""ARC dataset builder: task JSON folders -> the original layout, with the original recipe.

Recipe (`dataset/build_arc_dataset.py`), seeded (default 42 as the original):
- Subsets are task folders (`<id>.json` each, searched recursively) or Kaggle-style
  `*_challenges.json` files (with `*_solutions.json` beside them). Each subset's tasks are
  shuffled. Demonstration pairs of every task go to the train split; test pairs go to the train
  split too, except for the tasks of the `test_set` subset, whose test pairs form the test split
  (and which are written to `test_puzzles.json`, with solutions, for scoring).
- Versions: each task gets the identity plus up to `num_aug` distinct augmentations (a dihedral
  transform x a permutation of colours 1-9, 0 fixed; at most 5*num_aug draws; duplicates by
  content dropped). Every version is its own puzzle with its own embedding id, shared by both
  splits; a task's versions form one group. Names as the original: `task` for the identity,
  `task|||t{k}|||{perm}` otherwise (`identifiers.json`, id 0 = "<blank>").
- Translation (train split only): each example of a version is placed at a random offset on the
  30x30 canvas, except one random example per version which stays at (0, 0).
- Leakage: a task of another subset whose name or content equals a test-set task is dropped
  (ARC-AGI-2 training repeats 376 ARC-AGI-1 evaluation tasks), and later duplicates of a task
  (same name or same content) are dropped too; both are logged and counted in dataset.json.

Beyond the original, `arc_tasks.json` maps each task's content fingerprint
(`trm_core.tasks.arc.task_fingerprint`) to its versions `{"puzzle_id", "k", "perm"}` (identity
first), so the service can recognise a posted task and run all its versions (see README.md).
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
from trm_core.tasks.arc import ArcTask
from trm_core.tasks.augment import ArcAug, dihedral_tensor

from .dataset import create_split_arrays, save_identifiers, save_split_index

__all__ = ["ArcBuildConfig", "load_subset", "plan_versions", "build_arc"]

logger = logging.getLogger(__name__)
RETRIES_FACTOR = 5  # draws per wanted version, as the original


@dataclass(frozen=True)
class ArcBuildConfig:
    out: Path
    subsets: tuple[Path, ...]
    test_set: Path | None = None  # one of `subsets`; its test pairs form the test split
    num_aug: int = 1000
    seed: int = 42
    max_tasks: int | None = None  # per subset, the first N task names in sorted order (small builds)
    translate: bool = True


@dataclass
class _Task:
    name: str
    task: ArcTask
    raw: dict[str, Any]
    is_test: bool
    fingerprint: str
    versions: list[ArcAug] = field(default_factory=list)


def load_subset(path: Path) -> dict[str, dict[str, Any]]:
    """Task name -> task JSON (with test outputs where known) from a folder or a Kaggle challenges file."""
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


def _encode(grid: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    return arc.encode_tensor(torch.from_numpy(grid), offset=offset).numpy()


def _pairs(t: _Task) -> list[tuple[np.ndarray, np.ndarray]]:
    outs = t.task.test_outputs or [[[0]] for _ in t.task.test_inputs]  # unknown solutions: dummy, as the original
    return [(np.array(i, np.uint8), np.array(o, np.uint8))
            for i, o in [*t.task.train, *zip(t.task.test_inputs, outs, strict=True)]]


def plan_versions(pairs: list[tuple[np.ndarray, np.ndarray]], num_aug: int, rng: np.random.Generator,
                  name: str = "") -> list[ArcAug]:
    """Identity plus up to `num_aug` augmentations whose transformed pairs all differ."""
    def digest(aug: ArcAug) -> bytes:
        perm = np.array(aug.perm, np.uint8)
        h = hashlib.blake2b(digest_size=16)
        for grid in (g for pair in pairs for g in pair):
            out = _apply(aug, grid, perm)
            h.update(bytes(out.shape))
            h.update(out.tobytes())
        return h.digest()

    versions = [ArcAug()]
    seen = {digest(versions[0])}
    for _ in range(RETRIES_FACTOR * num_aug):
        if len(versions) > num_aug:
            break
        aug = ArcAug(int(rng.integers(0, 8)), (0, *(rng.permutation(9) + 1).tolist()))
        d = digest(aug)
        if d not in seen:
            seen.add(d)
            versions.append(aug)
    if len(versions) < num_aug + 1:
        logger.info("task %s: only %d distinct versions", name, len(versions))
    return versions


def _collect(cfg: ArcBuildConfig, rng: np.random.Generator) -> tuple[list[_Task], dict[str, int]]:
    """Load, validate, shuffle and de-duplicate tasks; drop those that leak into the test set."""
    test_key = cfg.test_set.resolve() if cfg.test_set else None
    loaded = []
    for path in cfg.subsets:
        tasks = load_subset(path)
        names = sorted(tasks)[:cfg.max_tasks] if cfg.max_tasks else sorted(tasks)
        loaded.append((path.resolve() == test_key, names, tasks))
    test_names: set[str] = set()
    test_fps: set[str] = set()
    for is_test, names, tasks in loaded:
        if is_test:
            test_names.update(names)
            test_fps.update(arc.task_fingerprint(tasks[n]) for n in names)
    counts = {"dropped_overlapping_test_set": 0, "dropped_duplicates": 0}
    seen_names: set[str] = set()
    seen_fps: set[str] = set()
    out: list[_Task] = []
    for (is_test, names, tasks), path in zip(loaded, cfg.subsets, strict=True):
        for name in [names[i] for i in rng.permutation(len(names))]:  # shuffle, as the original
            task = arc.parse_task(tasks[name], loc=(str(path), name))
            fp = arc.task_fingerprint(task)
            if not is_test and (name in test_names or fp in test_fps):
                counts["dropped_overlapping_test_set"] += 1
                continue
            if name in seen_names or fp in seen_fps:
                counts["dropped_duplicates"] += 1
                continue
            seen_names.add(name)
            seen_fps.add(fp)
            out.append(_Task(name, task, tasks[name], is_test, fp))
    logger.info("ARC tasks: %d kept (%d test), %s", len(out), sum(t.is_test for t in out), counts)
    return out, counts


def _write_split(cfg: ArcBuildConfig, split: str, tasks: list[_Task], ids: dict[tuple[int, int], int],
                 rng: np.random.Generator, meta: dict[str, Any]) -> int:
    """Fill one split: per task one group, per version one puzzle, per pair one example."""
    is_train = split == "train"

    def examples(t: _Task) -> list[tuple[np.ndarray, np.ndarray]]:
        pairs = _pairs(t)
        n_train = len(t.task.train)
        if is_train:
            return pairs if not t.is_test else pairs[:n_train]
        return pairs[n_train:] if t.is_test else []

    chosen = [(ti, t, examples(t)) for ti, t in enumerate(tasks)]
    chosen = [c for c in chosen if c[2]]
    total = sum(len(t.versions) * len(ex) for _, t, ex in chosen)
    inputs, labels = create_split_arrays(cfg.out, split, total, arc.SEQ_LEN)
    pids, pidx, gidx = [], [0], [0]
    row = 0
    for ti, t, ex in tqdm(chosen, desc=f"{split} tasks", unit="task"):
        for vi, aug in enumerate(t.versions):
            perm = np.array(aug.perm, np.uint8)
            keep_at_origin = int(rng.integers(len(ex)))
            for ei, (inp, out) in enumerate(ex):
                inp, out = _apply(aug, inp, perm), _apply(aug, out, perm)
                offset = (0, 0)
                if is_train and cfg.translate and ei != keep_at_origin:
                    offset = (int(rng.integers(0, arc.CANVAS - max(inp.shape[0], out.shape[0]) + 1)),
                              int(rng.integers(0, arc.CANVAS - max(inp.shape[1], out.shape[1]) + 1)))
                inputs[row] = _encode(inp, offset)
                labels[row] = _encode(out, offset)
                row += 1
            pids.append(ids[ti, vi])
            pidx.append(row)
        gidx.append(len(pids))
    save_split_index(cfg.out, split, inputs, labels, np.array(pids, np.int32), np.array(pidx, np.int32),
                     np.array(gidx, np.int32), meta)
    return total


def build_arc(cfg: ArcBuildConfig) -> dict[str, int]:
    """Build `cfg.out/{train,test}`, identifiers.json, test_puzzles.json and arc_tasks.json."""
    if cfg.test_set is not None and cfg.test_set.resolve() not in {p.resolve() for p in cfg.subsets}:
        raise ValueError(f"test set {cfg.test_set} must be one of the subsets {[str(p) for p in cfg.subsets]}")
    rng = np.random.default_rng(cfg.seed)
    tasks, counts = _collect(cfg, rng)
    for t in tqdm(tasks, desc="plan versions", unit="task"):
        t.versions = plan_versions(_pairs(t), cfg.num_aug, rng, t.name)
    names = ["<blank>"]
    ids: dict[tuple[int, int], int] = {}
    for ti, t in enumerate(tasks):
        for vi, aug in enumerate(t.versions):
            ids[ti, vi] = len(names)
            names.append(t.name if aug.is_identity else aug.name(t.name))
    meta = {"vocab_size": arc.VOCAB_SIZE, "seq_len": arc.SEQ_LEN, "num_puzzle_identifiers": len(names),
            "task": "arc", "grid_height": arc.CANVAS, "grid_width": arc.CANVAS, "seed": cfg.seed,
            "num_aug": cfg.num_aug, "subsets": [str(p) for p in cfg.subsets],
            "test_set": str(cfg.test_set) if cfg.test_set else None, **counts}
    sizes = {split: _write_split(cfg, split, tasks, ids, rng, dict(meta)) for split in ("train", "test")}
    save_identifiers(cfg.out, names)
    (cfg.out / "test_puzzles.json").write_text(json.dumps({t.name: t.raw for t in tasks if t.is_test}))
    table = {t.fingerprint: [{"puzzle_id": ids[ti, vi], "k": a.k, "perm": "".join(map(str, a.perm))}
                             for vi, a in enumerate(t.versions)]
             for ti, t in enumerate(tasks)}
    (cfg.out / "arc_tasks.json").write_text(json.dumps(table, separators=(",", ":")))
    return {**sizes, "tasks": len(tasks), "puzzle_ids": len(names)}
