"""The served models: load each checkpoint once, warm it up, one engine + loop thread per model.

Models are chosen per request by name (`TRM_MODELS` entry "name=path", or the file stem); the
first model listed for a task is its default. A checkpoint that cannot be served (missing file,
wrong format, a task without a codec, a config the codec cannot fill, a bad ARC table) stops
start-up with one `RegistryError` line that names the model, the file and the problem.

`load_model` (checkpoint -> checked `LoadedModel`) and `build_engine` are the one way to make a
model runnable; `trm solve` (service/tasks/offline.py) uses them too, and steps the engine itself
instead of starting a loop thread.

Not here: HTTP, codecs, asyncio. `ModelRegistry.load()` blocks (the CLI calls it before uvicorn
starts; the app lifespan calls it in a thread when the CLI did not).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.engine.core import Engine
from service.engine.device import warn_cpu_fallback
from service.engine.loop import EngineLoop
from service.engine.scheduler import Scheduler, SchedulerStats, StepReport
from service.settings import Settings
from trm_core import TRM, CheckpointFormatError, TRMConfig, load_checkpoint
from trm_core.checkpoint import Recipe, file_sha256
from trm_core.tasks import TASK_NAMES, check_model_shape, grid_shape
from trm_core.tasks.augment import ArcAug, parse_version_name

logger = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """A configured model cannot be served; the message says which and why."""


class ReloadConflict(RuntimeError):
    """A reloaded checkpoint does not fit the running model's shapes (HTTP 409); the old one keeps serving."""


class ReloadFailed(RegistryError):
    """A reload found a checkpoint that cannot be served, or could not swap it in (HTTP 422); the old
    weights keep serving."""


class UnknownModelError(LookupError):
    """No model of that name serves the task (HTTP 404)."""

    def __init__(self, task: str | None, name: str | None, available: list[str]) -> None:
        # task None: a model looked up by name alone (a path such as /v1/models/{name}/reload)
        what = (f"no model named {name!r}" if task is None else
                f"no model serves {task}" if name is None else f"model {name!r} does not serve {task}")
        hint = (f"; models{'' if task is None else f' for {task}'}: {', '.join(available)}" if available
                else "; start the service with one (TRM_MODELS)")
        super().__init__(what + hint)
        self.task, self.name, self.available = task, name, available


@dataclass(frozen=True)
class ArcVersion:
    """One augmented version of an ARC task the checkpoint was trained on (docs/MODEL_SPEC.md, "data")."""

    puzzle_id: int  # row of the puzzle-embedding table trained on this version
    aug: ArcAug  # colour permutation then dihedral transform, as the builder applied it


@dataclass(kw_only=True)
class LoadedModel:
    """A checkpoint that passed every check: its model, metadata and (ARC) task table."""

    name: str
    path: Path
    task: str
    model: TRM
    meta: dict[str, Any]
    arc_tasks: dict[str, list[ArcVersion]] = field(default_factory=dict)  # task fingerprint -> versions
    sha256: str | None = None  # of the checkpoint file the weights came from (metrics, /v1/models)

    @property
    def config(self) -> TRMConfig:
        return self.model.config

    @property
    def recipe(self) -> Recipe | None:
        """The model card's serving recipe from the checkpoint (checked on load), or None. The web page
        and `trm solve` start from it; the HTTP API's own defaults do not change with it."""
        recipe = self.meta.get("recipe")
        return recipe if isinstance(recipe, Recipe) else None

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Rows and columns of the model's grid (its canvas for ARC)."""
        cfg = self.config
        return grid_shape(cfg.seq_len, cfg.grid_height, cfg.grid_width)


@dataclass(kw_only=True)
class ServedModel(LoadedModel):
    """A loaded model with its engine and the thread that steps it."""

    engine: Engine
    worker: EngineLoop
    is_default: bool = False
    on_finish: Callable[[Any], None] | None = None  # sees every finished scheduler request (metrics)

    @property
    def scheduler(self) -> Scheduler:
        return self.engine.scheduler


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU. An unavailable CUDA device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RegistryError(f"TRM_DEVICE={name} but CUDA is not available; use TRM_DEVICE=cpu or auto")
    return device


