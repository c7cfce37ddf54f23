"""Checkpoint round trip (bit-exact), each bad-file case with its one-line error, original import + CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trm_core import CheckpointFormatError, import_original, load_checkpoint, save_checkpoint
from trm_core.cli import main as trm_main

from ..conftest import FIXTURES, tiny_model


def _step_all(model, n=2):
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(1, model.config.vocab_size, (2, model.config.seq_len), generator=g)
    carry = model.reset_rows(model.empty_carry(2), torch.ones(2, dtype=torch.bool), inputs, torch.tensor([0, 1]))
    for _ in range(n):
        carry, out = model.step(carry)
    return out


@pytest.mark.parametrize("overrides", [{}, {"mlp_t": True, "pos_encodings": "none"}, {"pos_encodings": "learned"}])
def test_round_trip_is_bit_exact(tmp_path, overrides):
    model = tiny_model(**overrides)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"train": {"steps": 12, "exact_accuracy": 0.5}, "note": [1, 2]})
    loaded, meta = load_checkpoint(path)
    assert meta["format"] == "trm-serve/1" and meta["config"] == model.config
    assert meta["train"] == {"steps": 12, "exact_accuracy": 0.5} and meta["note"] == [1, 2]
    assert meta["task"] == "sudoku"
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(_step_all(model).logits, _step_all(loaded).logits)


def test_bfloat16_weights_load(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    tensors = {k: v.bfloat16() for k, v in load_file(str(path)).items()}
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(tensors, str(tmp_path / "bf16.safetensors"), metadata=meta)
    loaded, _ = load_checkpoint(tmp_path / "bf16.safetensors")
    assert loaded.lm_head.weight.dtype == torch.float32


def _rewrite(path, out, tensors=None, meta=None):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        old_meta = f.metadata()
    save_file(tensors if tensors is not None else load_file(str(path)), str(out),
              metadata=old_meta if meta is None else meta)
    return out


def test_bad_files_give_one_line_errors(tmp_path):
    model = tiny_model()
    good = tmp_path / "good.safetensors"
    save_checkpoint(model, good)
    tensors = load_file(str(good))

    cases = {}
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        load_checkpoint(tmp_path / "nope.safetensors")
    cases["missing"] = e
    (tmp_path / "junk.safetensors").write_bytes(b"this is not a tensor file at all")
    with pytest.raises(CheckpointFormatError, match="is not a safetensors file") as e:
        load_checkpoint(tmp_path / "junk.safetensors")
    cases["junk"] = e
    from safetensors import safe_open
    with safe_open(str(good), "pt") as f:
        meta = dict(f.metadata())
    with pytest.raises(CheckpointFormatError, match="is format 'trm-serve/9'; this build reads trm-serve/1") as e:
        load_checkpoint(_rewrite(good, tmp_path / "v9.safetensors", meta={**meta, "format": "trm-serve/9"}))
    cases["format"] = e
    missing = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    with pytest.raises(CheckpointFormatError, match=r"missing: lm_head\.weight") as e:
        load_checkpoint(_rewrite(good, tmp_path / "miss.safetensors", tensors=missing))
    cases["missing_tensor"] = e
    with pytest.raises(CheckpointFormatError, match=r"unexpected: extra\.weight") as e:
        load_checkpoint(_rewrite(good, tmp_path / "extra.safetensors", tensors={**tensors, "extra.weight": torch.ones(2)}))
    cases["unexpected"] = e
    bad = {**tensors, "lm_head.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointFormatError, match=r"wrong shape: lm_head\.weight \(3, 3\) \(expected \(11, 32\)\)") as e:
        load_checkpoint(_rewrite(good, tmp_path / "shape.safetensors", tensors=bad))
    cases["shape"] = e
    with pytest.raises(CheckpointFormatError, match="not a valid TRMConfig") as e:
        load_checkpoint(_rewrite(good, tmp_path / "cfg.safetensors", meta={**meta, "config": '{"hidden": 1}'}))
    cases["config"] = e
    for name, exc in cases.items():
        assert "\n" not in str(exc.value), name


def assert_golden_first_step(path, name):
    """Load a converted checkpoint and check its first step against the original's logits."""
    model, meta = load_checkpoint(path)
    golden = load_file(str(FIXTURES / f"{name}.golden.safetensors"))
    b = golden["inputs"].shape[0]
    carry = model.reset_rows(model.empty_carry(b), torch.ones(b, dtype=torch.bool), golden["inputs"],
                             golden["puzzle_identifiers"])
    _, out = model.step(carry)
    torch.testing.assert_close(out.logits, golden["eval.step1.logits"], atol=1e-4, rtol=0)
    return model, meta


