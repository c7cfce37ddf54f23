"""The one puzzle-CSV reader: real Sudoku files read the same as the codec parses them, bad rows named."""

from __future__ import annotations

import gzip

import pytest
import torch

from tests.conftest import DATA, require_shared
from tests.tasks.shared_data import sudoku_rows
from trm_core.tasks import TaskInputError, sudoku
from trm_core.tasks.puzzle_csv import read_puzzle_csv, read_sudoku_csv

SUDOKU = DATA / "sudoku"


@pytest.mark.parametrize("name", ["forum_hardest_1905_11plus_train_1k.csv", "magictour_top1465.csv"])
def test_sudoku_csv_reads_every_row_as_the_codec_parses_it(name):
    puzzles, solutions = read_sudoku_csv(require_shared(SUDOKU / name, "a Sudoku CSV"))
    rows = sudoku_rows(name)
    assert puzzles.dtype == torch.uint8 and puzzles.shape == (len(rows), 9, 9) == solutions.shape
    for i in (0, 1, len(rows) // 2, len(rows) - 1):
        q, a = rows[i]
        assert puzzles[i].tolist() == sudoku.parse(q) and solutions[i].tolist() == sudoku.parse(a)
    assert sudoku.encode_batch(puzzles[:2]).tolist() == [sudoku.encode(sudoku.parse(q)) for q, _ in rows[:2]]


def test_sudoku_csv_limit_and_rating_filter_and_gzip(tmp_path):
    name = "forum_hardest_1905_11plus_train_1k.csv"
    lines = require_shared(SUDOKU / name, "the Sudoku training CSV").read_text().splitlines()
    puzzles, _ = read_sudoku_csv(SUDOKU / name, limit=7)
    assert puzzles.shape[0] == 7
    ratings = [float(line.split(",")[3]) for line in lines[1:]]
    cut = sorted(ratings)[len(ratings) // 2]
    if cut != int(cut):
        pytest.skip("ratings are not integers")
    kept, _ = read_sudoku_csv(SUDOKU / name, min_rating=int(cut))
    assert kept.shape[0] == sum(r >= cut for r in ratings)
    packed = tmp_path / "p.csv.gz"
    with gzip.open(packed, "wt") as f:
        f.write("\n".join(lines[:11]) + "\n")
    assert torch.equal(read_sudoku_csv(packed)[0], read_sudoku_csv(SUDOKU / name, limit=10)[0])
    assert len(read_puzzle_csv(packed)) == 10 and read_puzzle_csv(packed)[0].line == 2


def _with_row(tmp_path, index, question=None, answer=None):
    lines = require_shared(SUDOKU / "forum_hardest_1106.csv", "a Sudoku CSV").read_text().splitlines()[:5]
    src, q, a, rating = lines[index].split(",")
    lines[index] = ",".join([src, question or q, answer or a, rating])
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, q, a


def test_sudoku_csv_names_the_first_bad_row_with_the_codecs_message(tmp_path):
    path, q, a = _with_row(tmp_path, 3)
    path, _, _ = _with_row(tmp_path, 3, answer=a[:-1] + ("1" if a[-1] != "1" else "2"))
    with pytest.raises(ValueError, match=r"bad.csv line 4: the answer is not a solution: .*row 8"):
        read_sudoku_csv(path)
    path, _, _ = _with_row(tmp_path, 2, question=q[:40] + "x" + q[41:])
    with pytest.raises(TaskInputError, match=r"character 40 \(row 4, column 4\): 'x'") as e:
        read_sudoku_csv(path)
    assert e.value.loc == ("bad.csv", 3, "question", 40)
    path, _, _ = _with_row(tmp_path, 1, question=q[:80])
    with pytest.raises(TaskInputError, match="80 characters; expected 81"):
        read_sudoku_csv(path)
    path, _, _ = _with_row(tmp_path, 1, question=a[:3] + "5" + a[4:] if a[3] != "5" else a[:3] + "6" + a[4:])
    with pytest.raises(ValueError, match="line 2: the answer is not a solution: .*given"):
        read_sudoku_csv(path)


def test_puzzle_csv_refuses_a_wrong_header_and_a_short_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c,d\n1,2,3,4\n")
    with pytest.raises(ValueError, match="header is"):
        read_puzzle_csv(path)
    path.write_text("source,question,answer,rating\ns,q,a\n")
    with pytest.raises(ValueError, match="line 2: 3 columns; expected 4"):
        read_puzzle_csv(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_sudoku_csv(tmp_path / "none.csv")
