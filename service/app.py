"""`service.app.create_app`, kept where users' scripts import it from; the app lives in service/api/app.py."""

from service.api.app import create_app

__all__ = ["create_app"]
