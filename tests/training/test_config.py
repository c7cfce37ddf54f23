"""Config files and overrides; every paper config builds the paper's exact model and trains on CPU."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import DATA, require_shared
from tests.training.test_eval import tiny_arc  # noqa: F401 - module-scoped fixture (a real ARC build)
from training.config import CONFIG_DIR, ConfigError, load_config, parse_cli
from training.ddp import DistInfo
from training.trainer import Trainer
from trm_core import TRM

PAPER = {"sudoku-mlp": 5_028_866, "sudoku-att": 6_828_034, "maze-att": 6_822_914, "arc1": 6_829_058,
         "arc2": 6_829_058}
TRAIN_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_builds_the_papers_parameter_count(name):
    cfg = load_config(CONFIG_DIR / f"{name}.toml")
    torch.manual_seed(0)
    assert TRM(cfg.model).num_trainable_params() == PAPER[name]
    assert cfg.run.global_batch_size == 768 and cfg.optim.lr == 1e-4 and cfg.optim.ema
    assert cfg.optim.name == "adam_atan2" and cfg.optim.lr_warmup_steps == 2000 and cfg.optim.lr_min_ratio == 1.0


def test_paper_hyperparameters_per_task():
    sudoku = load_config("sudoku-mlp")
    assert (sudoku.optim.weight_decay, sudoku.optim.puzzle_emb_lr, sudoku.optim.puzzle_emb_weight_decay) == (1.0, 1e-4, 1.0)
    assert sudoku.model.mlp_t and sudoku.model.pos_encodings == "none" and sudoku.model.L_cycles == 6
    assert sudoku.run.epochs == 50000
    arc = load_config("arc1")
    assert (arc.optim.weight_decay, arc.optim.puzzle_emb_lr, arc.optim.puzzle_emb_weight_decay) == (0.1, 1e-2, 0.1)
    assert arc.model.L_cycles == 4 and arc.run.epochs == 100000
    assert load_config("maze-att").model.L_cycles == 4


@pytest.mark.parametrize("name", ["sudoku-mlp", "sudoku-att"])
def test_paper_sudoku_config_takes_a_cpu_step_at_full_size(name, tmp_path):
    """The exact paper model (not a shrunk one), one optimizer step with global_batch_size=2."""
    require_shared(TRAIN_CSV, "the Sudoku training CSV")
    cfg = load_config(name, [f"--data.path={TRAIN_CSV}", "--data.train_limit=4", "--run.global_batch_size=2",
                             "--run.max_steps=1", f"--run.dir={tmp_path}", "--run.num_threads=1",
                             "--optim.lr_warmup_steps=1"])  # the first warm-up LR (5e-8) moves nothing in fp32
    trainer = Trainer(cfg, DistInfo())
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train_step()
    assert torch.isfinite(trainer.last_loss)
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)  # every parameter got a gradient and moved


def test_overrides_are_type_checked_and_unknown_keys_listed():
    cfg = load_config("sudoku-demo", ["--optim.lr=3e-4", "run.max_steps=7", "--run.bf16", "false",
                                      "--model.hidden_size=32", "--model.puzzle_emb_ndim=32"])
    assert cfg.optim.lr == 3e-4 and cfg.run.max_steps == 7 and cfg.run.bf16 is False and cfg.model.hidden_size == 32
    with pytest.raises(ConfigError, match=r"optim\.lrate.*valid keys in \[optim\]:.*'lr'"):
        load_config("sudoku-demo", ["--optim.lrate=1"])
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer'"):
        load_config("sudoku-demo", ["--optimizer.lr=1"])
    with pytest.raises(ConfigError, match=r"run\.max_steps='many' is not an integer"):
        load_config("sudoku-demo", ["--run.max_steps=many"])
    with pytest.raises(ConfigError, match=r"optim\.name='sgd' is not one of"):
        load_config("sudoku-demo", ["--optim.name=sgd"])
    with pytest.raises(ConfigError, match=r"hidden_size=100 is not divisible by num_heads=3"):
        load_config("sudoku-demo", ["--model.hidden_size=100", "--model.num_heads=3", "--model.puzzle_emb_ndim=64"])
    with pytest.raises(ConfigError, match=r"not found; bundled configs: .*sudoku-mlp"):
        load_config("no-such-config")


def test_toml_unknown_key_fails(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[run]\nmax_steps = 3\nbatch = 4\n')
    with pytest.raises(ConfigError, match=r"run\.batch.*valid keys in \[run\]"):
        load_config(path)


@pytest.mark.parametrize("toml, message", [
    ("[run]\nmax_steps = 3.0\n", r"^run\.max_steps=3\.0 is not an integer$"),
    ("[run]\nmax_steps = true\n", r"^run\.max_steps=True is a boolean; expected an integer$"),
    ("[run]\nmax_steps = 3\nbf16 = 1\n", r"^run\.bf16=1 is not a boolean; use true or false$"),
    ("[run]\nmax_steps = 3\n[optim]\nlr = true\n", r"^optim\.lr=True is not a number$"),
    ("[run]\nmax_steps = 3\ndir = 5\n", r"^run\.dir=5 is not a string$"),
    ("[run]\nmax_steps = 3\n[model]\nhidden_size = 64.0\n", r"^model\.hidden_size=64\.0 is not an integer$"),
    ("[run]\nmax_steps = 3\nzeta = 1\nbatch = 4\n", r"^unknown key\(s\) \['run\.batch', 'run\.zeta'\]; valid keys"),
    ("[runs]\nx = 1\n[foo]\ny = 2\n", r"^unknown config section\(s\) \['foo', 'runs'\]; valid sections: "),
    ("run = 3\n", r"^\[run\] must be a table of key = value pairs, got 3$"),
    ("[run]\nmax_steps = 3\n[model]\nhidden_size = 0\n", r"^\[model\]: TRMConfig\.hidden_size=0 must be a positive"),
    # the first problem in the order a reader fixes them: section order, then the order written
    ("[run]\nseed = 'x'\nmax_steps = 'y'\n[data]\nholdout = 'z'\n", r"^data\.holdout='z' is not an integer$"),
    ("[run]\nmax_steps = 'y'\nseed = 'x'\n", r"^run\.max_steps='y' is not an integer$"),
])
def test_toml_values_are_strictly_typed(tmp_path, toml, message):
    """TOML has real types, so only strings are parsed (as every CLI value is): 1 is not true, 3.0 no integer."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_cli_strings_are_parsed_like_toml_values():
    cfg = load_config("sudoku-demo", ["--run.max_steps=1_000", "--run.bf16=NO", "--run.compile=1", "--optim.lr=1",
                                      "--data.holdout= 7 ", "--run.progress", "yes"])
    assert (cfg.run.max_steps, cfg.run.bf16, cfg.run.compile, cfg.data.holdout, cfg.run.progress) == (1000, False, True,
                                                                                                      7, True)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    for bad, message in [("--run.bf16=on", r"run\.bf16='on' is not a boolean"),
                         ("--run.max_steps=7.0", r"run\.max_steps='7\.0' is not an integer"),
                         ("--model.pos_encodings=alibi", r"model\.pos_encodings='alibi' is not one of \['rope', 'learned'")]:
        with pytest.raises(ConfigError, match=message):
            load_config("sudoku-demo", [bad])


