"""trm-serve's HTTP service: continuous batching of TRM requests at ACT-step granularity.

Entry points: `service.app.create_app(settings)` (the FastAPI app), `service.cli.main` (`trm serve`,
`python -m service`). The scheduler (`service.scheduler.Scheduler`) is usable without HTTP, e.g.
by bench/bench_batching.py. Importing this package does no work (no settings, models or metrics).
"""
