from __future__ import annotations

import json

import numpy as np
import pytest

from training.data.dataset import (
    DatasetFormatError,
    PuzzleSplit,
    create_split_arrays,
    load_identifiers,
    load_split,
    save_identifiers,
    save_split,
    save_split_index,
)


def _split(n_puzzles=3, per=2, seq_len=6, vocab=11):
    rng = np.random.default_rng(0)
    n = n_puzzles * per
    return PuzzleSplit(
        inputs=rng.integers(1, vocab, (n, seq_len)).astype(np.uint8),
        labels=rng.integers(0, vocab, (n, seq_len)).astype(np.uint8),
        puzzle_identifiers=np.arange(1, n_puzzles + 1, dtype=np.int32),
        puzzle_indices=np.arange(0, n + 1, per, dtype=np.int32),
        group_indices=np.array([0, 1, n_puzzles], np.int32),
        meta={"vocab_size": vocab, "num_puzzle_identifiers": n_puzzles + 1, "task": "sudoku",
              "grid_height": 2, "grid_width": 3},
    )


def test_save_load_round_trip_keeps_arrays_dtypes_and_extra_keys(tmp_path):
    data = _split()
    save_split(tmp_path, "train", data)
    back = load_split(tmp_path, "train")
    for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    assert back.inputs.dtype == np.uint8 and back.puzzle_indices.dtype == np.int32
    assert back.meta["task"] == "sudoku" and back.meta["grid_width"] == 3
    assert back.meta["total_groups"] == 2 and back.meta["total_puzzles"] == 3
    assert back.meta["mean_puzzle_examples"] == 2.0 and back.meta["sets"] == ["all"]
    assert back.meta["seq_len"] == 6 and back.meta["ignore_label_id"] == 0
    mapped = load_split(tmp_path, "train", mmap=True)
    assert isinstance(mapped.inputs, np.memmap)
    np.testing.assert_array_equal(mapped.labels, data.labels)


def _write_like_the_original(root, split, inputs, labels, pids, pidx, gidx, meta, set_name="all"):
    """What the original builders write: np.save of each array and json.dump of PuzzleDatasetMetadata."""
    d = root / split
    d.mkdir(parents=True)
    for name, arr in (("inputs", inputs), ("labels", labels), ("puzzle_identifiers", pids),
                      ("puzzle_indices", pidx), ("group_indices", gidx)):
        np.save(d / f"{set_name}__{name}.npy", arr)
    (d / "dataset.json").write_text(json.dumps(meta))


def test_reads_a_dataset_written_by_the_original_builders(tmp_path):
    # the original Sudoku builder's output for 2 puzzles x (1 + 1 augmentation), HRM metadata (no
    # total_puzzles, no extra keys), labels 2..10, ids all 0
    inputs = np.array([[1, 2, 3] * 27, [3, 1, 2] * 27, [1, 5, 6] * 27, [6, 1, 5] * 27], np.uint8)
    labels = inputs + (inputs == 1) * 3
    meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": 81,
            "num_puzzle_identifiers": 1, "total_groups": 2, "mean_puzzle_examples": 1, "sets": ["all"]}
    _write_like_the_original(tmp_path, "train", inputs, labels.astype(np.uint8), np.zeros(4, np.int32),
                             np.arange(5, dtype=np.int32), np.array([0, 2, 4], np.int32), meta)
    (tmp_path / "identifiers.json").write_text(json.dumps(["<blank>"]))
    split = load_split(tmp_path, "train")
    assert split.num_examples == 4 and split.num_groups == 2 and split.meta["total_puzzles"] == 4
    assert "task" not in split.meta
    assert load_identifiers(tmp_path) == ["<blank>"]


def test_several_sets_are_concatenated_with_shifted_offsets(tmp_path):
    a, b = _split(2, 1), _split(3, 2)
    meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": 6,
            "num_puzzle_identifiers": 4, "total_groups": 4, "mean_puzzle_examples": 1.6, "sets": ["a", "b"]}
    d = tmp_path / "train"
    d.mkdir()
    for set_name, s in (("a", a), ("b", b)):
        s.group_indices = np.array([0, 1, s.num_puzzles], np.int32)
        for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
            np.save(d / f"{set_name}__{name}.npy", getattr(s, name))
    (d / "dataset.json").write_text(json.dumps(meta))
    split = load_split(tmp_path, "train")
    assert split.num_examples == 2 + 6 and split.num_puzzles == 5
    np.testing.assert_array_equal(split.puzzle_indices, [0, 1, 2, 4, 6, 8])
    np.testing.assert_array_equal(split.group_indices, [0, 1, 2, 3, 5])


def test_memmap_build_path_writes_the_same_layout(tmp_path):
    data = _split()
    inputs, labels = create_split_arrays(tmp_path, "test", data.num_examples, 6)
    inputs[:], labels[:] = data.inputs, data.labels
    save_split_index(tmp_path, "test", inputs, labels, data.puzzle_identifiers, data.puzzle_indices,
                     data.group_indices, data.meta)
    np.testing.assert_array_equal(load_split(tmp_path, "test").inputs, data.inputs)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: setattr(s, "labels", s.labels[:, :5]), "inputs (6, 6) and labels (6, 5) must be the same"),
    (lambda s: setattr(s, "puzzle_indices", np.array([0, 2, 4, 5], np.int32)),
     "puzzle_indices must start at 0 and end at the number of examples (6)"),
    (lambda s: setattr(s, "puzzle_indices", np.array([0, 4, 2, 6], np.int32)), "puzzle_indices must be non-decreasing"),
    (lambda s: setattr(s, "group_indices", np.array([0, 2], np.int32)),
     "group_indices must start at 0 and end at the number of puzzles (3)"),
    (lambda s: setattr(s, "puzzle_identifiers", np.arange(4, dtype=np.int32)), "puzzle_indices has 4 entries"),
    (lambda s: s.inputs.__setitem__((0, 0), 11), "token id 11 is outside vocab_size 11"),
    (lambda s: s.puzzle_identifiers.__setitem__(0, 9), "puzzle identifier 9 >= num_puzzle_identifiers 4"),
    (lambda s: s.meta.__setitem__("seq_len", 81), "arrays have seq_len 6 but dataset.json says 81"),
])
def test_inconsistent_splits_are_refused_with_the_reason(tmp_path, mutate, message):
    data = _split()
    mutate(data)
    with pytest.raises(DatasetFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        save_split(tmp_path, "train", data)


def test_missing_files_and_keys_name_the_path(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"train/dataset.json not found; build the dataset first"):
        load_split(tmp_path, "train")
    save_split(tmp_path, "train", _split())
    (tmp_path / "train" / "all__labels.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"all__labels.npy not found \(dataset.json lists set 'all'\)"):
        load_split(tmp_path, "train")
    meta = json.loads((tmp_path / "train" / "dataset.json").read_text())
    del meta["vocab_size"], meta["sets"]
    (tmp_path / "train" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match="lacks vocab_size, sets"):
        load_split(tmp_path, "train")
    (tmp_path / "train" / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="is not valid JSON"):
        load_split(tmp_path, "train")


def test_identifiers_start_with_blank(tmp_path):
    save_identifiers(tmp_path, ["<blank>", "a", "a|||t1|||0123456789"])
    assert load_identifiers(tmp_path)[2] == "a|||t1|||0123456789"
    with pytest.raises(DatasetFormatError, match="must start with '<blank>'"):
        save_identifiers(tmp_path, ["a"])
