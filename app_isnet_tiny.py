"""Entry point. ``python app_isnet_tiny.py`` starts the production server on $PORT (default 5000).

``gunicorn app_isnet_tiny:app`` works too. Run directly, this module does not
build the app itself: gunicorn's worker imports it and builds it there, so the
model is loaded once, in the process that serves.
"""
if __name__ == "__main__":
    from service.http.server import serve

    serve("service.http.wsgi:app")
else:
    from service.http.wsgi import app  # noqa: F401
