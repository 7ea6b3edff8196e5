"""``scgan serve``: a trained model behind a small HTTP API and a self-contained web page (FastAPI + uvicorn)."""
from scgan.serve.app import Limits, create_app
from scgan.serve.server import serve

__all__ = ["Limits", "create_app", "serve"]
