"""ASGI entry point for servers that import an app by name: `uvicorn service.asgi:app`."""
from service.app import create_app

app = create_app()
