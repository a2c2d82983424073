"""Asynchronous jobs on Redis with RQ: ``POST /api/bg/jobs`` answers 202 at once, workers
(``python -m service worker``) run the images through the same pipeline and model, and the
client polls ``GET /api/bg/jobs/<id>`` or is called back by a signed webhook. Off unless
REDIS_URL is set.

Why RQ rather than Celery: a worker is one process holding one model (RQ's SimpleWorker runs the
job in the process that loaded the model; Celery's prefork pool adds a parent process, and its
solo pool loses the acknowledgement-after-work story's simplicity), its dependencies are small
(redis, click, croniter), and RQ 3 retries a job whose worker died (the execution's heartbeat
expires, another worker's maintenance finds it and requeues it while retries are left). The
images and results live in Redis too (service/jobs/store.py), so server and workers share
nothing but Redis. Whatever is acknowledged (the 202) is in Redis; with Redis' append-only file
it survives a Redis restart (README, "Jobs").
"""
from __future__ import annotations

from dataclasses import dataclass

QUEUE = "bg-removal"  # the Redis list is rq:queue:bg-removal (KEDA's Redis list scaler reads it)
RETRIES = 2           # a job whose worker died or whose run raised is tried up to twice more


@dataclass
class Jobs:
    """The job system as the server and workers use it: a Redis connection, RQ's queue, the store."""
    redis: object
    queue: object
    store: object

    @classmethod
    def connect(cls, settings) -> "Jobs":
        """Connect to REDIS_URL; raises redis' ConnectionError (or ValueError for a bad URL)."""
        from redis import Redis
        from rq import Queue

        from .store import Store

        redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5,
                               health_check_interval=30)
        redis.ping()
        return cls(redis, Queue(QUEUE, connection=redis), Store(redis, settings.max_job_store, settings.job_ttl))
