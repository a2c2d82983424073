"""``python -m service worker``: an RQ worker holding the configured model, running jobs' images
through the pipeline one at a time, with the server's settings and memory limits.

One process: RQ's SimpleWorker runs each job in the process that loaded the model (forking a
work-horse per job, RQ's default, would fork a process whose engine has live thread pools).
While a job runs, a thread keeps its execution's heartbeat short-lived (HEARTBEAT_S): if the
worker is killed, its execution expires within HEARTBEAT_TTL_S, and another worker's maintenance
(every MAINTENANCE_S) gives the job back to the queue while it has retries left. A retried job
skips the images an earlier attempt recorded, and every answer is written once.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time

from rq import SimpleWorker, get_current_job

from ..errors import ServiceError
from . import QUEUE, Jobs
from .store import Store, options_from_json

log = logging.getLogger("service.worker")
HEARTBEAT_S = 5
HEARTBEAT_TTL_S = 15
MAINTENANCE_S = 10
WORKER_TTL_S = 30  # also bounds how long an idle worker waits before it looks at maintenance again

_model = None     # the ModelHolder, loaded once by main(); the job function uses it
_settings = None


class ServiceWorker(SimpleWorker):
    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_S

    def perform_job(self, job, queue, execution=None, *args, **kwargs):
        done = threading.Event()

        def beat():
            while not done.wait(HEARTBEAT_S):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception as exc:  # Redis away for a moment: the next beat tries again
                    log.warning("heartbeat failed: %s", exc)

        beating = threading.Thread(target=beat, daemon=True, name="heartbeat")
        if execution is not None:
            beating.start()
        try:
            return super().perform_job(job, queue, execution, *args, **kwargs)
        finally:
            done.set()


def _background(store: Store, job_id: str):
    from ..imaging.decode import decode_upload

    picture = store.get(job_id, "bg")
    return decode_upload(picture, _settings.max_dimension, _settings.max_pixels).rgb if picture else None


def process(job_id: str) -> None:
    """The RQ job: every image of job ``job_id`` not yet recorded, then the webhook."""
    rq_job = get_current_job()
    store = Store(rq_job.connection, _settings.max_job_store, _settings.job_ttl)
    info = store.info(job_id)
    if info is None:  # expired before a worker came
        log.warning("job %s: gone before it ran", job_id)
        return
    names, outputs = json.loads(info["names"]), json.loads(info["outputs"])
    store.update(job_id, state="started", attempts=int(info.get("attempts", 0)) + 1)
    recorded = store.entries(job_id)
    try:
        options = options_from_json(info["options"], _background(store, job_id))
    except ServiceError as exc:
        options, failure = None, exc
    for index, name in enumerate(names):
        if index in recorded:
            continue
        entry, body = {"index": index, "input": name}, None
        try:
            if options is None:
                raise failure
            data = store.get(job_id, f"in:{index}")
            if data is None:
                raise ServiceError("the upload expired before it was processed")
            result = _model.cut_out(data, options, time.monotonic() + _settings.request_timeout)
            del data
            if not store.reserve(job_id, len(result.body)):
                raise ServiceError("the job store is full (MAX_JOB_STORE_MB): this result could not be kept")
            body = result.body
            entry.update(status=200, output=outputs[index], bytes=len(body), width=result.image.width,
                         height=result.image.height, confidence=round(result.confidence, 3), model=result.model,
                         **({"warning": result.warning} if result.warning else {}))
        except ServiceError as exc:
            entry.update(status=exc.status, code=exc.code, error=exc.message)
        if not store.record(job_id, index, entry, body) and body is not None:
            store.release(job_id, len(body))  # an earlier attempt's answer stands
        log.info("job %s: image %d of %d: %s", job_id, index + 1, len(names), entry["status"])
    finish(store, job_id, "finished")


def finish(store: Store, job_id: str, state: str, error: str | None = None) -> None:
    """The job's end: its state, its uploads dropped, its results kept JOB_TTL_S, the webhook."""
    info = store.info(job_id) or {}
    images = int(info.get("images", 0))
    store.update(job_id, state=state, finished=time.time(), **({"error": error} if error else {}))
    store.drop_inputs(job_id, images, int(info.get("input_bytes", 0)))
    store.keep_for_ttl(job_id, images)
    if info.get("webhook"):
        from .webhook import deliver

        entries = store.entries(job_id)
        payload = {"id": job_id, "state": state, "images": images,
                   "succeeded": sum(1 for e in entries.values() if e.get("status") == 200),
                   "status_url": f"/api/bg/jobs/{job_id}", **({"error": error} if error else {})}
        store.update(job_id, webhook_status=deliver(info["webhook"], payload, _settings.webhook_secret,
                                                    _settings.webhook_networks))


def failed(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback: a run that raised, or a worker that died. RQ calls it before it
    decides on a retry: only the last failure ends the job."""
    if job.retries_left:
        log.warning("job %s failed (%s); %d retries left", job.id, exc_type.__name__, job.retries_left)
        return
    store = Store(connection, _settings.max_job_store, _settings.job_ttl) if _settings else None
    if store and job.args:
        finish(store, job.args[0], "failed", f"the job could not be completed ({exc_type.__name__})")


def main() -> int:
    """Load the model as the server does, connect to REDIS_URL, and work until SIGTERM."""
    global _model, _settings
    from ..config import ConfigError, Settings
    from ..model.holder import ModelHolder
    from ..memory import apply_malloc_defaults

    apply_malloc_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        _settings = Settings.from_env()
        if not _settings.redis_url:
            raise ConfigError("REDIS_URL is not set: a worker takes its jobs from Redis")
        jobs = Jobs.connect(_settings)
        _model = ModelHolder.load(_settings)
    except Exception as exc:
        log.error("the worker cannot start: %s", " ".join(str(exc).split()) or exc.__class__.__name__)
        return 1
    log.info("worker: %s on queue %s", _model.engine.label, QUEUE)
    worker = ServiceWorker([jobs.queue], connection=jobs.redis, worker_ttl=WORKER_TTL_S,
                           maintenance_interval=MAINTENANCE_S)
    worker.work(logging_level="INFO", with_scheduler=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
