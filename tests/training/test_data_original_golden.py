"""Our builders against the original builders' own output, array for array.

The golden files under tests/fixtures/arc_original/ were written by the original
TinyRecursiveModels builders on the small inputs beside them (README.md there names the commands
and the commit). A public ARC checkpoint answers a task only through the embedding rows of that
task's versions, so identifiers.json and every index array must match exactly, not just in
distribution. The slow test repeats the ARC comparison on the full shared data, running the
original from a checkout named by TRM_ORIGINAL_REPO.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA
from training.data.build_arc import ArcBuildConfig, build_arc, load_subset, version_hash
from training.data.build_maze import MazeBuildConfig, build_maze
from training.data.build_sudoku import SudokuBuildConfig, build_sudoku
from training.data.dataset import ARRAY_NAMES

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "arc_original"
INPUTS = GOLDEN / "inputs" / "arc-agi"
RECIPES = {  # the original README's two ARC recipes: subsets, test set
    "arc1": (("training", "evaluation", "concept"), "evaluation"),
    "arc2": (("training2", "evaluation2", "concept"), "evaluation2"),
}
ORIGINAL_META = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                 "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "total_puzzles", "sets")


def _extract(name: str, dest: Path) -> Path:
    out = dest / name
    with tarfile.open(GOLDEN / f"{name}.tar.xz") as tar:
        tar.extractall(out, filter="data")
    return out


def _assert_same_arrays(theirs: Path, ours: Path, *, meta: tuple[str, ...] = ORIGINAL_META,
                        same_dtype: bool = True) -> None:
    for split in ("train", "test"):
        t_meta = json.loads((theirs / split / "dataset.json").read_text())
        o_meta = json.loads((ours / split / "dataset.json").read_text())
        assert {k: o_meta.get(k) for k in meta} == {k: t_meta[k] for k in meta}, split
        for name in ARRAY_NAMES:
            a = np.load(theirs / split / f"all__{name}.npy")
            b = np.load(ours / split / f"all__{name}.npy")
            assert a.shape == b.shape, (split, name, a.shape, b.shape)
            if same_dtype:
                assert a.dtype == b.dtype, (split, name, a.dtype, b.dtype)
            rows = np.flatnonzero((a != b).reshape(a.shape[0], -1).any(1)) if a.size else []
            assert len(rows) == 0, f"{split} {name}: {len(rows)} rows differ, first {rows[:5]}"


def _build_ours(recipe: str, num_aug: int, out: Path, prefix: Path = INPUTS) -> Path:
    subsets, test = RECIPES[recipe]
    build_arc(ArcBuildConfig(out=out, subsets=tuple(Path(f"{prefix}_{s}_challenges.json") for s in subsets),
                             test_set=Path(f"{prefix}_{test}_challenges.json"), num_aug=num_aug))
    return out


def _assert_same_arc_build(theirs: Path, ours: Path) -> None:
    for name in ("identifiers.json", "test_puzzles.json"):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    _assert_same_arrays(theirs, ours)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("num_aug", [8, 50])
def test_arc_build_equals_the_original_builder(recipe, num_aug, tmp_path):
    theirs = _extract(f"{recipe}-aug-{num_aug}", tmp_path)
    ours = _build_ours(recipe, num_aug, tmp_path / "ours")
    _assert_same_arc_build(theirs, ours)


def test_golden_inputs_exercise_the_known_differences(tmp_path):
    """Each of the golden inputs' traps is really there, so the equality above can fail on it."""
    training = json.loads(Path(f"{INPUTS}_training_challenges.json").read_text())
    concept = list(json.loads(Path(f"{INPUTS}_concept_challenges.json").read_text()))
    assert list(training["40853293"]) == ["test", "train"]  # ARC-AGI-1 order: test pairs first
    assert concept != sorted(concept)  # file order is not name order
    tasks = {**load_subset(Path(f"{INPUTS}_training_challenges.json")),
             **{f"e/{k}": v for k, v in load_subset(Path(f"{INPUTS}_evaluation_challenges.json")).items()}}

    def pairs(name):
        t = tasks[name]
        return [(np.array(p["input"], np.uint8), np.array(p["output"], np.uint8)) for p in t["train"] + t["test"]]

    assert version_hash(pairs("40853293")) == version_hash(pairs("e/070dd51e"))  # kept twice by the original
    # 4522001f is its own image under transform 7 up to pair order: the original's sorted hash
    # calls such versions duplicates, an order-sensitive hash would not
    p = pairs("4522001f")
    moved = [(np.ascontiguousarray(np.fliplr(np.rot90(i))), np.ascontiguousarray(np.fliplr(np.rot90(o))))
             for i, o in p]
    assert version_hash(moved) == version_hash(p)
    assert [i.tobytes() for i, _ in moved] != [i.tobytes() for i, _ in p]
    ids = json.loads(_extract("arc1-aug-8", tmp_path).joinpath("identifiers.json").read_text())
    assert "40853293" in ids and "070dd51e" in ids