def _parse_arc_version(v: Any) -> ArcVersion:
    """{"puzzle_id": int, "k": 0-7, "perm": [10 ints] | "0531246789"} or {"puzzle_id": int, "name":
    "task|||t3|||0531246789"} (the builder's version name, docs/MODEL_SPEC.md "data")."""
    if not isinstance(v, dict) or "puzzle_id" not in v:
        raise ValueError(f"expected an object with puzzle_id and k/perm or name; got {v!r}")
    if "name" in v:
        _, k, perm = parse_version_name(str(v["name"]))
    else:
        k, perm = int(v.get("k", 0)), tuple(int(c) for c in v.get("perm", range(10)))
    return ArcVersion(int(v["puzzle_id"]), ArcAug(k, tuple(perm)))


def _parse_arc_table(raw: Any, num_ids: int, keep: int) -> dict[str, list[ArcVersion]]:
    """metadata `arc_tasks`: {task fingerprint: [version, ...]} (see `_parse_arc_version`).

    Every entry is checked, but only the first `keep` versions of a task (identity first, as the
    builder writes them) are kept: a full ARC table has ~1000 per task, the service runs `keep`.
    """
    if not isinstance(raw, dict) or not raw:
        raise ValueError("metadata 'arc_tasks' is missing or empty; an ARC checkpoint must list the tasks "
                         "it was trained on (task fingerprint -> versions with puzzle_id, k, perm)")
    table: dict[str, list[ArcVersion]] = {}
    for fp, versions in raw.items():
        if not isinstance(versions, list) or not versions:
            raise ValueError(f"arc_tasks[{fp[:12]}...] must be a non-empty list of versions")
        parsed = []
        for i, v in enumerate(versions):
            try:
                version = _parse_arc_version(v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"arc_tasks[{fp[:12]}...][{i}]: {e}") from e
            if not 0 <= version.puzzle_id < num_ids:
                raise ValueError(f"arc_tasks[{fp[:12]}...][{i}]: puzzle_id {version.puzzle_id} is outside "
                                 f"the model's puzzle table (0-{num_ids - 1})")
            if len(parsed) < keep:
                parsed.append(version)
        table[fp] = parsed
    return table


def load_model(name: str, path: Path, settings: Settings, device: torch.device | str | None = None) -> LoadedModel:
    """Load a checkpoint and check that it can be served: a task with a codec, a config the codec can
    fill, a valid ARC table. Raises RegistryError naming the model, the file and the problem."""
    try:
        model, meta = load_checkpoint(path, device=device)
        task = str(meta.get("task") or model.config.task)
        if task not in TASK_NAMES:
            raise ValueError(f"task {task!r} has no codec; served tasks: {', '.join(TASK_NAMES)}")
        cfg = model.config
        check_model_shape(task, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, grid_height=cfg.grid_height,
                          grid_width=cfg.grid_width)
        arc_tasks = {}
        if task == "arc":
            # pop: the raw table can be tens of MB and is not needed once parsed
            arc_tasks = _parse_arc_table(meta.pop("arc_tasks", None), cfg.num_puzzle_identifiers,
                                         settings.arc_max_versions)
    except (FileNotFoundError, CheckpointFormatError, ValueError, OSError, RuntimeError) as e:
        raise RegistryError(f"cannot serve model {name!r} from {path}: {e}") from e
    return LoadedModel(name=name, path=Path(path), task=task, model=model, meta=meta, arc_tasks=arc_tasks)


