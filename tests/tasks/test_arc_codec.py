from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.tasks.shared_data import ARC_DIR, arc_tasks
from trm_core.tasks import TaskInputError, arc

# (tasks, train pairs, test pairs) from ../shared/data/README.md
README_COUNTS = {
    "arc-agi-1/training": (400, 1302, 416),
    "arc-agi-1/evaluation": (400, 1363, 419),
    "arc-agi-2/training": (1000, 3232, 1076),
    "conceptarc": (160 + 16, 473, 528),
}


def _grids(task: dict):
    for key in ("train", "test"):
        for i, pair in enumerate(task[key]):
            for field in ("input", "output"):
                yield (key, i, field), pair[field]


@pytest.mark.parametrize("folder", sorted(README_COUNTS))
def test_every_real_task_parses_and_counts_match_readme(folder):
    tasks = arc_tasks(folder)
    num_train = num_test = 0
    for name, raw in tasks.items():
        task = arc.parse_task(raw)
        assert task.test_outputs is not None, name
        num_train += len(task.train)
        num_test += len(task.test_inputs)
        assert arc.verify(task.test_inputs[0], task.test_outputs[0]) == []
    assert (len(tasks), num_train, num_test) == README_COUNTS[folder]


@pytest.mark.parametrize("folder", sorted(README_COUNTS))
def test_every_real_grid_round_trips_through_tokens(folder):
    rng = random.Random(folder)
    for raw in arc_tasks(folder).values():
        for _, grid in _grids(raw):
            tokens = arc.encode(grid)
            assert len(tokens) == arc.SEQ_LEN and max(tokens) < arc.VOCAB_SIZE
            assert arc.decode(tokens) == grid
        # translation (the builder's train-split augmentation) is inverted by decoding at the offset
        _, grid = next(_grids(raw))
        offset = (rng.randint(0, 30 - len(grid)), rng.randint(0, 30 - len(grid[0])))
        assert arc.decode(arc.encode(grid, offset=offset), offset=offset) == grid


def test_canvas_layout_matches_the_original_builder():
    grid = [[0, 1, 2], [3, 4, 5]]
    tokens = arc.encode(grid, offset=(1, 2))
    canvas = [tokens[r * 30:(r + 1) * 30] for r in range(30)]
    assert canvas[1][2:5] == [2, 3, 4] and canvas[2][2:5] == [5, 6, 7]  # colour c -> c + 2
    assert canvas[3][2:5] == [1, 1, 1]  # EOS row below, over the grid's columns only
    assert canvas[1][5] == 1 and canvas[2][5] == 1  # EOS column right, over the grid's rows only
    assert canvas[3][5] == 0  # the corner stays PAD
    assert sum(t != 0 for t in tokens) == 6 + 3 + 2
    full = [[7] * 30 for _ in range(30)]  # no room for EOS: nothing but colours
    assert set(arc.encode(full)) == {9}
    assert arc.decode(arc.encode(full)) == full
    with pytest.raises(ValueError, match="does not fit"):
        arc.encode(grid, offset=(29, 0))


def test_decode_crops_the_largest_clean_rectangle_like_the_original():
    clean = arc.encode([[1] * 5 for _ in range(4)])
    # a stray PAD at row 2, column 1 makes rows 2.. 1 wide: 2x5=10 beats 4x1=4
    tokens = list(clean)
    tokens[2 * 30 + 1] = arc.PAD
    assert arc.decode(tokens) == [[1] * 5, [1] * 5]
    # a stray EOS at row 2, column 3 makes rows 2.. 3 wide: 4x3=12 beats 2x5=10
    tokens = list(clean)
    tokens[2 * 30 + 3] = arc.EOS
    assert arc.decode(tokens) == [[1] * 3 for _ in range(4)]
    assert arc.decode([arc.PAD] * 900) == []
    assert arc.verify([[0]], arc.decode([arc.PAD] * 900)) == ["grid is empty; ARC grids have 1-30 rows"]


def test_task_fingerprint_ignores_names_and_test_outputs_but_not_content():
    raw = arc_tasks("arc-agi-1/training")["007bbfb7"]
    fp = arc.task_fingerprint(raw)
    assert len(fp) == 64 and fp == arc.task_fingerprint(arc.parse_task(raw))
    posted = {"name": "x", "train": raw["train"], "test": [{"input": p["input"]} for p in raw["test"]]}
    assert arc.task_fingerprint(posted) == fp
    changed = {"train": [dict(p) for p in raw["train"]], "test": raw["test"]}
    changed["train"][0] = {"input": [row[:] for row in raw["train"][0]["input"]], "output": raw["train"][0]["output"]}
    changed["train"][0]["input"][0][0] = (changed["train"][0]["input"][0][0] + 1) % 10
    assert arc.task_fingerprint(changed) != fp
    reordered = {"train": raw["train"][::-1], "test": raw["test"]}
    assert arc.task_fingerprint(reordered) == fp  # pair order does not matter
    fps = {arc.task_fingerprint(t) for t in arc_tasks("arc-agi-1/evaluation").values()}
    assert len(fps) == 400  # distinct tasks, distinct fingerprints


def test_fingerprint_recognises_the_arc2_copies_of_arc1_evaluation_tasks():
    # ARC-AGI-2 training repeats these ARC-AGI-1 evaluation tasks, often with the pairs reordered
    ids = (ARC_DIR / "arc-agi-2_training_ids_also_in_arc-agi-1_evaluation.txt").read_text().split()
    assert len(ids) == 376
    evaluation, training2 = arc_tasks("arc-agi-1/evaluation"), arc_tasks("arc-agi-2/training")
    differ = [i for i in ids if arc.task_fingerprint(evaluation[i]) != arc.task_fingerprint(training2[i])]
    # one task was corrected in ARC-AGI-2 (two input cells of a demonstration differ), so its content differs
    assert differ == ["ac0c5833"]


