"""Deployment tests reuse the service tests' tiny checkpoints and in-process server."""

from tests.service.conftest import _no_trm_env, anyio_backend, checkpoints  # noqa: F401 - fixtures