def test_drop_overlap_is_an_explicit_choice_with_a_warning(tmp_path, caplog):
    subsets, test = RECIPES["arc1"]
    cfg = ArcBuildConfig(out=tmp_path, subsets=tuple(Path(f"{INPUTS}_{s}_challenges.json") for s in subsets),
                         test_set=Path(f"{INPUTS}_{test}_challenges.json"), num_aug=2, drop_overlap=True)
    with caplog.at_level("WARNING"):
        build_arc(cfg)
    assert "differ from the original builder" in caplog.text
    ids = json.loads((tmp_path / "identifiers.json").read_text())
    assert "40853293" not in ids and "070dd51e" in ids
    assert json.loads((tmp_path / "train" / "dataset.json").read_text())["dropped_overlapping_test_set"] == 1


def test_arc_tasks_table_answers_an_overlapping_task_with_the_test_set_versions(tmp_path):
    ours = _build_ours("arc1", 8, tmp_path)
    ids = json.loads((ours / "identifiers.json").read_text())
    table = json.loads((ours / "arc_tasks.json").read_text())
    firsts = {ids[v[0]["puzzle_id"]] for v in table.values()}
    assert "070dd51e" in firsts and "40853293" not in firsts  # same content: the evaluation task's rows
    assert len(table) == 12  # 13 tasks, one content shared


def test_sudoku_build_equals_the_original_builder(tmp_path):
    """Values equal the original's run with `np.random.seed(0)`; it stores augmented rows as int64, we uint8."""
    theirs = _extract("grid/sudoku-sub30-aug8", tmp_path)
    csv = GOLDEN / "grid" / "sudoku-csv"
    build_sudoku(SudokuBuildConfig(train_csv=csv / "train.csv", test_csv=csv / "test.csv", out=tmp_path / "ours",
                                   subsample=30, num_aug=8, seed=0))
    assert np.load(theirs / "train" / "all__inputs.npy").dtype == np.int64
    # the original's train dataset.json counts groups as total_puzzles; ours counts puzzles
    _assert_same_arrays(theirs, tmp_path / "ours", meta=ORIGINAL_META[:-2] + ("sets",), same_dtype=False)


@pytest.mark.parametrize("aug", [True, False])
def test_maze_build_equals_the_original_builder(aug, tmp_path):
    theirs = _extract(f"grid/maze-aug-{aug}", tmp_path)
    csv = GOLDEN / "grid" / "maze-csv"
    build_maze(MazeBuildConfig(out=tmp_path / "ours", train_csv=csv / "train.csv", test_csv=csv / "test.csv", aug=aug))
    meta = ORIGINAL_META[:-2] + ("sets",) if aug else ORIGINAL_META
    _assert_same_arrays(theirs, tmp_path / "ours", meta=meta)


