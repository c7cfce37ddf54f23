"""Service settings: every knob is a ``TRM_*`` environment variable.

One ``Settings`` object is built by the CLI (or a test) and passed to ``create_app``; there is no
module-level singleton (no import-time work). List-valued variables accept either a JSON
list or a comma-separated string::

    TRM_MODELS=sudoku=/ckpt/sudoku.safetensors,/ckpt/maze.safetensors   # name=path or path (name = stem)
    TRM_CORS_ORIGINS=https://a.example,https://b.example

Not here: anything per request (that is the request's ``options``) and anything about the model's
architecture (that travels inside the checkpoint).
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trm_core.halting import HALTING_MODES

logger = logging.getLogger(__name__)

Batching = Literal["continuous", "request"]
Halting = Literal[HALTING_MODES]  # trm_core.halting's modes: one list for the scheduler, settings and HTTP


def bundled_models() -> list[str]:
    """The checkpoints shipped in ``trm_core/pretrained`` (may be none in a fresh checkout)."""
    try:
        root = resources.files("trm_core") / "pretrained"
        return sorted(str(p) for p in root.iterdir() if p.name.endswith(".safetensors"))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return []


def _split_list(value: object) -> object:
    """Accept ``a,b`` as well as a JSON list for list-valued env vars."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All service settings. Field ``x`` is read from env var ``TRM_X``."""

    model_config = SettingsConfigDict(env_prefix="TRM_", extra="forbid", env_ignore_empty=True)

    # Checkpoints to serve: "name=path" or "path" (name = file stem). The first model listed for a
    # task is that task's default. Default: the bundled checkpoints.
    models: Annotated[list[str], NoDecode] = Field(default_factory=bundled_models)
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    max_batch: int = Field(64, ge=1, le=4096)  # slots per model = rows stepped together
    max_queue: int = Field(1024, ge=1)  # waiting rows per model before 429
    max_wait_s: float = Field(0.002, ge=0.0, le=10.0)  # hold a partial first batch this long
    cpu_chunk_rows: int = Field(8, ge=0, le=4096)  # CPU: step the pool in chunks of this many rows (0 = whole)
    cuda_graphs: bool = True  # CUDA: one CUDA graph per row-count bucket (service/engine/stepper.py)
    batching: Batching = "continuous"  # "request": run a batch to the end, no admission mid-flight
    default_halting: Halting = "learned"
    default_max_steps: int | None = Field(None, ge=1)  # None: the model's halt_max_steps
    max_steps_limit: int = Field(64, ge=1, le=100_000)  # largest step budget a request may ask for
    arc_max_versions: int = Field(32, ge=1)  # augmented versions run per ARC test input
    # ARC test-time adaptation jobs (POST /v1/arc/tasks, service/tasks/adapt.py)
    adapt_concurrency: int = Field(1, ge=1, le=64)  # adaptations running at once per ARC model
    adapt_queue: int = Field(8, ge=0)  # jobs waiting per ARC model before 429
    adapt_max_steps: int = Field(200, ge=1)  # largest (and default) training-step budget of a job
    adapt_max_s: float = Field(600.0, gt=0.0)  # largest (and default) training wall time of a job
    adapt_ttl_s: float = Field(3600.0, gt=0.0)  # finished jobs stay readable this long
    adapt_dir: Path | None = None  # when set, adapted rows are saved here and restored on start
    adapt_versions: int = Field(8, ge=1, le=1024)  # augmented versions an adaptation trains (identity first)
    adapt_batch_size: int = Field(16, ge=1, le=4096)  # ACT slots of the adaptation loop
    adapt_nice: int = Field(10, ge=0, le=19)  # adaptation threads' nice: > 0 yields the CPU to serving
    max_views: int = Field(256, ge=1)  # largest `views` (symmetric versions run per puzzle) a request may ask for
    max_view_rows: int = Field(16, ge=1)  # rows of one request's views stepping at once (fairness, early exit)
    view_wave: int = Field(16, ge=0)  # verified views run in waves B, B, 2B, 4B, ... while unsolved; 0: all at once
    stall_steps: int = Field(0, ge=0)  # > 0: a verified-halting row whose answer is unchanged this many steps stops
    request_timeout_s: float = Field(30.0, gt=0.0)
    drain_timeout_s: float = Field(30.0, ge=0.0)  # on shutdown, wait this long for in-flight work
    prestop_s: float = Field(1.0, ge=0.0)  # on SIGTERM, answer 503 (readiness off) at least this long
    body_timeout_s: float = Field(15.0, gt=0.0)  # request headers, then body, must arrive within this
    max_connections: int = Field(512, ge=1)  # open connections beyond this: 503 + Retry-After
    max_body_bytes: int = Field(1_000_000, ge=1024)
    api_key: SecretStr | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)  # empty: CORS off
    torch_threads: int = Field(0, ge=0)  # intra-op CPU threads; 0 = torch's default (all cores)
    warmup_steps: int = Field(2, ge=0)  # ACT steps run on a full slot pool before "ready"
    log_level: str = "info"

    @field_validator("models", "cors_origins", mode="before")
    @classmethod
    def _lists_from_env(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("auto", "cpu", "mps") and not (value == "cuda" or value.startswith("cuda:")):
            raise ValueError(f"TRM_DEVICE={value!r} is not a device; use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("api_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("TRM_API_KEY is shorter than 16 characters; use a long random key or unset it")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_max_steps is not None and self.default_max_steps > self.max_steps_limit:
            raise ValueError(
                f"TRM_DEFAULT_MAX_STEPS={self.default_max_steps} exceeds TRM_MAX_STEPS_LIMIT="
                f"{self.max_steps_limit}; raise the limit or lower the default"
            )
        if "*" in self.cors_origins and self.api_key is not None:
            raise ValueError("TRM_CORS_ORIGINS='*' together with TRM_API_KEY exposes the key to any site; "
                             "list the allowed origins explicitly")
        return self

    def model_specs(self) -> list[tuple[str, Path]]:
        """(name, path) per configured model, names unique. Raises ValueError naming the clash."""
        specs: list[tuple[str, Path]] = []
        for item in self.models:
            name, sep, path = item.partition("=")
            if not sep:
                name, path = Path(item).stem, item
            name = name.strip()
            if not name:
                raise ValueError(f"TRM_MODELS entry {item!r} has an empty name; use name=path")
            if any(name == other for other, _ in specs):
                raise ValueError(f"TRM_MODELS names {name!r} twice; give one of them a name with name=path")
            specs.append((name, Path(path.strip()).expanduser()))
        return specs


def warn_unknown_env(environ: dict[str, str] | None = None) -> list[str]:
    """Log TRM_* variables that are no setting (typos would otherwise be ignored silently).

    Not an error: other parts of trm (training) may read their own TRM_* variables.
    """
    environ = dict(os.environ) if environ is None else environ
    known = {f"TRM_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(k for k in environ if k.upper().startswith("TRM_") and k.upper() not in known)
    for key in unknown:
        logger.warning("environment variable %s is not a service setting; known: %s", key, ", ".join(sorted(known)))
    return unknown
