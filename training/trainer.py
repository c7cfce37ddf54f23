"""The training loop: deep supervision with a persistent ACT carry, EMA, checkpoints, evaluation.

NOTE: one optimizer step per ACT step. The slot pool (global_batch_size rows, split over ranks)
persists across steps; after each step a row halts when its Q-head says "solved" (q_halt > 0) or it
reached halt_max_steps, except that with probability halt_exploration_prob a row must first reach a
random minimum U{2..halt_max_steps} (docs/MODEL_SPEC.md, "halting"). Halted rows are refilled from the data stream
before the next step; the others keep their puzzle and state. The loss is summed over all rows and
divided by the global batch size; DDP sums gradients across ranks (training/ddp.py).

Built in a fixed order (torchtitan): device/ranks, seeds, data, model, compile, DDP wrap, optimizers,
EMA, stream, resume. `Trainer.train()` is one while loop with commented stages.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from tqdm import tqdm

from trm_core import TRM
from trm_core.checkpoint import load_state_dict_strict, read_metadata
from trm_core.halting import halt_mask
from trm_core.loss import IGNORE_LABEL, act_loss

from .config import ConfigError, TrainConfig
from .ddp import DistInfo, seed_for_rank, unwrap, wrap
from .ema import EMA
from .evaluate import arc_pass_at_k, evaluate_model, is_arc_build
from .examples import Examples, load_examples
from .metrics_log import MetricsLog
from .optim import AdamATan2, SparseSignSGD, lr_at
from .run_state import has_checkpoint as _has_checkpoint
from .run_state import load_optimizer_tensors, load_tensors, optimizer_tensors, read_state, write_checkpoint
from .stream import SlotStream, reveal_fraction
from .task_hooks import augment_for

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

_TRAIN_SUMS = ("count", "cell", "exact", "q_halt_correct", "halt_step", "lm_loss", "q_halt_loss")


class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo, *, train_data: Examples | None = None,
                 eval_data: Examples | None = None, model: TRM | None = None) -> None:
        """Build every component from `cfg`; tests may pass data and a model (e.g. an imported original)."""
        self.info = info
        run = cfg.run
        W = info.world_size
        if run.global_batch_size % W:
            raise ConfigError(f"run.global_batch_size={run.global_batch_size} is not divisible by the "
                              f"{W} ranks; use a multiple of {W}")
        self.local_batch = run.global_batch_size // W
        self.run_dir = Path(run.dir)
        self.device = info.device
        # 1. seeds: model init identical on every rank; anything rank-local uses a per-rank seed after
        torch.manual_seed(run.seed)
        if self.device.type == "cpu" and run.num_threads:
            torch.set_num_threads(run.num_threads)

        # 2. data
        if train_data is None:
            train_data, eval_data = self._load_data(cfg)
        self.train_data, self.eval_data = train_data, eval_data
        if model is not None:
            cfg = TrainConfig(model=model.config, data=cfg.data, optim=cfg.optim, run=cfg.run)
        cfg = self._fit_model_to_data(cfg, self.train_data)
        self.cfg = cfg

        # 3. model (same init on every rank: seeded above, before any rank-dependent randomness)
        self.model = (model if model is not None else TRM(cfg.model)).to(self.device)
        if run.init_from and not _has_checkpoint(self.run_dir):
            self._init_from(run.init_from)
        self.model.train()
        torch.manual_seed(seed_for_rank(run.seed, info.rank))
        # 4. compile (CUDA only: compile on CPU costs minutes for little gain here)
        self.step_module: torch.nn.Module = wrap(self.model, info)  # 5. DDP wrap (StepModule for W=1)
        self.use_cuda = self.device.type == "cuda"
        if run.compile and self.use_cuda:
            self.step_module = torch.compile(self.step_module)  # type: ignore[assignment]
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if run.bf16 and self.use_cuda
                         else nullcontext())

        # 6. optimizers: dense (all Parameters) + sparse sign-SGD (the puzzle table, a buffer)
        o = cfg.optim
        if o.name == "adam_atan2":
            self.optimizer: torch.optim.Optimizer = AdamATan2(self.model.parameters(), lr=o.lr,
                                                              betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2),
                                               weight_decay=o.weight_decay, eps=o.adamw_eps)
        self.sparse = (SparseSignSGD(self.model.puzzle_emb, o.puzzle_emb_lr, o.puzzle_emb_weight_decay)
                       if self.model.puzzle_emb is not None else None)
        # 7. EMA
        self.ema = EMA(self.model, o.ema_rate, warmup=o.ema_warmup) if o.ema else None

        # 8. the slot pool and its data stream
        slots = range(info.rank * self.local_batch, (info.rank + 1) * self.local_batch)
        self.stream = SlotStream(self.train_data, run.global_batch_size, slots, run.seed,
                                 augment=augment_for(cfg.model.task) if cfg.data.augment else None,
                                 reveal_uniform=cfg.data.reveal_uniform)
        self.carry = self.model.empty_carry(self.local_batch)
        self.labels = torch.full((self.local_batch, cfg.model.seq_len), IGNORE_LABEL, dtype=torch.long,
                                 device=self.device)
        self.halted = torch.ones(self.local_batch, dtype=torch.bool, device=self.device)
        self.step = 0
        self.last_loss = torch.zeros((), device=self.device)  # the last step's summed loss (not divided)
        self.wall_s = 0.0  # training wall time summed over sessions (resumes)
        self.total_steps = self._total_steps()
        self.metrics = MetricsLog(self.run_dir, enabled=info.is_main, tensorboard=run.tensorboard)
        # 9. resume
        if _has_checkpoint(self.run_dir):
            if not cfg.run.resume:
                raise ConfigError(f"{self.run_dir} already holds a checkpoint and run.resume=false; use a new "
                                  "run.dir, delete the old one, or drop --run.resume=false to continue it")
            self.load()
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
            log.info("config: %s", cfg.to_json())
            log.info("device %s, world size %d, local batch %d, %s trainable params, puzzle table %s floats, "
                     "%d training examples, total steps %d", self.device, W, self.local_batch,
                     f"{self.model.num_trainable_params():,}", f"{self.model.num_puzzle_table_params():,}",
                     self.train_data.num_examples, self.total_steps)

    # ---- construction helpers ---------------------------------------------------------------
    def _load_data(self, cfg: TrainConfig) -> tuple[Examples, Examples | None]:
        d = cfg.data
        if not d.path:
            raise ConfigError("data.path is empty; point it at a built dataset dir or a raw Sudoku CSV, "
                              "e.g. --data.path=../shared/data/sudoku/forum_hardest_1905_11plus_train_1k.csv")
        train = load_examples(d.path, "train", d.train_limit)
        held: Examples | None = None
        if d.holdout:
            train, held = train.split_tail(d.holdout)
        if d.eval_path:
            held = load_examples(d.eval_path, "test", d.eval_limit)
        elif held is None and Path(d.path).is_dir() and (Path(d.path) / "test").is_dir():
            held = load_examples(d.path, "test", d.eval_limit)
        elif held is not None and d.eval_limit:
            held = held.head(d.eval_limit)
        return train, held

    def _fit_model_to_data(self, cfg: TrainConfig, data: Examples) -> TrainConfig:
        m = cfg.model
        if data.seq_len != m.seq_len:
            raise ConfigError(f"data {cfg.data.path} has seq_len {data.seq_len}, model.seq_len={m.seq_len}; "
                              f"set --model.seq_len={data.seq_len}")
        vocab = int(data.meta.get("vocab_size", m.vocab_size))
        if vocab != m.vocab_size:
            raise ConfigError(f"data vocab_size {vocab} != model.vocab_size={m.vocab_size}; "
                              f"set --model.vocab_size={vocab}")
        num_ids = int(data.meta.get("num_puzzle_identifiers", m.num_puzzle_identifiers))
        if num_ids != m.num_puzzle_identifiers:
            log.info("model.num_puzzle_identifiers %d -> %d (from the dataset)", m.num_puzzle_identifiers, num_ids)
            cfg = TrainConfig(model=m.replace(num_puzzle_identifiers=num_ids), data=cfg.data, optim=cfg.optim,
                              run=cfg.run)
        return cfg

    def _init_from(self, path: str) -> None:
        """Start from trained weights: a longer campaign continues a bundled model instead of redoing it.

        The recursion counts (halt_max_steps, H_cycles, L_cycles) may differ: the weights do not depend on
        them, so a model can be trained on to recurse deeper.
        """
        meta = read_metadata(path)
        free = dict.fromkeys(("halt_max_steps", "H_cycles", "L_cycles"), 0)
        theirs, ours = meta["config"].to_dict(), self.cfg.model.to_dict()
        if {**theirs, **free} != {**ours, **free}:
            raise ConfigError(f"run.init_from={path}: its model config {theirs} differs from [model] {ours} "
                              "(only the recursion counts halt_max_steps, H_cycles, L_cycles may differ)")
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        load_state_dict_strict(self.model, {k: v.to(self.device) for k, v in tensors.items()}, source=path)
        log.info("initialised the model from %s", path)

    def _total_steps(self) -> int:
        r = self.cfg.run
        if r.max_steps > 0:
            return r.max_steps
        if r.epochs > 0:
            d = self.train_data
            return int(r.epochs * d.num_groups * d.mean_puzzle_examples() / r.global_batch_size)
        return 10**12  # wall-time budget only; LR is constant after warm-up unless lr_min_ratio < 1

    # ---- one ACT step -----------------------------------------------------------------------
    def train_step(self) -> tuple[torch.Tensor, float]:
        """One ACT step: refill, forward/backward, halting, optimizer step, EMA -> (device sums, lr)."""
        sums = self.forward_backward()
        return sums, self.optimizer_step()

    def forward_backward(self) -> torch.Tensor:
        """Refill halted slots, run one step, backprop loss / global batch, decide halting.

        Returns the step's metric sums over the rows that halted (on device, no sync).
        """
        cfg, run = self.cfg, self.cfg.run
        max_steps = cfg.model.halt_max_steps
        self.step += 1
        # refill halted slots. The mask goes to the host to pick examples: one tiny sync per step on CUDA.
        rows = self.halted.cpu().numpy()
        if rows.any():
            reveal = reveal_fraction(self.step, cfg.data.reveal_start, cfg.data.reveal_end, cfg.data.curriculum_steps)
            inputs, labels, pids = self.stream.draw(rows, reveal)
            self.carry = self.model.reset_rows(self.carry, self.halted, torch.as_tensor(inputs, device=self.device),
                                               torch.as_tensor(pids, device=self.device))
            self.labels = torch.where(self.halted[:, None], torch.as_tensor(labels, device=self.device), self.labels)

        # forward one ACT step + loss (summed over rows) / global batch, backward
        with self.autocast:
            self.carry, out = self.step_module(self.carry)
            loss, parts = act_loss(out, self.labels)
        (loss / run.global_batch_size).backward()

        # halting: q_halt > 0 or the cap; exploration forces a random minimum on some rows. The random
        # numbers are drawn for the whole global pool from a per-step seed and sliced, so W ranks draw
        # what one process draws, and a resumed run draws what the uninterrupted one did.
        with torch.no_grad():
            steps = self.carry.steps
            min_halt = None
            if max_steps > 1:
                gen = torch.Generator().manual_seed(run.seed * 1_000_003 + self.step)
                explore = torch.rand(run.global_batch_size, generator=gen) < run.halt_exploration_prob
                min_steps = torch.randint(2, max_steps + 1, (run.global_batch_size,), generator=gen)
                lo = self.info.rank * self.local_batch
                min_halt = (explore * min_steps)[lo:lo + self.local_batch].to(self.device)
            self.halted = halt_mask(out.q_halt_logits, steps, max_steps, mode="learned", min_steps=min_halt)
            self.last_loss = loss.detach()

        # metrics on the rows that halted now (as the original), kept on device until the log interval
        with torch.no_grad():
            h = self.halted
            return torch.stack([
                h.sum(), (parts["cell_correct"] * h).sum(), (parts["is_correct"] & h).sum(),
                (((out.q_halt_logits >= 0) == parts["is_correct"]) & h).sum(), (steps * h).sum(),
                parts["lm_loss"].detach(), parts["q_halt_loss"].detach(),
            ]).to(torch.float64)

    def optimizer_step(self) -> float:
        """Clip, set the scheduled LR, step the dense and sparse optimizers, update the EMA; returns the LR."""
        cfg = self.cfg
        lr_scale = lr_at(self.step, 1.0, cfg.optim.lr_warmup_steps, self.total_steps, cfg.optim.lr_min_ratio)
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.optim.lr * lr_scale
        self.optimizer.step()
        if self.sparse is not None:
            self.sparse.lr = cfg.optim.puzzle_emb_lr * lr_scale
            self.sparse.step()
            self.sparse.zero_grad()
        self.optimizer.zero_grad(set_to_none=True)  # free grads as soon as we can
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return cfg.optim.lr * lr_scale

    # ---- the loop ---------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        run = self.cfg.run
        start_step = self.step
        bar = tqdm(total=self.total_steps if self.total_steps < 10**12 else None, initial=self.step,
                   desc="train", disable=not (run.progress and self.info.is_main), dynamic_ncols=True)
        acc = torch.zeros(len(_TRAIN_SUMS), dtype=torch.float64, device=self.device)
        t_session, t_log, steps_log = time.perf_counter(), time.perf_counter(), 0
        wall0 = self.wall_s
        last_eval: dict[str, Any] = {}
        while True:
            # stop conditions: step budget or wall-time budget
            elapsed = wall0 + time.perf_counter() - t_session
            if self.step >= self.total_steps or (run.max_minutes and elapsed >= run.max_minutes * 60):
                break
            # forward/backward/step for one ACT step
            sums, lr = self.train_step()
            acc += sums
            steps_log += 1
            bar.update(1)
            # log: the only host syncs of the loop (besides the halted mask) happen here
            if self.step % run.log_interval == 0:
                self.wall_s = wall0 + time.perf_counter() - t_session
                if self.info.is_distributed:
                    dist.all_reduce(acc)
                s = dict(zip(_TRAIN_SUMS, acc.tolist(), strict=True))
                n = max(1.0, s["count"])
                dt = time.perf_counter() - t_log
                rec = {"step": self.step, "lr": lr, "wall_s": round(self.wall_s, 1),
                       "lm_loss": s["lm_loss"] / (steps_log * run.global_batch_size),
                       "q_halt_loss": s["q_halt_loss"] / (steps_log * run.global_batch_size),
                       "accuracy": s["cell"] / n, "exact_accuracy": s["exact"] / n,
                       "q_halt_accuracy": s["q_halt_correct"] / n, "steps": s["halt_step"] / n,
                       "halted_rows": int(s["count"]), "act_steps_per_s": steps_log / dt,
                       "examples_per_s": s["count"] / dt, "epoch": round(self.stream.epochs_done(), 3),
                       "reveal": reveal_fraction(self.step, self.cfg.data.reveal_start, self.cfg.data.reveal_end,
                                                 self.cfg.data.curriculum_steps)}
                if self.use_cuda:
                    rec["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
                self.metrics.write("train", rec)
                bar.set_postfix(loss=f"{rec['lm_loss']:.3f}", acc=f"{rec['accuracy']:.3f}",
                                exact=f"{rec['exact_accuracy']:.3f}", steps=f"{rec['steps']:.1f}")
                acc.zero_()
                t_log, steps_log = time.perf_counter(), 0
            # eval / checkpoint
            if run.eval_interval and self.step % run.eval_interval == 0:
                last_eval = self.evaluate()
            if run.checkpoint_interval and self.step % run.checkpoint_interval == 0:
                self.wall_s = wall0 + time.perf_counter() - t_session
                self.save()
        bar.close()
        self.wall_s = wall0 + time.perf_counter() - t_session
        if self.step > start_step or not _has_checkpoint(self.run_dir):
            self.save()
        if self.eval_data is not None and (not run.eval_interval or self.step % run.eval_interval):
            last_eval = self.evaluate()
        return {"step": self.step, "wall_s": self.wall_s, "eval": last_eval}

    def evaluate(self) -> dict[str, Any]:
        """Metrics of the EMA weights (live weights without EMA) on the eval data."""
        if self.eval_data is None:
            return {}
        d = self.cfg.data
        reveal = d.eval_reveal if d.eval_reveal >= 0 else reveal_fraction(
            self.step, d.reveal_start, d.reveal_end, d.curriculum_steps)
        ctx = self.ema.swapped_in(self.model) if self.ema is not None else nullcontext()
        arc_root = self.cfg.data.eval_path or self.cfg.data.path
        arc = self.cfg.model.task == "arc" and is_arc_build(arc_root)
        with ctx:
            res = evaluate_model(self.model, self.eval_data, batch_size=max(1, self.local_batch), reveal=reveal,
                                 rank=self.info.rank, world_size=self.info.world_size, predictions=arc)
        if arc:
            res.update(arc_pass_at_k(res, self.eval_data, arc_root, world_size=self.info.world_size))
            for key in ("preds", "q_halt", "index"):
                res.pop(key)
        res.update(step=self.step, reveal=reveal)
        self.metrics.write("eval", res)
        if self.info.is_main:
            log.info("eval step %d: %s", self.step, json.dumps(res, sort_keys=True))
        return res

    # ---- checkpoints ------------------------------------------------------------------------
    def _rank_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"carry.{name}": v for name, v in self.carry.tensors().items() if name != "input_embeddings"}
        t.update({"labels": self.labels, "halted": self.halted.to(torch.uint8),
                  "stream.draws": torch.as_tensor(self.stream.state()), "rng.cpu": torch.get_rng_state()})
        if self.use_cuda:
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return t

    def save(self) -> None:
        model = unwrap(self.model)
        files: dict[str, dict[str, torch.Tensor]] = {f"rank{self.info.rank}": self._rank_tensors()}
        if self.info.is_main:
            files["model"] = dict(model.state_dict())
            files["optim"] = optimizer_tensors(self.optimizer, model)
            if self.ema is not None:
                files["ema"] = self.ema.state_dict()
        state = {"step": self.step, "wall_s": self.wall_s, "global_batch_size": self.cfg.run.global_batch_size,
                 "config": self.cfg.to_dict(), "total_steps": self.total_steps,
                 "trainable_params": model.num_trainable_params()}
        barrier = dist.barrier if self.info.is_distributed else None
        write_checkpoint(self.run_dir, files, state, self.info.rank, self.info.world_size, barrier)
        if self.info.is_main:
            log.info("checkpoint at step %d -> %s", self.step, self.run_dir / "checkpoint")

    def load(self) -> None:
        state = read_state(self.run_dir)
        if state["world_size"] != self.info.world_size or state["global_batch_size"] != self.cfg.run.global_batch_size:
            raise ConfigError(f"{self.run_dir} was trained with {state['world_size']} ranks and global batch "
                              f"{state['global_batch_size']}; resume with the same (or use a new run.dir)")
        ckpt = self.run_dir / "checkpoint"
        model = unwrap(self.model)
        missing, unexpected = model.load_state_dict(load_tensors(ckpt / "model.safetensors", self.device), strict=False)
        if missing or unexpected:
            raise ConfigError(f"checkpoint {ckpt} does not fit the model: missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}")
        load_optimizer_tensors(self.optimizer, model, load_tensors(ckpt / "optim.safetensors", self.device))
        if self.ema is not None:
            self.ema.load_state_dict(load_tensors(ckpt / "ema.safetensors", self.device))
        r = load_tensors(ckpt / f"rank{self.info.rank}.safetensors", self.device)
        self.carry = type(self.carry)(z_H=r["carry.z_H"], z_L=r["carry.z_L"], steps=r["carry.steps"],
                                      inputs=r["carry.inputs"], puzzle_ids=r["carry.puzzle_ids"])
        self.labels = r["labels"]
        self.halted = r["halted"].bool()
        self.stream.load_state(r["stream.draws"].cpu().numpy().astype(np.int64))
        torch.set_rng_state(r["rng.cpu"].cpu())
        if self.use_cuda and "rng.cuda" in r:
            torch.cuda.set_rng_state(r["rng.cuda"].cpu(), self.device)
        self.step = int(state["step"])
        self.wall_s = float(state["wall_s"])
        log.info("resumed %s at step %d (%.1f min trained)", ckpt, self.step, self.wall_s / 60)

    def close(self) -> None:
        self.metrics.close()