# ---------------------------------------------------------------- slow: the original from a checkout
def _kaggle_files(folder: Path, out: Path, subset: str, names: list[str] | None = None) -> None:
    """A task folder as Kaggle challenges + solutions files (tasks sorted by name, keys as in each file)."""
    tasks = load_subset(folder)
    challenges = {n: {k: ([{"input": p["input"]} for p in v] if k == "test" else v) for k, v in tasks[n].items()
                      if k in ("train", "test")}  # a few shared files also carry "name"; Kaggle files do not
                  for n in (names or tasks)}
    (out / f"arc-agi_{subset}_challenges.json").write_text(json.dumps(challenges))
    (out / f"arc-agi_{subset}_solutions.json").write_text(
        json.dumps({n: [p["output"] for p in tasks[n]["test"]] for n in challenges}))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("num_aug", [8, 50])
def test_full_arc_build_equals_the_original_checkout(recipe, num_aug, tmp_path):
    repo = os.environ.get("TRM_ORIGINAL_REPO")
    if not repo or not (Path(repo) / "dataset" / "build_arc_dataset.py").is_file():
        pytest.skip("set TRM_ORIGINAL_REPO to a checkout of SamsungSAILMontreal/TinyRecursiveModels (and "
                    "TRM_ORIGINAL_PYTHON to an interpreter with numpy, pydantic, argdantic) to run the original")
    python = os.environ.get("TRM_ORIGINAL_PYTHON", sys.executable)
    arc = DATA / "arc"
    inputs = tmp_path / "in"
    inputs.mkdir()
    _kaggle_files(arc / "arc-agi-1" / "training", inputs, "training")
    _kaggle_files(arc / "arc-agi-1" / "evaluation", inputs, "evaluation")
    _kaggle_files(arc / "conceptarc" / "corpus", inputs, "concept")
    _kaggle_files(arc / "arc-agi-2" / "training", inputs, "training2")
    in_arc2 = set(load_subset(arc / "arc-agi-2" / "training"))  # ARC-AGI-2 evaluation is not in the shared data:
    stand_in = [n for n in load_subset(arc / "arc-agi-1" / "evaluation") if n not in in_arc2]  # stand-in
    _kaggle_files(arc / "arc-agi-1" / "evaluation", inputs, "evaluation2", stand_in)
    subsets, test = RECIPES[recipe]
    theirs = tmp_path / "theirs"
    run = subprocess.run([python, "-m", "dataset.build_arc_dataset", "--input-file-prefix", str(inputs / "arc-agi"),
                          "--output-dir", str(theirs), "--subsets", *subsets, "--test-set-name", test,
                          "--num-aug", str(num_aug)], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    ours = _build_ours(recipe, num_aug, tmp_path / "ours", prefix=inputs / "arc-agi")
    _assert_same_arc_build(theirs, ours)


def test_sudoku_draw_replay_equals_the_legacy_calls():
    """`random_sudoku_augs` replays the raw stream; the original calls RandomState once per draw."""
    from training.data.build_sudoku import random_sudoku_augs

    def calls(rng, n):
        out = []
        for _ in range(n):
            digits = rng.permutation(np.arange(1, 10))
            coin = rng.rand() < 0.5
            rows = np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])
            cols = np.concatenate([s * 3 + rng.permutation(3) for s in rng.permutation(3)])
            out.append((digits.tolist(), coin, rows.tolist(), cols.tolist()))
        return out

    for n in (1, 2500):  # 2500: past the first block of raw outputs
        replayed, called = np.random.RandomState(5), np.random.RandomState(5)
        augs = random_sudoku_augs(replayed, n)
        got = [(augs.digit_map[i, 1:].tolist(), bool(augs.transpose[i]), augs.row_perm[i].tolist(),
                augs.col_perm[i].tolist()) for i in range(n)]
        assert got == calls(called, n)
        assert replayed.randint(0, 2**31) == called.randint(0, 2**31)  # the stream continues in step
