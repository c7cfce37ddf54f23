"""The HTTP layer: the FastAPI app, its routes, request/response schemas, middleware, error mapping to
problem+json, the server lifecycle (SIGTERM drain) and the static web page."""
