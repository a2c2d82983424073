"""Settings: the environment, read once, typed and validated at start.

Every knob of the service is a field of :class:`Settings`; nothing else reads
``os.environ``. A bad value raises :class:`ConfigError` when the app is
created, so a misconfigured deploy fails at boot, not at its first request.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .model.catalog import CATALOG, DEFAULT_MODEL
from .model.engines import ENGINES, PRECISIONS

ALLOWED_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff", "heic", "heif", "avif")


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


def default_model_dir(env: Mapping[str, str]) -> Path:
    """Per-user cache directory, as the XDG base-directory spec puts it."""
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "bg-removal"


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _count(env: Mapping[str, str], name: str, high: int) -> int:
    """A count from 1 to ``high``, or ``auto`` (and unset): 0."""
    raw = (env.get(name) or "auto").strip().lower()
    return 0 if raw == "auto" else _int(env, name, 0, 1, high)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple:
    """A comma-separated list of networks (``10.0.0.0/8, 192.168.1.5``) → ip_network objects."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in (env.get(name) or "").split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be networks like 10.0.0.0/8, separated by commas: {exc}") from None


def _api_keys(env: Mapping[str, str]) -> tuple:
    """Every key of API_KEY, API_KEYS and API_KEYS_FILE (service/http/keys.py), each once."""
    from .http.keys import KeyFileError, read_key_file

    keys = [(k, None) for k in [env.get("API_KEY") or "", *(env.get("API_KEYS") or "").split(",")] if k.strip()]
    keys = [(k.strip(), limit) for k, limit in keys]
    if env.get("API_KEYS_FILE"):
        try:
            keys += read_key_file(Path(env["API_KEYS_FILE"]).expanduser())
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
    unique: dict[str, int | None] = {}
    for key, limit in keys:
        unique[key] = limit if limit is not None else unique.get(key)
    return tuple(unique.items())


