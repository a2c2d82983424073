"""``/api/bg/jobs``: submit a job (the inputs and options of a batch, and an optional webhook),
read its state and progress, download its results. Answers 404 ``jobs_disabled`` when REDIS_URL
is unset; with API_KEY set, reads need the key too (results are the users' pictures)."""
from __future__ import annotations

import functools
import json
import logging
import sys

from flask import Blueprint, Response, jsonify, request, url_for

from ..http.params import JOBS
from ..http.batch import output_name, request_items, request_options
from ..http.download import check_url
from ..errors import Busy, FileTooLarge, ServiceError, Unauthorized
from ..http.state import admission_gate, app_state, count_request, current_settings, key_accepted
from ..http.uploads import drain_body
from . import RETRIES, Jobs
from .store import new_id, valid_id

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__, url_prefix="/api/bg/jobs")


class JobsDisabled(ServiceError):
    status, code = 404, "jobs_disabled"


class JobNotFound(ServiceError):
    status, code = 404, "job_not_found"


class BadWebhook(ServiceError):
    status, code = 400, "invalid_webhook_url"


def current_jobs() -> Jobs:
    """The app's job system, connected at the first use (and again after Redis went away)."""
    settings = current_settings()
    if not settings.redis_url:
        raise JobsDisabled("jobs are off on this server: the operator sets REDIS_URL to turn them on")
    state = app_state()
    if state.jobs is None:
        try:
            state.jobs = Jobs.connect(settings)
        except Exception as exc:
            raise Busy(f"the job queue is unreachable ({exc.__class__.__name__}); retry shortly", retry_after=10)
    return state.jobs


@bp.before_request
def _require_key():
    """Reads need the key too (results are the users' pictures); a submit counts against its limit."""
    if not key_accepted():
        raise Unauthorized("missing or wrong X-API-Key header")
    if request.method == "POST":
        count_request()


