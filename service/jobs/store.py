"""What a job keeps in Redis, and the budget that bounds it.

Keys, all under ``bg:job:<id>`` and all expiring together (JOB_TTL_S after the job is made, and
again after it finishes, so that results can be fetched for that long):

- ``bg:job:<id>``: a hash: ``state`` (queued, started, finished, failed), ``images``, ``names``
  (JSON), ``options`` (JSON), ``webhook``, ``created``, ``finished``, ``attempts``, ``error``;
- ``…:in:<n>``: image n's upload, deleted once it has been processed; ``…:bg``: a background image;
- ``…:out:<n>``: image n's answer, written once (``SET NX``: a retried job never writes twice);
- ``…:entries``: a hash, image n → its manifest entry (JSON), written once (``HSETNX``).

The store's bytes are counted against MAX_JOB_STORE_MB: ``bg:store:bytes`` holds the total and
``bg:store:jobs`` (job → expiry) with ``bg:store:sizes`` (job → bytes) let every reservation
first give back what expired jobs held, atomically (a Lua script), so the count never drifts.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from ..pipeline import Options

_PREFIX = "bg:job:"
TOTAL, JOBS, SIZES = "bg:store:bytes", "bg:store:jobs", "bg:store:sizes"

# KEYS: total, jobs, sizes; ARGV: job id, bytes, budget, now, expiry. Gives back the bytes of jobs
# expired by now, then (with an expiry) reserves ``bytes`` for the job, and sets its expiry, if the
# budget allows: 1, else 0.
_RESERVE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
for _, id in ipairs(expired) do
  local held = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('DECRBY', KEYS[1], held)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
end
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[2])
if wanted > 0 and total + wanted > tonumber(ARGV[3]) then return 0 end
if tonumber(ARGV[5]) > 0 then
  redis.call('INCRBY', KEYS[1], wanted)
  redis.call('HINCRBY', KEYS[3], ARGV[1], wanted)
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
end
return 1
"""

# KEYS: total, sizes; ARGV: job id, bytes. Gives the bytes back if the job still holds them (an
# expired job's were given back by _RESERVE already).
_RELEASE = """
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local freed = math.min(held, tonumber(ARGV[2]))
if freed > 0 then
  redis.call('DECRBY', KEYS[1], freed)
  redis.call('HINCRBY', KEYS[2], ARGV[1], -freed)
end
return freed
"""


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def options_to_json(options: Options) -> str:
    """The options as JSON; an image background travels as the job's ``bg`` key instead."""
    fields = {name: getattr(options, name) for name in Options.__dataclass_fields__}
    if not isinstance(options.background, tuple):
        fields["background"] = None
    return json.dumps(fields)


def _tuples(value):
    """JSON's lists back as the tuples they were: every sequence in Options is a tuple."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def options_from_json(text: str, background=None) -> Options:
    """The Options :func:`options_to_json` wrote, equal to them; ``background``: the job's
    background image, where it has one."""
    fields = {name: _tuples(value) for name, value in json.loads(text).items()}
    if background is not None:
        fields["background"] = background
    return Options(**fields)


@dataclass
class Store:
    """One Redis connection's view of the jobs; ``budget`` in bytes, ``ttl`` in seconds."""
    redis: object
    budget: int
    ttl: int

    def __post_init__(self):
        self._reserve = self.redis.register_script(_RESERVE)
        self._release = self.redis.register_script(_RELEASE)

    def key(self, job_id: str, *part) -> str:
        return _PREFIX + job_id + "".join(f":{p}" for p in part)

    def reserve(self, job_id: str, size: int, expiry: float | None = None) -> bool:
        """Count ``size`` more bytes for ``job_id`` if the store's budget allows (and move its
        expiry); expired jobs' bytes are given back first."""
        now = time.time()
        return bool(self._reserve(keys=[TOTAL, JOBS, SIZES],
                                  args=[job_id, size, self.budget, now, expiry or now + self.ttl]))

    def used(self) -> int:
        """Bytes the store holds now (what expired given back first)."""
        self._reserve(keys=[TOTAL, JOBS, SIZES], args=["", 0, self.budget, time.time(), 0])
        return int(self.redis.get(TOTAL) or 0)

    def release(self, job_id: str, size: int) -> None:
        self._release(keys=[TOTAL, SIZES], args=[job_id, size])

    def delete(self, job_id: str, images: int) -> None:
        """Every key of the job, and the bytes it holds (a job that could not be queued)."""
        parts = [(), ("entries",), ("bg",), *[(kind, n) for n in range(images) for kind in ("in", "out")]]
        self.redis.delete(*[self.key(job_id, *part) for part in parts])
        held = int(self.redis.hget(SIZES, job_id) or 0)
        self.release(job_id, held)
        self.redis.zrem(JOBS, job_id)
        self.redis.hdel(SIZES, job_id)

    def create(self, job_id: str, names: list[str], outputs: list[str], options: Options, webhook: str | None,
               input_bytes: int) -> None:
        self.redis.hset(self.key(job_id), mapping={
            "state": "queued", "images": len(names), "names": json.dumps(names), "outputs": json.dumps(outputs),
            "options": options_to_json(options), "webhook": webhook or "", "created": time.time(), "attempts": 0,
            "input_bytes": input_bytes})
        self.redis.expire(self.key(job_id), self.ttl)

    def put(self, job_id: str, part: str, data: bytes) -> None:
        self.redis.set(self.key(job_id, part), data, ex=self.ttl)

    def get(self, job_id: str, part: str) -> bytes | None:
        return self.redis.get(self.key(job_id, part))

    def info(self, job_id: str) -> dict | None:
        found = self.redis.hgetall(self.key(job_id))
        return {k.decode(): v.decode() for k, v in found.items()} or None

    def update(self, job_id: str, **fields) -> None:
        self.redis.hset(self.key(job_id), mapping={k: str(v) for k, v in fields.items()})

    def entries(self, job_id: str) -> dict[int, dict]:
        found = self.redis.hgetall(self.key(job_id, "entries"))
        return {int(k): json.loads(v) for k, v in found.items()}

    def record(self, job_id: str, index: int, entry: dict, body: bytes | None) -> bool:
        """Image ``index``'s answer and manifest entry, each written once; False when an earlier
        attempt already recorded it (the answer stays the first one)."""
        if body is not None:
            self.redis.set(self.key(job_id, "out", index), body, ex=self.ttl, nx=True)
        written = self.redis.hsetnx(self.key(job_id, "entries"), str(index), json.dumps(entry))
        self.redis.expire(self.key(job_id, "entries"), self.ttl)
        return bool(written)

    def keep_for_ttl(self, job_id: str, images: int) -> None:
        """Restart every key's expiry (when the job finishes: results last JOB_TTL_S from then)."""
        with self.redis.pipeline() as pipe:
            for part in ((), ("entries",), ("bg",), *[("out", n) for n in range(images)]):
                pipe.expire(self.key(job_id, *part), self.ttl)
            pipe.execute()
        self.reserve(job_id, 0, time.time() + self.ttl)

    def drop_inputs(self, job_id: str, images: int, size: int) -> None:
        """Delete the uploads (processed) and give their ``size`` bytes back."""
        self.redis.delete(*[self.key(job_id, "in", n) for n in range(images)], self.key(job_id, "bg"))
        self.release(job_id, size)