GOOD = [[1, 2], [3, 4]]


@pytest.mark.parametrize("grid, loc, message", [
    ("12", ("grid",), "grid must be a list of rows of colours 0-9; got str"),
    ({}, ("grid",), "got dict"),
    ([], ("grid",), "grid is empty; ARC grids have 1-30 rows"),
    ([[]], ("grid", 0), "row 0 is empty"),
    ([[0]] * 31, ("grid",), "grid has 31 rows; ARC grids have at most 30"),
    ([[0] * 31], ("grid", 0), "row 0 has 31 cells; ARC grids have at most 30 columns"),
    ([[0, 0], [0]], ("grid", 1), "row 1 has 1 cells but row 0 has 2; grids must be rectangular"),
    ([[0, 0], 5], ("grid", 1), "row 1 must be a list of colours 0-9; got int"),
    ([[0, 0], [0, 10]], ("grid", 1, 1), "row 1, column 1: value 10 is out of range 0-9"),
    ([[0, -1]], ("grid", 0, 1), "row 0, column 1: value -1 is out of range 0-9"),
    ([[0, "3"]], ("grid", 0, 1), "row 0, column 1: '3' is not an integer colour 0-9"),
    ([[0, 1.5]], ("grid", 0, 1), "row 0, column 1: 1.5 is not an integer colour 0-9"),
    ([[0, False]], ("grid", 0, 1), "row 0, column 1: False is not an integer colour 0-9"),
])
def test_malformed_grids_name_the_problem(grid, loc, message):
    with pytest.raises(TaskInputError) as exc:
        arc.parse(grid)
    assert exc.value.loc == loc
    assert message in str(exc.value)
    assert message in " ".join(arc.verify(GOOD, grid))  # verify reports the same, without raising


@pytest.mark.parametrize("task, loc, message", [
    ([], ("task",), "task must be an object with 'train' and 'test' lists; got list"),
    ({"test": [{"input": GOOD}]}, ("task", "train"), "task needs a non-empty list 'train' of pairs; got missing"),
    ({"train": [], "test": [{"input": GOOD}]}, ("task", "train"), "got an empty list"),
    ({"train": [{"input": GOOD, "output": GOOD}], "test": "x"}, ("task", "test"), "got str"),
    ({"train": [{"input": GOOD}], "test": [{"input": GOOD}]}, ("task", "train", 0), "train[0] has no 'output' grid"),
    ({"train": [GOOD], "test": [{"input": GOOD}]}, ("task", "train", 0),
     "train[0] must be an object with 'input' and 'output'; got list"),
    ({"train": [{"input": GOOD, "output": GOOD}], "test": [{"output": GOOD}]}, ("task", "test", 0),
     "test[0] has no 'input' grid"),
    ({"train": [{"input": GOOD, "output": GOOD}],
      "test": [{"input": [[0] * 8] * 2 + [[0] * 7 + [12]]}]}, ("task", "test", 0, "input", 2, 7),
     "row 2, column 7: value 12 is out of range 0-9"),
])
def test_malformed_tasks_name_the_problem(task, loc, message):
    with pytest.raises(TaskInputError) as exc:
        arc.parse_task(task)
    assert exc.value.loc == loc
    assert message in str(exc.value)


def test_task_without_test_outputs_parses_and_several_errors_are_all_reported():
    task = arc.parse_task({"train": [{"input": GOOD, "output": GOOD}], "test": [{"input": GOOD}]})
    assert task.test_outputs is None and task.to_json()["test"] == [{"input": GOOD}]
    with pytest.raises(TaskInputError) as exc:
        arc.parse_task({"train": [{"input": [[11]], "output": []}], "test": [{"input": "x"}]})
    assert [loc for loc, _ in exc.value.errors] == [
        ("task", "train", 0, "input", 0, 0), ("task", "train", 0, "output"), ("task", "test", 0, "input")]


def _original_encode(grid: list[list[int]], offset: tuple[int, int]) -> list[int]:
    """The original builder's `np_grid_to_seq_translational_augment` for one grid (dataset/build_arc_dataset.py)."""
    g = np.array(grid, np.uint8)
    pad_r, pad_c = offset
    nrow, ncol = g.shape
    result = np.pad(g + 2, ((pad_r, 30 - pad_r - nrow), (pad_c, 30 - pad_c - ncol)), constant_values=0)
    eos_row, eos_col = pad_r + nrow, pad_c + ncol
    if eos_row < 30:
        result[eos_row, pad_c:eos_col] = 1
    if eos_col < 30:
        result[pad_r:eos_row, eos_col] = 1
    return result.reshape(-1).tolist()


def test_encode_equals_the_original_on_random_grids_and_offsets():
    rng = random.Random(0)
    for _ in range(200):
        h, w = rng.randint(1, 30), rng.randint(1, 30)
        grid = [[rng.randrange(10) for _ in range(w)] for _ in range(h)]
        off = (rng.randint(0, 30 - h), rng.randint(0, 30 - w))
        assert arc.encode(grid, offset=off) == _original_encode(grid, off)
        tensor = arc.encode_tensor(torch.tensor(grid), offset=off)
        assert tensor.dtype == torch.uint8 and tensor.tolist() == _original_encode(grid, off)