def _fixture_args(name):
    return [str(FIXTURES / f"{name}.checkpoint.pt"), "--config", str(FIXTURES / f"{name}.all_config.yaml"),
            "--dataset-json", str(FIXTURES / f"{name}.dataset.json")]


@pytest.mark.parametrize("name", ["sudoku_mlp_t", "arc_att_rope", "maze_att_learned_noprefix"])
def test_convert_original_cli_matches_import(tmp_path, name, shared):
    out = tmp_path / f"{name}.safetensors"
    assert trm_main(["convert-original", *_fixture_args(name), "-o", str(out)]) == 0
    _, meta = assert_golden_first_step(out, name)
    assert meta["train"]["source"].startswith("original")


def test_convert_original_overrides_after_options(tmp_path, shared):
    out = tmp_path / "maze.safetensors"
    args = _fixture_args("maze_att_learned_noprefix")
    assert trm_main(["convert-original", *args, "-o", str(out), "task=maze", "grid_height=7", "grid_width=7"]) == 0
    loaded, meta = load_checkpoint(out)
    assert (loaded.config.task, loaded.config.grid_height, meta["task"]) == ("maze", 7, "maze")
    with pytest.raises(SystemExit):
        trm_main(["convert-original", *args, "-o", str(out), "--bogus"])


def test_import_original_infers_shapes_and_refuses_contradictions(shared):
    state = torch.load(FIXTURES / "arc_att_rope.checkpoint.pt", weights_only=True)
    base = {"num_heads": 4, "H_cycles": 2, "L_cycles": 3, "halt_max_steps": 3, "seq_len": 64,
            "pos_encodings": "rope"}
    model = import_original(state, base)  # hidden size, vocab, table size, layers: from the tensors
    assert (model.config.hidden_size, model.config.vocab_size, model.config.num_puzzle_identifiers) == (64, 12, 6)
    with pytest.raises(CheckpointFormatError, match="config says hidden_size=512 but the checkpoint's tensors imply 64"):
        import_original(state, {**base, "hidden_size": 512})
    with pytest.raises(CheckpointFormatError, match=r"cannot determine \['seq_len'\]"):
        import_original(state, {k: v for k, v in base.items() if k != "seq_len"})
    bf16 = {k: v.bfloat16() if k.endswith(("H_init", "L_init")) else v for k, v in state.items()}
    assert import_original(bf16, base).H_init.dtype == torch.float32
    with pytest.raises(CheckpointFormatError, match="unknown keys"):
        import_original({**state, "_orig_mod.model.inner.mystery": torch.ones(1)}, base)