def test_sections_built_in_python_are_checked_the_same_way():
    from training.config import DataConfig, RunConfig, TrainConfig
    from trm_core import TRMConfig

    with pytest.raises(ConfigError, match=r"^data\.reveal_start='x' is not a number$"):
        DataConfig(reveal_start="x")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['run\.batch'\]"):
        RunConfig(batch=4)
    with pytest.raises(ConfigError, match="no training budget"):
        TrainConfig()
    model = TRMConfig(hidden_size=64, num_heads=2, puzzle_emb_ndim=64)
    cfg = TrainConfig(model=model, run=RunConfig(max_steps=1))
    assert cfg.model is model  # a TRMConfig validated itself; it is kept, not rebuilt
    cfg.run.resume = False  # sections stay plain mutable records (tests and the trainer set fields)
    assert cfg.to_dict()["run"]["resume"] is False and cfg.to_dict()["model"] == model.to_dict()


def test_model_section_keys_are_trmconfigs_fields():
    import dataclasses

    from training.config import config_help
    from trm_core import TRMConfig

    names = [f.name for f in dataclasses.fields(TRMConfig)]
    with pytest.raises(ConfigError, match=r"valid keys in \[model\]: " + re.escape(str(sorted(names)))):
        load_config("sudoku-demo", ["--model.width=3"])
    assert [line.split("=")[0].strip() for line in config_help().splitlines() if "--model." in line] == \
        [f"--model.{n}" for n in names]
    assert "--model.pos_encodings='rope'  (Literal['rope', 'learned', 'none'])" in config_help()


def test_config_round_trips_through_json():
    cfg = load_config("arc1")
    from training.config import TrainConfig

    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_parse_cli_finds_the_config_among_overrides():
    assert parse_cli(["sudoku-mlp", "--optim.lr=1e-3"]) == ("sudoku-mlp", ["--optim.lr=1e-3"])
    assert parse_cli(["--run.seed", "3", "arc1"]) == ("arc1", ["--run.seed", "3"])
    assert parse_cli(["run.seed=3"]) == (None, ["run.seed=3"])


@pytest.fixture(scope="module")
def tiny_maze(tmp_path_factory):
    """A real Maze-Hard-style build: 2 generated 30x30 mazes (shortest path > 110), tasks helper's builder."""
    from training.data.build_maze import MazeBuildConfig, build_maze

    root = tmp_path_factory.mktemp("maze")
    build_maze(MazeBuildConfig(out=root, generate=True, num_train=2, num_test=2, seed=1))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maze-att", "arc1", "arc2"])
def test_paper_grid_config_takes_a_cpu_step_at_full_size(name, tmp_path, request):
    """916-position configs at full size: ~20-60 s per step on one core, hence slow."""
    if name == "maze-att":
        root = request.getfixturevalue("tiny_maze")
    else:
        root, _ = request.getfixturevalue("tiny_arc")
    cfg = load_config(name, [f"--data.path={root}", "--run.global_batch_size=2", "--run.max_steps=1",
                             f"--run.dir={tmp_path}", "--run.num_threads=1", "--optim.lr_warmup_steps=1"])
    trainer = Trainer(cfg, DistInfo())
    assert trainer.model.num_trainable_params() == PAPER[name]
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train_step()
    assert torch.isfinite(trainer.last_loss)
    unchanged = [k for k, v in trainer.model.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == []
