"""The three builders on small real subsets, read back through load_split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tasks.test_augment import reference_shuffle
from training.data.build_arc import ArcBuildConfig, build_arc
from training.data.build_maze import MazeBuildConfig, build_maze
from training.data.build_sudoku import SudokuBuildConfig, build_sudoku, random_sudoku_augs
from training.data.dataset import load_identifiers, load_split
from trm_core.tasks import arc, maze, sudoku
from trm_core.tasks.arc_vote import ArcVoter, score
from trm_core.tasks.augment import ArcAug, dihedral, parse_version_name

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SUDOKU_TRAIN = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"
SUDOKU_TEST = DATA / "sudoku" / "forum_hardest_1106.csv"
ARC = DATA / "arc"


# ---------------------------------------------------------------------------------------- Sudoku
@pytest.fixture(scope="module")
def sudoku_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("sudoku")
    cfg = SudokuBuildConfig(train_csv=SUDOKU_TRAIN, test_csv=SUDOKU_TEST, out=out, subsample=20, num_aug=3,
                            test_limit=10, seed=7)
    return cfg, build_sudoku(cfg)


def test_sudoku_build_layout_and_groups(sudoku_build):
    cfg, counts = sudoku_build
    assert counts == {"train": 20 * 4, "test": 10}
    train, test = load_split(cfg.out, "train"), load_split(cfg.out, "test")
    assert train.inputs.shape == (80, 81) and test.inputs.shape == (10, 81)
    np.testing.assert_array_equal(train.group_indices, np.arange(0, 81, 4))
    np.testing.assert_array_equal(train.puzzle_indices, np.arange(81))
    assert not train.puzzle_identifiers.any() and train.meta["num_puzzle_identifiers"] == 1
    assert train.meta["task"] == "sudoku" and train.meta["vocab_size"] == 11 and train.meta["num_aug"] == 3
    assert load_identifiers(cfg.out) == ["<blank>"]


def test_sudoku_build_rows_are_real_puzzles_and_valid_augmentations(sudoku_build):
    cfg, _ = sudoku_build
    train = load_split(cfg.out, "train")
    originals = {sudoku.to_string(sudoku.decode(sudoku.encode(sudoku.parse(row.split(",")[1]))))
                 for row in SUDOKU_TRAIN.read_text().splitlines()[1:]}
    for g in range(20):
        rows = [(sudoku.decode(train.inputs[i]), sudoku.decode(train.labels[i])) for i in range(g * 4, g * 4 + 4)]
        assert sudoku.to_string(rows[0][0]) in originals  # the first of a group is the original
        blanks = {sum(v == 0 for r in p for v in r) for p, _ in rows}
        assert len(blanks) == 1
        for puzzle, solution in rows:
            assert sudoku.verify(puzzle, solution) == []


def test_sudoku_build_is_seeded(sudoku_build, tmp_path):
    cfg, _ = sudoku_build
    again = SudokuBuildConfig(**{**cfg.__dict__, "out": tmp_path})
    build_sudoku(again)
    np.testing.assert_array_equal(load_split(tmp_path, "train").inputs, load_split(cfg.out, "train").inputs)


def test_builder_draws_are_valid_sudoku_symmetries_applied_as_the_original():
    grids = np.random.default_rng(0).integers(0, 10, (64, 9, 9))
    augs = random_sudoku_augs(np.random.RandomState(0), 64)
    out = augs.apply(torch.from_numpy(grids))
    for i in range(64):
        aug = augs[i]  # SudokuAug checks the draw: digit permutation keeping 0, rows stay in their bands
        assert out[i].tolist() == reference_shuffle(aug, grids[i].tolist())
    assert 0 < int(augs.transpose.sum()) < 64


def test_sudoku_build_names_a_bad_row(tmp_path):
    bad = tmp_path / "bad.csv"
    lines = SUDOKU_TEST.read_text().splitlines()[:3]
    src, q, a, rating = lines[2].split(",")
    lines[2] = ",".join([src, q, a[:-1] + ("1" if a[-1] != "1" else "2"), rating])
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad.csv line 3: the answer is not a solution: .*row 8"):
        build_sudoku(SudokuBuildConfig(train_csv=bad, test_csv=bad, out=tmp_path / "o", num_aug=1))


# ------------------------------------------------------------------------------------------ Maze
@pytest.fixture(scope="module")
def maze_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("maze")
    cfg = MazeBuildConfig(out=out, generate=True, num_train=5, num_test=5, seed=3)
    return cfg, build_maze(cfg)


def test_maze_build_from_generated_mazes(maze_build):
    cfg, counts = maze_build
    assert counts == {"train": 5 * 8, "test": 5}
    train, test = load_split(cfg.out, "train"), load_split(cfg.out, "test")
    assert train.meta["seq_len"] == 900 and train.meta["vocab_size"] == 6 and train.meta["grid_height"] == 30
    np.testing.assert_array_equal(train.group_indices, np.arange(0, 41, 8))
    for split in (train, test):
        for x, y in zip(split.inputs, split.labels, strict=True):
            puzzle, answer = maze.decode(x), maze.decode(y)
            assert maze.verify(puzzle, answer) == [] and maze.is_shortest(puzzle, answer)
    first = maze.decode(train.inputs[0])
    assert [maze.decode(train.inputs[k]) for k in range(8)] == [
        ["".join(r) for r in dihedral(first, k)] for k in range(8)]


def test_maze_build_from_csv_matches_and_test_has_no_training_maze(maze_build, tmp_path):
    cfg, _ = maze_build
    again = build_maze(MazeBuildConfig(out=tmp_path, train_csv=cfg.out / "raw" / "train.csv",
                                       test_csv=cfg.out / "raw" / "test.csv", aug=False))
    assert again == {"train": 5, "test": 5}
    np.testing.assert_array_equal(load_split(tmp_path, "train").inputs, load_split(cfg.out, "train").inputs[::8])
    train_q = {bytes(x) for x in load_split(tmp_path, "train").inputs}
    assert not train_q & {bytes(x) for x in load_split(tmp_path, "test").inputs}


def test_maze_build_canonical_labels_are_a_function_of_the_input(tmp_path):
    """A maze that looks the same under a transpose gets two different labels from the CSV's route
    turned with it (a choice the model cannot see), and one label with `canonical`."""
    grid = ["S   ", "    ", "    ", "   G"]
    route = maze.shortest_path(grid)
    (tmp_path / "m.csv").write_text("source,question,answer,rating\n"
                                    f"hand,{''.join(grid)},{''.join(maze.mark_path(grid, route))},6\n")
    labels = {}
    for canonical in (False, True):
        out = tmp_path / str(canonical)
        build_maze(MazeBuildConfig(out=out, train_csv=tmp_path / "m.csv", test_csv=tmp_path / "m.csv",
                                   canonical=canonical))
        train = load_split(out, "train")
        assert train.meta["labels"] == ("canonical" if canonical else "csv")
        assert (train.inputs[0] == train.inputs[6]).all()  # transform 6 is the transpose: the same input
        for x, y in zip(train.inputs, train.labels, strict=True):
            assert maze.verify(maze.decode(x), maze.decode(y)) == [] and maze.is_shortest(maze.decode(x), maze.decode(y))
        labels[canonical] = (train.labels[0] == train.labels[6]).all()
    assert labels == {False: False, True: True}


def test_maze_build_refuses_a_non_shortest_answer(maze_build, tmp_path):
    cfg, _ = maze_build
    lines = (cfg.out / "raw" / "train.csv").read_text().splitlines()
    src, q, a, rating = lines[1].split(",")
    bad_a = maze.mark_path(maze.parse(q), [])  # no path at all
    lines[1] = ",".join([src, q, "".join(bad_a), rating])
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="bad.csv line 2: the answer is not a valid path: the path does not"):
        build_maze(MazeBuildConfig(out=tmp_path / "o", train_csv=tmp_path / "bad.csv", test_csv=tmp_path / "bad.csv"))


# ------------------------------------------------------------------------------------------- ARC
@pytest.fixture(scope="module")
def arc_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("arc")
    cfg = ArcBuildConfig(out=out, subsets=(ARC / "arc-agi-1" / "training", ARC / "arc-agi-1" / "evaluation"),
                         test_set=ARC / "arc-agi-1" / "evaluation", num_aug=3, max_tasks=5, seed=42)
    return cfg, build_arc(cfg)


def _task_files(folder, names):
    return {n: json.loads((ARC / folder / f"{n}.json").read_text()) for n in names}


def test_arc_build_splits_ids_and_names(arc_build):
    cfg, counts = arc_build
    assert counts["tasks"] == 10 and counts["puzzle_ids"] == 1 + 10 * 4
    names = load_identifiers(cfg.out)
    train, test = load_split(cfg.out, "train"), load_split(cfg.out, "test")
    assert train.meta["num_puzzle_identifiers"] == len(names) == test.meta["num_puzzle_identifiers"]
    assert train.num_groups == 10 and test.num_groups == 5  # every task in train, eval tasks in test
    assert train.num_puzzles == 40 and test.num_puzzles == 20
    test_puzzles = json.loads((cfg.out / "test_puzzles.json").read_text())
    assert sorted(test_puzzles) == sorted(p.stem for p in sorted((ARC / "arc-agi-1/evaluation").glob("*.json"))[:5])
    assert set(test.puzzle_identifiers.tolist()) <= set(train.puzzle_identifiers.tolist())  # shared ids
    for pid in test.puzzle_identifiers.tolist():
        assert parse_version_name(names[pid])[0] in test_puzzles


def _offset(tokens):
    first = int(np.flatnonzero(np.asarray(tokens))[0])  # the grid's top-left cell comes before any EOS
    return divmod(first, 30)


def test_arc_build_examples_invert_to_the_original_pairs(arc_build):
    cfg, _ = arc_build
    names = load_identifiers(cfg.out)
    train = load_split(cfg.out, "train")
    test_names = set(json.loads((cfg.out / "test_puzzles.json").read_text()))
    tasks = {p.stem: json.loads(p.read_text()) for folder in ("arc-agi-1/training", "arc-agi-1/evaluation")
             for p in sorted((ARC / folder).glob("*.json"))[:5]}
    moved = 0
    for p in range(train.num_puzzles):
        task, k, perm = parse_version_name(names[train.puzzle_identifiers[p]])
        aug = ArcAug(k, perm)
        # train split: demonstrations of every task, test pairs only of tasks outside the test set,
        # in the task file's key order (as the original)
        pairs = [p for key, ps in tasks[task].items() if key == "train" or (key == "test" and task not in test_names)
                 for p in ps]
        rows = range(train.puzzle_indices[p], train.puzzle_indices[p + 1])
        assert len(rows) == len(pairs)
        at_origin = 0
        for row, pair in zip(rows, pairs, strict=True):
            off = _offset(train.inputs[row])
            at_origin += off == (0, 0)
            moved += off != (0, 0)
            assert aug.invert(arc.decode(train.inputs[row], offset=off)) == pair["input"]
            assert aug.invert(arc.decode(train.labels[row], offset=off)) == pair["output"]
        assert at_origin >= 1  # one example per version stays at the origin, as the original
    assert moved > 0


def test_arc_tasks_table_maps_fingerprints_to_versions(arc_build):
    cfg, _ = arc_build
    names = load_identifiers(cfg.out)
    table = json.loads((cfg.out / "arc_tasks.json").read_text())
    assert len(table) == 10 and sum(len(v) for v in table.values()) == len(names) - 1
    evaluation = _task_files("arc-agi-1/evaluation", json.loads((cfg.out / "test_puzzles.json").read_text()))
    for name, raw in evaluation.items():
        posted = {"train": raw["train"], "test": [{"input": p["input"]} for p in raw["test"]]}
        versions = table[arc.task_fingerprint(posted)]
        assert len(versions) == 4 and names[versions[0]["puzzle_id"]] == name  # identity first
        for v in versions:
            assert parse_version_name(names[v["puzzle_id"]]) == (name, v["k"], tuple(int(c) for c in v["perm"]))


def test_test_split_labels_score_full_marks_through_the_voter(arc_build):
    """The trainer's evaluation path: rows -> identifiers -> inverse -> vote -> pass@K."""
    cfg, _ = arc_build
    names = load_identifiers(cfg.out)
    test = load_split(cfg.out, "test")
    voter = ArcVoter()
    for p in range(test.num_puzzles):
        for row in range(test.puzzle_indices[p], test.puzzle_indices[p + 1]):
            voter.add_tokens(names[test.puzzle_identifiers[p]], test.inputs[row], test.labels[row], 1.0)
    tasks = json.loads((cfg.out / "test_puzzles.json").read_text())
    assert score(voter, tasks) == {"pass@1": 1.0, "pass@2": 1.0}


