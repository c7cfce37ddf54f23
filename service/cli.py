"""`trm serve` / `python -m service`: load the models, then run uvicorn with the app.

Every setting is a TRM_* environment variable (service/settings.py); the flags below override the
most common ones. Models are loaded and warmed up *before* the port opens, so a bad checkpoint
stops start-up with one clear line on stderr and exit code 1 (no traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from service.settings import Settings, warn_unknown_env

logger = logging.getLogger("service")


def _env_help() -> str:
    lines = ["environment variables (defaults in brackets):"]
    for name, field in Settings.model_fields.items():
        default = "bundled checkpoints" if name == "models" else field.get_default(call_default_factory=True)
        lines.append(f"  TRM_{name.upper():<22} [{default}]")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trm serve", description="Serve TRM checkpoints over HTTP (OpenAPI at /docs).",
                                epilog=_env_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="checkpoints as path or name=path (overrides TRM_MODELS)")
    p.add_argument("--host", help="bind address (TRM_HOST)")
    p.add_argument("--port", type=int, help="port (TRM_PORT)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (TRM_DEVICE)")
    p.add_argument("--max-batch", type=int, help="slots per model (TRM_MAX_BATCH)")
    p.add_argument("--batching", choices=["continuous", "request"], help="TRM_BATCHING")
    p.add_argument("--log-level", help="debug, info, warning (TRM_LOG_LEVEL)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v not in (None, [])}
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            print(f"trm serve: TRM_{field.upper()}: {err['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warn_unknown_env()

    # Imported here so that `trm serve --help` stays fast and torch loads only when serving.
    from service.api.app import create_app
    from service.api.server import serve
    from service.registry import ModelRegistry, RegistryError

    logger.info("settings: %s", settings.model_dump(exclude={"api_key"}) | {"api_key": settings.api_key is not None})
    registry = ModelRegistry(settings)
    try:
        registry.load()
    except RegistryError as e:
        print(f"trm serve: {e}", file=sys.stderr)
        return 1
    app = create_app(settings, registry=registry)
    if not serve(app):  # SIGTERM: drain (service/api/lifecycle.py), then stop
        return 1
    # Every request is answered and the workers are stopped. Interpreter teardown with torch loaded
    # took over 2 s on a busy machine, past the drain budget a supervisor allows: skip it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
