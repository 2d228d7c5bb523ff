"""The REST service (FastAPI): ``create_app()`` builds it, ``deepfake-detector serve`` runs it.

See docs/service.md. Needs the ``[serve]`` extra: ``pip install 'deepfake-detector[serve]'``.
"""

from .app import create_app

__all__ = ["create_app"]