def test_convert_original_bad_config_is_one_line(tmp_path, capsys, shared):
    bad_yaml = tmp_path / "all_config.yaml"
    bad_yaml.write_text("lr: 0.1\n")
    rc = trm_main(["convert-original", str(FIXTURES / "arc_att_rope.checkpoint.pt"), "--config", str(bad_yaml),
                   "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "has no `arch:` section" in err and err.count("\n") == 1


def test_info_prints_paper_counts(capsys):
    assert trm_main(["info", "--preset", "sudoku-mlp"]) == 0
    assert "5,028,866" in capsys.readouterr().out
    assert trm_main(["info", "--preset", "arc-att", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trainable_params"] == 6_829_058 and report["puzzle_table_params"] == 512


def test_info_on_a_file(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    model = tiny_model()
    save_checkpoint(model, path)
    assert trm_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"trainable parameters: {model.num_trainable_params():,}" in out
    assert "puzzle table: 96 floats (3 rows" in out and f"file size: {path.stat().st_size:,} bytes" in out


# ---- the serving recipe (metadata `recipe`) ----------------------------------------------------------

def test_recipe_round_trips_and_absent_means_none(tmp_path):
    from trm_core.checkpoint import Recipe, read_metadata

    model = tiny_model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"recipe": {"views": 128, "max_steps": 16, "halting": "verified"}})
    _, meta = load_checkpoint(path)
    assert meta["recipe"] == Recipe(views=128, max_steps=16, halting="verified")
    assert meta["recipe"].describe() == "128 views, 16 steps, verified halting"
    again = tmp_path / "again.safetensors"
    save_checkpoint(model, again, metadata=meta)  # metadata read back (a Recipe) saves as it was read
    assert read_metadata(again)["recipe"] == meta["recipe"]
    save_checkpoint(model, tmp_path / "plain.safetensors")
    assert "recipe" not in read_metadata(tmp_path / "plain.safetensors")


@pytest.mark.parametrize(("recipe", "named"), [
    ({"views": "128", "max_steps": 16, "halting": "verified"}, "recipe.views"),
    ({"views": 8, "max_steps": 0, "halting": "verified"}, "recipe.max_steps"),
    ({"views": True, "max_steps": 16, "halting": "verified"}, "recipe.views"),
    ({"views": 8, "max_steps": 16, "halting": "sometimes"}, "recipe.halting"),
    ({"views": 8, "max_steps": 16}, "missing halting"),
    ({"views": 8, "max_steps": 16, "halting": "fixed", "seed": 3}, "unknown seed"),
    ([8, 16, "verified"], "recipe must be an object"),
])
def test_a_bad_recipe_in_a_file_is_refused_naming_the_field(tmp_path, recipe, named):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_model(), path)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    meta["recipe"] = json.dumps(recipe)
    bad = _rewrite(path, tmp_path / "bad.safetensors", meta=meta)
    with pytest.raises(CheckpointFormatError, match=named) as err:
        load_checkpoint(bad)
    assert "bad.safetensors" in str(err.value) and "--recipe" in str(err.value)
    with pytest.raises(ValueError, match=named):  # and save_checkpoint refuses to write it
        save_checkpoint(tiny_model(), tmp_path / "never.safetensors", metadata={"recipe": recipe})
    assert not (tmp_path / "never.safetensors").exists()


def test_arc_recipe_cannot_ask_for_verified_halting_or_views(tmp_path):
    model = tiny_model(task="arc", seq_len=900, vocab_size=12, grid_height=30, grid_width=30)
    with pytest.raises(ValueError, match="recipe.halting: verified needs a rule check"):
        save_checkpoint(model, tmp_path / "a.safetensors", metadata={
            "recipe": {"views": 1, "max_steps": 16, "halting": "verified"}})
    with pytest.raises(ValueError, match="recipe.views"):
        save_checkpoint(model, tmp_path / "a.safetensors", metadata={
            "recipe": {"views": 8, "max_steps": 16, "halting": "learned"}})


def test_rewrite_metadata_sets_and_removes_the_recipe_keeping_the_weights(tmp_path):
    from trm_core.checkpoint import Recipe, read_metadata, rewrite_metadata

    model = tiny_model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"train": {"steps": 7}})
    before = load_file(str(path))
    meta = rewrite_metadata(path, path, {"recipe": {"views": 4, "max_steps": 8, "halting": "fixed"}})
    assert meta["recipe"] == Recipe(4, 8, "fixed") and meta["train"] == {"steps": 7}
    after = load_file(str(path))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not list(tmp_path.glob("*.tmp"))
    rewrite_metadata(path, path, {"recipe": None})
    assert "recipe" not in read_metadata(path)
    with pytest.raises(ValueError, match="recipe.views"):
        rewrite_metadata(path, path, {"recipe": {"views": 0, "max_steps": 8, "halting": "fixed"}})
    with pytest.raises(ValueError, match="'config' describes the weights"):
        rewrite_metadata(path, path, {"config": "{}"})
    assert "recipe" not in read_metadata(path)  # a refused rewrite leaves the file as it was