def recipe_beyond_limits(loaded: LoadedModel, settings: Settings) -> str | None:
    """Why requests with the model's recipe would be refused by these settings (None: they would not).

    Not an error: the API's defaults do not use the recipe. But the web page posts it, so an operator
    who lowered a limit below it hears about it at start-up rather than from users' 422s.
    """
    recipe = loaded.recipe
    if recipe is None:
        return None
    over = [f"{what} {value} > {name}={limit}" for what, value, name, limit in (
        ("views", recipe.views, "TRM_MAX_VIEWS", settings.max_views),
        ("views", recipe.views, "TRM_MAX_QUEUE", settings.max_queue),
        ("max_steps", recipe.max_steps, "TRM_MAX_STEPS_LIMIT", settings.max_steps_limit)) if value > limit]
    if not over:
        return None
    return (f"its recipe ({recipe.describe()}) is beyond this server's limits ({'; '.join(over)}): solve "
            "requests that ask for it, as the web page does, will be refused")


def build_engine(loaded: LoadedModel, settings: Settings) -> Engine:
    """The model's engine with the settings' pool, queue and batching."""
    s = settings
    return Engine.for_model(loaded.model, s.max_batch, s.max_queue, batching=s.batching, max_wait_s=s.max_wait_s,
                            stall_steps=s.stall_steps,
                            runner_options={"cpu_chunk_rows": s.cpu_chunk_rows, "cuda_graphs": s.cuda_graphs})


