"""WSGI entry point: ``gunicorn predict:app`` (settings in gunicorn.conf.py)."""

from ride_duration import create_app

app = create_app()