def _is_redis_error(exc: BaseException) -> bool:
    # redis is imported where jobs are on (Jobs.connect): a server without REDIS_URL never loads
    # it (8 MB a worker), and an exception can only be redis' once it is loaded
    exceptions = sys.modules.get("redis.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.RedisError)


def _queue_errors(view):
    """Redis unreachable mid-request: 503 with Retry-After, never a 500; reconnect next time."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            app_state().jobs = None
            log.warning("redis: %s", exc)
            raise Busy("the job queue is unreachable; retry shortly", retry_after=10) from exc
    return wrapped


@bp.post("")
@_queue_errors
def submit():
    settings = current_settings()
    jobs = current_jobs()
    size = request.content_length or 0
    if size > settings.max_batch:
        drain_body()
        raise FileTooLarge(f"a job's upload may be {settings.max_batch // 2**20} MB (MAX_BATCH_MB); "
                           "split it into several jobs")
    request.max_content_length = settings.max_batch + 64 * 1024
    request.max_form_parts = settings.max_batch_files + 100
    if jobs.queue.count >= settings.max_queued_jobs:
        raise Busy(f"{jobs.queue.count} jobs are waiting for a worker (MAX_QUEUED_JOBS); retry later",
                   retry_after=30)
    with admission_gate().hold(size):  # the upload is in memory until it is in Redis: within MAX_WAITING_MB
        return _submit(settings, jobs)


def _submit(settings, jobs: Jobs):
    webhook = (request.form.get("webhook_url") or "").strip() or None
    if webhook:
        if not settings.webhook_secret:
            raise BadWebhook("this server has no WEBHOOK_SECRET to sign webhooks with; poll the status URL")
        try:
            check_url(webhook, settings.webhook_networks)
        except ServiceError as exc:
            raise BadWebhook(exc.message) from None
    items = request_items(settings.max_batch_files)
    options = request_options(JOBS)
    background = request.files.get("bg_image_file")
    job_id, taken = new_id(), set()
    outputs = [output_name(item.name, options, taken) for item in items]
    stored = 0
    try:
        for index, item in enumerate(items):
            try:
                if item.error:
                    raise item.error
                data = item.read()
                if len(data) > settings.max_file_size:
                    raise FileTooLarge(f"{item.name} is larger than {settings.max_file_size_mb} MB")
            except ServiceError as exc:  # this image fails; the others go on
                jobs.store.record(job_id, index, {"index": index, "input": item.name, "status": exc.status,
                                                  "code": exc.code, "error": exc.message}, None)
                continue
            if not jobs.store.reserve(job_id, len(data)):
                raise Busy("the job store is full (MAX_JOB_STORE_MB); retry when earlier jobs' results expire",
                           retry_after=60)
            stored += len(data)
            jobs.store.put(job_id, f"in:{index}", data)
        if background is not None:
            background.stream.seek(0)
            picture = background.stream.read()
            if not jobs.store.reserve(job_id, len(picture)):
                raise Busy("the job store is full (MAX_JOB_STORE_MB); retry later", retry_after=60)
            stored += len(picture)
            jobs.store.put(job_id, "bg", picture)
        jobs.store.create(job_id, [item.name for item in items], outputs, options, webhook, stored)
        from rq import Callback, Retry

        jobs.queue.enqueue("service.jobs.worker.process", job_id, job_id=job_id, retry=Retry(max=RETRIES),
                           on_failure=Callback("service.jobs.worker.failed"),
                           job_timeout=int(settings.request_timeout * max(1, len(items)) + 60),
                           # not result_ttl=0: RQ 3.0 then deletes the job at once, and stumbles on
                           # the expired execution of a worker that died on it (ValueError)
                           result_ttl=settings.job_ttl, failure_ttl=settings.job_ttl)
    except BaseException:
        try:
            jobs.store.delete(job_id, len(items))  # nothing left behind
        except Exception as exc:
            if not _is_redis_error(exc):
                raise  # Redis went away: the keys expire with JOB_TTL_S
        raise
    status_url = url_for("jobs.status", job_id=job_id)
    response = jsonify(id=job_id, state="queued", images=len(items), status_url=status_url,
                       expires_in_s=settings.job_ttl)
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


def _job(job_id: str) -> dict:
    info = current_jobs().store.info(job_id) if valid_id(job_id) else None
    if not info:
        raise JobNotFound(f"no job {job_id[:64]!r} here: it never existed, or its results expired")
    return info


@bp.get("/<job_id>")
@_queue_errors
def status(job_id: str):
    info, store = _job(job_id), current_jobs().store
    names = json.loads(info["names"])
    entries = store.entries(job_id)
    files = []
    for index, name in enumerate(names):
        entry = entries.get(index, {"index": index, "input": name, "status": None})
        if entry.get("status") == 200:
            entry["url"] = url_for("jobs.result", job_id=job_id, index=index)
        files.append(entry)
    images = int(info["images"])
    done = sum(1 for e in files if e["status"] is not None)
    ended = float(info.get("finished") or 0)
    body = {"id": job_id, "state": info["state"], "images": images, "done": done,
            "progress": round(done / images, 3) if images else 1.0,
            "succeeded": sum(1 for e in files if e["status"] == 200), "attempts": int(info.get("attempts", 0)),
            "created": float(info["created"]), "finished": ended or None,
            "expires_at": (ended or float(info["created"])) + current_settings().job_ttl, "files": files}
    for optional in ("error", "webhook_status"):
        if info.get(optional):
            body[optional] = info[optional]
    return jsonify(body)


@bp.get("/<job_id>/results/<int:index>")
@_queue_errors
def result(job_id: str, index: int):
    info = _job(job_id)
    outputs = json.loads(info["outputs"])
    body = current_jobs().store.get(job_id, f"out:{index}") if 0 <= index < len(outputs) else None
    if body is None:
        raise JobNotFound(f"job {job_id} has no result {index} (not done, failed, or expired)")
    fmt = outputs[index].rsplit(".", 1)[-1]
    response = Response(body, mimetype=f"image/{fmt}")
    response.headers["Content-Disposition"] = f'attachment; filename="{outputs[index]}"'
    return response