def test_arc_build_drop_overlap_drops_arc2_copies_of_the_evaluation_tasks(tmp_path):
    overlap = set((ARC / "arc-agi-2_training_ids_also_in_arc-agi-1_evaluation.txt").read_text().split())
    cfg = ArcBuildConfig(out=tmp_path, subsets=(ARC / "arc-agi-2" / "training", ARC / "arc-agi-1" / "evaluation"),
                         test_set=ARC / "arc-agi-1" / "evaluation", num_aug=0, max_tasks=12, drop_overlap=True)
    build_arc(cfg)
    arc2_first = sorted(p.stem for p in (ARC / "arc-agi-2" / "training").glob("*.json"))[:12]
    eval_first = {p.stem for p in sorted((ARC / "arc-agi-1" / "evaluation").glob("*.json"))[:12]}
    leaking = [n for n in arc2_first if n in eval_first]
    assert leaking and set(leaking) <= overlap
    assert load_split(tmp_path, "train").meta["dropped_overlapping_test_set"] == len(leaking)
    names = load_identifiers(tmp_path)
    kept = {names[versions[0]["puzzle_id"]] for versions in json.loads((tmp_path / "arc_tasks.json").read_text()).values()}
    assert kept == (set(arc2_first) - set(leaking)) | eval_first
    test_names = {parse_version_name(names[i])[0] for i in load_split(tmp_path, "test").puzzle_identifiers}
    assert test_names == eval_first
