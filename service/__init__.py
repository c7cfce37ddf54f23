"""trm-serve's HTTP service: continuous batching of TRM requests at ACT-step granularity.

Rooms, lowest first, each importing only those below it (tests/service/test_layers.py): `settings`
and `traffic` (shared values), `engine/` (scheduler, runner, loop thread; no HTTP, no codecs' JSON),
`metrics`, `registry` (loaded models and their engines), `tasks/` (grids in, results out, no HTTP
types), `api/` (FastAPI app, schemas, routes, problem+json); `cli` and `solve_cli` sit on top.
Entry points: `service.app.create_app(settings)` (the FastAPI app), `service.cli.main` (`trm serve`,
`python -m service`). Importing this package does no work (no settings, models or metrics).
"""
