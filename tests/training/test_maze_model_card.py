"""The bundled Maze model's card states numbers that `trm eval` reproduces on regenerated mazes.

The card (trm_core/pretrained/maze.md) carries its measurements in a `<!-- trm-eval ... -->` block,
one JSON object per line: the `trm eval` arguments and the result. The mazes are not committed; they
are regenerated here from the card's seeds with the same commands (`trm build-data maze-gen` then
`trm build-data maze`), which are deterministic. Every line is slow (a few minutes in all on CPU).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.data.cli import main as data_main
from training.evaluate import main as eval_main
from trm_core import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "trm_core" / "pretrained" / "maze.md"
MODEL = REPO / "trm_core" / "pretrained" / "maze.safetensors"
RULE_KEYS = ("valid_path_rate", "shortest_path_rate", "learned_valid_path_rate", "learned_shortest_path_rate")


def _card() -> tuple[dict, list[dict]]:
    """(datasets: name -> maze-gen arguments, eval entries) from the card's machine-readable block."""
    block = re.search(r"<!-- trm-eval\n(.*?)\n-->", CARD.read_text(), re.S)
    assert block, f"{CARD} has no <!-- trm-eval ... --> block"
    lines = [json.loads(line) for line in block.group(1).splitlines() if line.strip()]
    datasets = {d["name"]: d["maze_gen"] for d in lines if "maze_gen" in d}
    return datasets, [e for e in lines if "args" in e]


def _params():
    if not CARD.is_file():  # a missing card is a failure, not a skip: the model is part of the product
        return [pytest.param(None, id="card-missing")]
    return [pytest.param(e, id=f"{i}-{Path(e['args'][1]).parent.name}-n{e['result']['count']}",
                         marks=[pytest.mark.slow]) for i, e in enumerate(_card()[1])]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Each dataset the card names, regenerated with its own maze-gen arguments and built unaugmented."""
    datasets, _ = _card()
    out = {}
    for name, gen_args in datasets.items():
        root = tmp_path_factory.mktemp(Path(name).name)
        assert data_main(["maze-gen", "--out", str(root), *gen_args]) == 0
        assert data_main(["maze", "--train", str(root / "train.csv"), "--test", str(root / "test.csv"),
                          "--out", str(root / "built"), "--no-aug"]) == 0
        out[name] = root / "built"
    return out


def test_bundled_maze_model_is_small_and_self_describing():
    model, meta = load_checkpoint(MODEL)
    assert MODEL.stat().st_size < 5_000_000
    assert meta["task"] == "maze" and meta["train"]["steps"] > 0 and meta["train"]["ema"] is True
    cfg = model.config
    assert (cfg.grid_height, cfg.grid_width, cfg.seq_len, cfg.vocab_size) == (8, 8, 64, 6) and cfg.mlp_t


@pytest.mark.parametrize("entry", _params())
def test_maze_card_numbers_are_reproduced_by_trm_eval(entry, built, capsys):
    assert entry is not None, f"{CARD} is missing"
    args = list(entry["args"])
    args[0] = str(REPO / args[0])  # the model path is relative to the repository root
    data_name = str(Path(args[1]).parent)  # "<dataset>/built"
    args[1] = str(built[data_name])
    assert eval_main(args) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = entry["result"]
    assert got["count"] == want["count"]
    tol = 1.0 / want["count"] + 1e-9  # one maze of float round-off (thread count, batch order), never more
    for key in ("exact_accuracy", "learned_exact_accuracy", *RULE_KEYS):
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])
    assert abs(got["cell_accuracy"] - want["cell_accuracy"]) <= 1e-3
    assert abs(got["mean_halt_step"] - want["mean_halt_step"]) <= 8 * tol


def measure_service(data_dir: Path, views: int, halting: str, limit: int = 0) -> dict:
    """Solve a built split's mazes through the in-process service with the bundled model: the shares
    of answers that are shortest paths / valid paths, and the mean ACT steps summed over views."""
    import asyncio

    import numpy as np

    from service.settings import Settings
    from tests.service.conftest import serve
    from training.data.dataset import load_split
    from trm_core.tasks import maze

    split = load_split(data_dir, "test")
    h, w = split.meta["grid_height"], split.meta["grid_width"]
    puzzles = [maze.decode(row.tolist(), height=h, width=w) for row in split.inputs]
    puzzles = puzzles[:limit] if limit else puzzles
    settings = Settings(models=[f"maze={MODEL}"], device="cpu", torch_threads=1, max_batch=64, warmup_steps=1,
                        request_timeout_s=3600.0)

    async def run() -> list[dict]:
        out: list[dict] = []
        async with serve(settings) as (_, client):
            for i in range(0, len(puzzles), 50):
                r = await client.post("/v1/maze/solve", json={"puzzles": puzzles[i:i + 50], "views": views,
                                                              "halting": halting}, timeout=3600.0)
                assert r.status_code == 200, r.text
                out += r.json()["results"]
        return out

    results = asyncio.run(run())
    for p, res in zip(puzzles, results, strict=True):  # the service's claims, checked independently
        assert res["valid"] == (maze.verify(p, res["solution"]) == [])
        assert res["shortest"] == maze.is_shortest(p, res["solution"])
    return {"count": len(results), "shortest_path_rate": float(np.mean([r["shortest"] for r in results])),
            "valid_path_rate": float(np.mean([r["valid"] for r in results])),
            "mean_row_steps": float(np.mean([r["row_steps"] for r in results])),
            "mean_views_run": float(np.mean([r["views"] for r in results]))}


def _service_params():
    if not CARD.is_file():
        return [pytest.param(None, id="card-missing")]
    block = re.search(r"<!-- trm-eval\n(.*?)\n-->", CARD.read_text(), re.S)
    entries = [json.loads(x) for x in (block.group(1).splitlines() if block else []) if x.strip()]
    return [pytest.param(e, id=f"service-views{e['service']['views']}-{e['service']['halting']}",
                         marks=[pytest.mark.slow]) for e in entries if "service" in e]


@pytest.mark.parametrize("entry", _service_params())
def test_maze_card_service_numbers(entry, built):
    """`pytest tests/training/test_maze_model_card.py -m slow -k service -s` prints and checks them."""
    assert entry is not None, f"{CARD} is missing"
    opts = entry["service"]
    got = measure_service(built[opts["data"]], opts["views"], opts["halting"], opts.get("limit", 0))
    print(json.dumps({"service": opts, "result": got}))  # noqa: T201 - the card's measurement
    want = entry["result"]
    assert got["count"] == want["count"]
    tol = 1.0 / want["count"] + 1e-9
    for key in ("shortest_path_rate", "valid_path_rate"):
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])
    assert abs(got["mean_row_steps"] - want["mean_row_steps"]) <= 8 * tol * opts["views"]
