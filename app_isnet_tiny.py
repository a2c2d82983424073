"""Entry point. ``python app_isnet_tiny.py`` starts the production server on $PORT (default 5000).

``gunicorn app_isnet_tiny:app`` works too. Run directly, this module does not
build the app itself: gunicorn's worker imports it and builds it there, so the
model is loaded once, in the process that serves.
"""
if __name__ == "__main__":
    from service.server import serve

    serve("service.wsgi:app")
else:
    from service.wsgi import app  # noqa: F401
