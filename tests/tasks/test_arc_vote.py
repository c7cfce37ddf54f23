from __future__ import annotations

import json
import math
import random
import struct

import pytest

from tests.tasks.shared_data import arc_tasks
from trm_core.tasks import arc
from trm_core.tasks.arc_vote import ArcVoter, make_submission, score, sigmoid, write_submission
from trm_core.tasks.augment import ArcAug


@pytest.fixture(scope="module")
def tasks():
    return dict(list(arc_tasks("arc-agi-1/evaluation").items())[:6])


def _wrong(grid):
    return [[(v + 1) % 10 for v in row] for row in grid]


def _vote_all_versions(voter, name, raw, rng, predict):
    """Every test input through 8 versions; `predict(version_index, solution)` gives the un-augmented
    prediction, which is augmented as a model would output it and then tokenised round trip."""
    for pair in raw["test"]:
        for v in range(8):
            aug = ArcAug(v % 8, (0, *rng.sample(range(1, 10), 9)))
            pred = aug.apply(predict(v, pair["output"]))
            model_in = arc.decode(arc.encode(aug.apply(pair["input"])))
            voter.add_tokens(aug.name(name), arc.encode(model_in), arc.encode(pred), rng.uniform(-3, 3))


def test_majority_of_versions_wins_after_mapping_back(tasks):
    voter, rng = ArcVoter(), random.Random(0)
    for name, raw in tasks.items():
        _vote_all_versions(voter, name, raw, rng, lambda v, sol: sol if v < 5 else _wrong(sol))
    result = score(voter, tasks)
    assert result == {"pass@1": 1.0, "pass@2": 1.0}
    name, raw = next(iter(tasks.items()))
    ranked = voter.ranked(name, raw["test"][0]["input"])
    assert [c.votes for c in ranked] == [5, 3] and ranked[0].grid == raw["test"][0]["output"]


def test_minority_answer_counts_for_pass2_only(tasks):
    voter, rng = ArcVoter(), random.Random(1)
    for name, raw in tasks.items():
        _vote_all_versions(voter, name, raw, rng, lambda v, sol: sol if v < 3 else _wrong(sol))
    assert score(voter, tasks, ks=(1, 2)) == {"pass@1": 0.0, "pass@2": 1.0}


def test_ties_in_votes_rank_by_mean_halting_confidence():
    voter = ArcVoter()
    a, b, inp = [[1]], [[2]], [[0]]
    voter.add("t", inp, a, -2.0)
    voter.add("t", inp, b, 2.0)
    voter.add("t", inp, a, 0.0)
    voter.add("t", inp, b, 1.0)
    ranked = voter.ranked("t", inp)
    assert [c.grid for c in ranked] == [b, a]
    assert ranked[0].mean_confidence == pytest.approx((sigmoid(2.0) + sigmoid(1.0)) / 2)
    assert voter.attempts("t", inp, k=3) == [b, a, b]  # padded by repeating the best, as the original
    assert voter.attempts("t", [[5]]) == []


def test_task_scores_are_averaged_over_its_test_inputs():
    task = {"train": [{"input": [[1]], "output": [[1]]}],
            "test": [{"input": [[1]], "output": [[3]]}, {"input": [[2]], "output": [[4]]}]}
    voter = ArcVoter()
    voter.add("t", [[1]], [[3]], 0.0)
    voter.add("t", [[2]], [[9]], 0.0)
    assert score(voter, {"t": task}, ks=(1,)) == {"pass@1": 0.5}
    with pytest.raises(ValueError, match="has no test outputs"):
        score(voter, {"t": {"train": task["train"], "test": [{"input": [[1]]}]}})


def test_submission_has_two_attempts_per_test_input_in_order(tasks, tmp_path):
    voter, rng = ArcVoter(), random.Random(2)
    names = list(tasks)
    for name in names[:-1]:  # the last task gets no predictions at all
        _vote_all_versions(voter, name, tasks[name], rng, lambda v, sol: sol if v < 4 else _wrong(sol))
    sub = make_submission(voter, tasks)
    assert list(sub) == names
    for name in names[:-1]:
        assert len(sub[name]) == len(tasks[name]["test"])
        for entry, pair in zip(sub[name], tasks[name]["test"], strict=True):
            assert set(entry) == {"attempt_1", "attempt_2"}
            assert pair["output"] in (entry["attempt_1"], entry["attempt_2"])
    assert sub[names[-1]] == [{"attempt_1": [[0]], "attempt_2": [[0]]}] * len(tasks[names[-1]]["test"])
    write_submission(tmp_path / "submission.json", sub)
    assert json.loads((tmp_path / "submission.json").read_text()) == sub