def _rate_limit(env: Mapping[str, str], keys: tuple) -> int | None:
    limit = _int(env, "RATE_LIMIT_PER_MINUTE", 0, 0, 1_000_000)
    if limit and not keys:
        raise ConfigError("RATE_LIMIT_PER_MINUTE limits each API key: set API_KEY, API_KEYS or API_KEYS_FILE too")
    return limit or None


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; ``repr`` never shows the API keys."""
    model: str = DEFAULT_MODEL
    model_dir: Path = Path()
    mirror: Path | None = None
    threads: int = 0                            # the engine's threads for one run; 0: auto (cpu.auto_threads)
    workers: int = 0                            # worker processes, each with its model; 0: auto (service/model/sizing.py)
    concurrency: int = 0                        # images each worker runs at once; 0: auto
    float_weights: bool = False                 # BG_REMOVAL_WEIGHTS=float32: faster, more memory
    device: str = "auto"                        # auto, cpu, cuda, tensorrt (service/model/device.py)
    engine: str = "auto"                        # auto, onnxruntime, openvino (service/model/engines)
    precision: str = "auto"                     # auto, float32, bfloat16, int8 (service/model/engines)
    fallback: bool = False                      # a missing device, engine or model gives way to what runs here
    max_file_size: int = 8 * 1024 * 1024       # bytes
    max_dimension: int = 1024                   # pixels, long side
    max_pixels: int = 40_000_000                # declared width × height accepted for decoding
    max_output_pixels: int = 12_000_000         # largest answer at a photo's own size (size=full)
    max_frames: int = 50                        # frames of an animated upload answered as an animation
    max_animation_pixels: int = 4_000_000       # all its frames' pixels at the processed size
    max_waiting: int = 64 * 1024 * 1024         # bytes of uploads waiting behind the running one
    max_batch: int = 64 * 1024 * 1024           # bytes of one batch request (/api/bg/batch)
    max_batch_files: int = 200                  # images in one batch request
    request_timeout: float = 60.0               # seconds from arrival to the end of the model run
    host: str = "127.0.0.1"                     # this machine only; the image sets 0.0.0.0
    port: int = 5000
    web_threads: int = 16                       # requests read and held at once (running, waiting, status)
    # API_KEY, API_KEYS, API_KEYS_FILE (service/http/keys.py): ((key, its limit or None), …); none: open
    api_keys: tuple = field(default=(), repr=False)
    rate_limit: int | None = None               # requests a minute for a key with no limit of its own
    cors_origins: tuple[str, ...] = ()          # origins allowed to call the API from a browser; "*" = any
    allow_image_url: bool = False               # remove.bg's image_url and bg_image_url (service/http/download.py)
    image_url_networks: tuple = ()              # networks trusted for image_url besides public addresses
    image_url_timeout: float = 10.0             # seconds for one download, redirects included
    metrics_require_key: bool = False           # /metrics behind API_KEY too
    shutdown_delay: float = 0.0                 # seconds served after SIGTERM with /api/bg/ready at 503
    log_level: str = "info"                     # debug adds tracebacks to a failed start
    redis_url: str | None = field(default=None, repr=False)  # jobs on (service/jobs) when set; may hold a password
    job_ttl: int = 3600                         # seconds a job's images and results are kept (from its end)
    max_queued_jobs: int = 100                  # jobs waiting for a worker; beyond, 503
    max_job_store: int = 512 * 1024 * 1024      # bytes of uploads and results all jobs may hold in Redis
    webhook_secret: str | None = field(default=None, repr=False)  # signs webhooks (HMAC-SHA256)
    webhook_networks: tuple = ()                # networks webhooks may call besides public addresses

    @property
    def max_file_size_mb(self) -> int:
        return self.max_file_size // (1024 * 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``); raise ConfigError on bad values."""
        env = os.environ if env is None else env
        model = env.get("BG_REMOVAL_MODEL") or DEFAULT_MODEL
        if model not in CATALOG:
            raise ConfigError(
                f"BG_REMOVAL_MODEL={model!r} is not a known model; choose one of {', '.join(CATALOG)}"
            )
        mirror = env.get("BG_MODEL_MIRROR")
        keys = _api_keys(env)
        return cls(
            model=model,
            model_dir=Path(env.get("MODEL_DIR") or default_model_dir(env)).expanduser(),
            mirror=Path(mirror).expanduser() if mirror else None,
            threads=_count(env, "BG_REMOVAL_THREADS", 64),
            workers=_count(env, "BG_REMOVAL_WORKERS", 64),
            concurrency=_count(env, "BG_REMOVAL_CONCURRENCY", 64),
            float_weights=_choice(env, "BG_REMOVAL_WEIGHTS", ("int8", "float32"), "int8") == "float32",
            device=_choice(env, "BG_REMOVAL_DEVICE", ("auto", "cpu", "cuda", "tensorrt"), "auto"),
            engine=_choice(env, "BG_REMOVAL_ENGINE", ENGINES, "auto"),
            precision=_choice(env, "BG_REMOVAL_PRECISION", PRECISIONS, "auto"),
            fallback=_choice(env, "BG_REMOVAL_FALLBACK", ("true", "false"), "false") == "true",
            max_file_size=_int(env, "MAX_FILE_SIZE_MB", 8, 1, 1024) * 1024 * 1024,
            max_dimension=_int(env, "MAX_DIMENSION", 1024, 32, 8192),
            max_pixels=_int(env, "MAX_PIXELS", 40_000_000, 1, 1_000_000_000),
            max_output_pixels=_int(env, "MAX_OUTPUT_PIXELS", 12_000_000, 1, 100_000_000),
            max_frames=_int(env, "MAX_FRAMES", 50, 1, 10_000),
            max_animation_pixels=_int(env, "MAX_ANIMATION_PIXELS", 4_000_000, 1, 200_000_000),
            max_waiting=_int(env, "MAX_WAITING_MB", 64, 0, 4096) * 1024 * 1024,
            max_batch=_int(env, "MAX_BATCH_MB", 64, 1, 4096) * 1024 * 1024,
            max_batch_files=_int(env, "MAX_BATCH_FILES", 200, 1, 1000),
            request_timeout=float(_int(env, "REQUEST_TIMEOUT_S", 60, 1, 3600)),
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 5000, 1, 65535),
            web_threads=_int(env, "WEB_THREADS", 16, 1, 256),
            api_keys=keys,
            rate_limit=_rate_limit(env, keys),
            cors_origins=tuple(o.strip().rstrip("/") for o in (env.get("CORS_ORIGINS") or "").split(",") if o.strip()),
            allow_image_url=_choice(env, "ALLOW_IMAGE_URL", ("true", "false"), "false") == "true",
            image_url_networks=_networks(env, "IMAGE_URL_ALLOW_NETWORKS"),
            image_url_timeout=float(_int(env, "IMAGE_URL_TIMEOUT_S", 10, 1, 300)),
            metrics_require_key=_choice(env, "METRICS_REQUIRE_KEY", ("true", "false"), "false") == "true",
            shutdown_delay=float(_int(env, "SHUTDOWN_DELAY_S", 0, 0, 25)),
            log_level=_choice(env, "LOG_LEVEL", ("debug", "info", "warning", "error"), "info"),
            redis_url=env.get("REDIS_URL") or None,
            job_ttl=_int(env, "JOB_TTL_S", 3600, 60, 30 * 86400),
            max_queued_jobs=_int(env, "MAX_QUEUED_JOBS", 100, 1, 100_000),
            max_job_store=_int(env, "MAX_JOB_STORE_MB", 512, 1, 1_000_000) * 1024 * 1024,
            webhook_secret=env.get("WEBHOOK_SECRET") or None,
            webhook_networks=_networks(env, "WEBHOOK_ALLOW_NETWORKS"),
        )
