"""ASGI entry point for uvicorn: `uvicorn telecare.asgi:app`."""

from telecare.app import create_app

app = create_app()