def test_sigmoid_is_stable_for_large_logits():
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0 and sigmoid(0.0) == 0.5


def _original_ranking(logits_by_grid: list[tuple[str, float]], batch: int = 64) -> list[str]:
    """The original evaluator's ranking for one test input: its eval batch (padded to `batch` rows with
    blanks, as its loader pads) through `.to(torch.float64).sigmoid()`, then sorted by [votes, mean]."""
    import torch

    logits = [q for _, q in logits_by_grid]
    q = torch.tensor(logits + [0.0] * (batch - len(logits)), dtype=torch.float32).to(torch.float64).sigmoid()
    p_map: dict[str, list[float]] = {}
    for (grid, _), conf in zip(logits_by_grid, q.numpy()[:len(logits)], strict=True):
        p_map.setdefault(grid, [0, 0])
        p_map[grid][0] += 1
        p_map[grid][1] += float(conf)
    for stats in p_map.values():
        stats[1] /= stats[0]
    return [g for g, _ in sorted(p_map.items(), key=lambda kv: kv[1], reverse=True)]


def _float32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _stdlib_sigmoid(x: float) -> float:
    """The float64 logistic this module used before: differs from torch's kernel by a few ulp."""
    z = math.exp(-abs(x))
    return 1.0 / (1.0 + z) if x >= 0 else z / (1.0 + z)


def test_exact_confidence_ties_rank_by_arrival_as_the_original():
    """Two candidates, two votes each, logits (x, -x) and (y, -y): in the original both means are the
    same double, so the one that arrived first ranks first. Found by search: a pair where a float64
    logistic written by hand breaks the tie (so the test fails with it)."""
    rng = random.Random(0)
    for _ in range(10_000):
        x, y = _float32(rng.uniform(-4, 4)), _float32(rng.uniform(-4, 4))
        votes = [("A", x), ("B", y), ("A", -x), ("B", -y)]
        if _original_ranking(votes) != ["A", "B"]:
            continue
        hand = {g: (_stdlib_sigmoid(a) + _stdlib_sigmoid(-a)) / 2 for g, a in (("A", x), ("B", y))}
        if hand["A"] < hand["B"]:  # the hand-written logistic would rank B first
            break
    else:
        pytest.fail("no tie broken by the hand-written logistic found")
    for order in (votes, [votes[1], votes[0], votes[3], votes[2]]):
        voter = ArcVoter()
        for grid, logit in order:
            voter.add("t", [[0]], [[ord(grid)]], logit)
        ranked = voter.ranked("t", [[0]])
        assert [chr(c.grid[0][0]) for c in ranked] == _original_ranking(order) == [order[0][0], order[1][0]]
        assert ranked[0].votes == ranked[1].votes and ranked[0].mean_confidence == ranked[1].mean_confidence


def test_ranking_matches_the_original_on_random_votes():
    """Many small candidate sets with few distinct logits (ties in votes and in confidence are common)."""
    rng = random.Random(1)
    logits = [_float32(v) for v in (-1.5, -0.5, 0.5, 1.5, 0.25, -0.25)]
    for _ in range(300):
        votes = [(rng.choice("ABCD"), rng.choice(logits)) for _ in range(rng.randint(2, 10))]
        voter = ArcVoter()
        for grid, logit in votes:
            voter.add("t", [[0]], [[ord(grid)]], logit)
        assert [chr(c.grid[0][0]) for c in voter.ranked("t", [[0]])] == _original_ranking(votes)


def test_sigmoid_is_torchs_float64_kernel_bit_for_bit():
    import torch

    rng = random.Random(2)
    xs = [_float32(rng.uniform(-12, 12)) for _ in range(4096)]
    expected = torch.tensor(xs, dtype=torch.float64).sigmoid().tolist()
    assert [sigmoid(x) for x in xs] == expected
