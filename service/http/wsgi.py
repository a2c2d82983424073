"""The WSGI application for any WSGI server: ``gunicorn service.http.wsgi:app`` (built at import)."""
from .. import create_app

app = create_app()