class ModelRegistry:
    """All served models of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.defaults: dict[str, str] = {}  # task -> model name
        self.device: torch.device | None = None
        self.is_loaded = self.is_started = self.is_draining = False

    @property
    def is_ready(self) -> bool:
        return self.is_started and not self.is_draining and all(m.worker.is_alive for m in self.models.values())

    def load(self) -> None:
        """Load, check and warm up every configured model. Raises RegistryError (one line)."""
        s = self.settings
        try:
            specs = s.model_specs()
        except ValueError as e:
            raise RegistryError(str(e)) from e
        if not specs:
            raise RegistryError("no models to serve: set TRM_MODELS=name=path.safetensors[,...] "
                                "(no bundled checkpoints found in trm_core/pretrained)")
        self.device = resolve_device(s.device)
        warn_cpu_fallback(s.device, self.device)  # the CUDA image without a GPU: loud, and a gauge (metrics)
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        for name, path in specs:
            t0 = time.perf_counter()
            served = self._load_one(name, path)
            served.engine.warmup(s.warmup_steps)
            if served.task not in self.defaults:
                self.defaults[served.task] = name
                served.is_default = True
            self.models[name] = served
            if (problem := recipe_beyond_limits(served, s)) is not None:
                logger.warning("model %s: %s", name, problem)
            logger.info("model %s: %s task, %d params, %s, from %s (%.2fs incl. warm-up)", name, served.task,
                        served.model.num_trainable_params(), self.device, path, time.perf_counter() - t0)
        self.is_loaded = True

    def _read(self, name: str, path: Path) -> LoadedModel:
        """Load and check one checkpoint (`load_model`) and take its checksum; no engine yet. Only the
        server hashes the file (metrics, /v1/models, reload): `trm solve` does not pay for it."""
        loaded = load_model(name, path, self.settings, self.device)
        try:
            loaded.sha256 = file_sha256(path)
        except OSError as e:
            raise RegistryError(f"cannot serve model {name!r} from {path}: {e}") from e
        return loaded

    def _load_one(self, name: str, path: Path) -> ServedModel:
        loaded = self._read(name, path)
        engine = build_engine(loaded, self.settings)
        return ServedModel(**vars(loaded), engine=engine, worker=EngineLoop(name, engine))

    def start(self, on_step: Callable[[ServedModel, StepReport], None] | None = None) -> None:
        """Start one worker thread per model; the registry is ready afterwards."""
        if not self.is_loaded:
            raise RuntimeError("ModelRegistry.start() before load()")
        for m in self.models.values():
            if on_step is not None:
                m.worker.on_step = lambda report, m=m: on_step(m, report)
            m.worker.start()
        self.is_started = True

    def drain(self, timeout_s: float) -> bool:
        """Stop taking requests, let in-flight ones finish (shared deadline), stop the workers."""
        self.is_draining = True
        for m in self.models.values():
            m.worker.close()
        deadline = time.monotonic() + timeout_s
        is_clean = True
        for m in self.models.values():
            if m.worker.is_alive:
                is_clean &= m.worker.drain(max(0.0, deadline - time.monotonic()))
        return is_clean

    def reload(self, name: str, timeout_s: float = 60.0) -> ServedModel:
        """Re-read model `name` from its configured path, check and warm the new weights, and swap them
        in between two steps of the engine loop. The served shapes must not change (TRMConfig equal
        but for `halt_max_steps`), so the carry of running rows stays valid: a running row finishes on
        the old weights or the new ones, never fails. Raises UnknownModelError, ReloadFailed (the file
        cannot be served, or no step boundary came in `timeout_s`) or ReloadConflict (other shapes);
        either way the old weights keep serving.
        ARC rows added by adaptation jobs are replaced by the file's table."""
        current = self.models.get(name)
        if current is None:
            raise UnknownModelError(None, name, sorted(self.models))
        try:
            fresh = self._read(name, current.path)
        except RegistryError as e:
            raise ReloadFailed(f"{e}; the old weights keep serving") from e
        old_cfg, new_cfg = dataclasses.asdict(current.config), dataclasses.asdict(fresh.config)
        emb = current.model.puzzle_emb
        if emb is not None:  # rows adaptation added sit in an extension table, which the reload drops
            old_cfg["num_puzzle_identifiers"] = emb.weights.shape[0]
        differ = sorted(k for k in old_cfg if old_cfg[k] != new_cfg[k] and k != "halt_max_steps")
        if fresh.task != current.task or differ:
            what = f"task {fresh.task!r} instead of {current.task!r}" if fresh.task != current.task else (
                "a different config: " + ", ".join(f"{k} {old_cfg[k]!r} -> {new_cfg[k]!r}" for k in differ))
            raise ReloadConflict(f"{current.path} now holds {what}; model {name!r} keeps serving its weights "
                                 "(a model of other shapes needs a restart)")
        weights = fresh.model.state_dict()
        with torch.inference_mode():  # warm: one step of the new weights on one row, outside the loop
            fresh.model.eval()
            carry = fresh.model.empty_carry(1)
            ones = torch.ones(1, dtype=torch.bool, device=self.device)
            _, out = fresh.model.step(fresh.model.reset_rows(carry, ones, carry.inputs, carry.puzzle_ids))
            if not bool(torch.isfinite(out.logits).all()):
                raise ReloadFailed(f"cannot serve model {name!r} from {current.path}: its weights give "
                                   "non-finite outputs; the old weights keep serving")

        def swap() -> None:  # on the engine thread, between two steps
            # in place: CUDA graphs captured on these tensors stay valid; the runner's copy and the
            # registry's model may be one object or two (serving weights in another dtype)
            for target in {id(m): m for m in (current.engine.runner.model, current.model)}.values():
                with torch.no_grad():
                    for key, tensor in target.state_dict().items():
                        if key in weights:  # not an adaptation's extension rows (training/adapt.py)
                            tensor.copy_(weights[key])
                extra = getattr(target.puzzle_emb, "extra", None)
                if extra is not None:  # one attribute store, as an install does: the file's table only
                    target.puzzle_emb.extra = extra[:0]
                target.config = fresh.config
            current.meta, current.arc_tasks, current.sha256 = fresh.meta, fresh.arc_tasks, fresh.sha256

        try:
            current.worker.call_between_steps(swap, timeout_s)
        except TimeoutError as e:
            raise ReloadFailed(f"{e}; nothing swapped, the old weights keep serving") from e
        logger.info("model %s: reloaded from %s (sha256 %s)", name, current.path, current.sha256)
        return current

    def get(self, task: str, name: str | None = None) -> ServedModel:
        """The model `name` (or the task's default) if it serves `task`; else UnknownModelError."""
        available = [m.name for m in self.models.values() if m.task == task]
        if name is None:
            name = self.defaults.get(task)
        served = self.models.get(name) if name is not None else None
        if served is None or served.task != task:
            raise UnknownModelError(task, name, available)
        return served

    def scheduler_stats(self) -> Iterator[tuple[str, SchedulerStats]]:
        for name, m in self.models.items():
            yield name, m.scheduler.stats()
