"""The HTTP service: the app's state and what the APIs share (:mod:`.web`), the parameter table
(:mod:`.params`), the routes of each API (:mod:`.api`, :mod:`.removebg`, :mod:`.batch`,
:mod:`.rembg_api`; the jobs' in :mod:`service.jobs.api`), the OpenAPI document, admission
(:mod:`.gate`), API keys, metrics, the request log, URL downloads, and gunicorn (:mod:`.server`,
:mod:`.wsgi`)."""
