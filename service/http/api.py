"""HTTP API under /api/bg, and the page at /; what it shares with the other APIs is in web.py."""
from __future__ import annotations

import math
import os
import time

from flask import Blueprint, jsonify, render_template

from ..version import __version__
from ..config import ALLOWED_EXTENSIONS
from .params import CHANGE_COLOR, REMOVE
from ..memory import peak_rss_mb, release_memory, rss_mb
from .state import admission_gate, app_state, current_engine, current_model, current_settings, require_api_key
from .web import admit_request, form_options, request_deadline, run_pipeline
from .answers import image_response
from .uploads import uploaded_file

bp = Blueprint("bg", __name__, url_prefix="/api/bg")
bp.before_request(require_api_key)
pages = Blueprint("pages", __name__)



@bp.post("/remove")
def remove():
    started, deadline = time.perf_counter(), request_deadline()
    with admit_request(deadline) as turn:
        data, stem = uploaded_file()
        options = form_options(REMOVE)
        with turn():
            result = run_pipeline(data, options, deadline)
    prefix = "mask" if options.only_mask else "nobg"
    return image_response(result, options.fmt, f"{prefix}_{stem}.{options.fmt}", started)


@bp.post("/change_color")
def change_color():
    started, deadline = time.perf_counter(), request_deadline()
    with admit_request(deadline) as turn:
        data, stem = uploaded_file()
        options = form_options(CHANGE_COLOR)
        with turn():
            result = run_pipeline(data, options, deadline)
    extension = "jpg" if options.fmt == "jpeg" else options.fmt
    return image_response(result, options.fmt, f"bg_{stem}.{extension}", started)


def _device(about: dict) -> dict:
    """The device part of the status, from the engine's :meth:`Engine.describe`."""
    return {"requested": about.get("requested_device", current_settings().device), "used": about["device"],
            "providers": about.get("providers", []), "fallback_reason": about.get("device_fallback_reason"),
            "gpu": about.get("gpu")}


@bp.get("/health")
def health():
    engine = current_engine()
    return jsonify(status="healthy", memory_mb=round(rss_mb(), 1), model_loaded=True,
                   model=engine.spec.name, device=engine.device, engine=engine.name, precision=engine.precision)


@bp.get("/ready")
def ready():
    """Readiness, for a load balancer or Kubernetes: 503 while the server drains after SIGTERM
    and while the admission gate turns new images away (a full queue, or a wait past the time
    limit); 200 otherwise. Liveness is /api/bg/health."""
    gate, settings = admission_gate(), current_settings()
    queue = {"admitted": gate.admitted, "waiting_mb": round(gate.waiting_bytes / 2**20, 1),
             "expected_wait_s": round(gate.expected_wait(), 1)}
    if app_state().draining.is_set():
        return jsonify(status="draining", reason="the server is shutting down", queue=queue), 503
    reason = gate.full(settings.request_timeout)
    if reason:
        response = jsonify(status="busy", reason=gate.REASONS[reason], queue=queue)
        response.status_code = 503
        response.headers["Retry-After"] = str(max(1, math.ceil(gate.expected_wait())))
        return response
    return jsonify(status="ready", queue=queue)


@bp.get("/status")
def status():
    settings, about = current_settings(), current_engine().describe()
    return jsonify(
        status="ready",
        model=current_engine().spec.name,
        requested_model=settings.model,
        model_fallback_reason=current_model().model_fallback,
        runs_on_fallback_model=current_model().fallback_runs,
        model_used=current_engine().label,
        engine=about,
        device=_device(about),
        version=__version__,
        threads=current_engine().threads,
        worker={"pid": os.getpid(), "workers": app_state().plan.workers,
                "concurrency": app_state().plan.concurrency},
        float_weights=settings.float_weights,
        cpu=_cpu(about),
        memory={"rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1), "model_loaded": True},
        queue={"admitted": admission_gate().admitted, "waiting_mb": round(admission_gate().waiting_bytes / 2**20, 1),
               "max_waiting_mb": settings.max_waiting // 2**20,
               "expected_wait_s": round(admission_gate().expected_wait(), 1)},
        max_file_size_mb=settings.max_file_size_mb,
        max_dimension=settings.max_dimension,
        allowed_extensions=list(ALLOWED_EXTENSIONS),
    )


def _cpu(about: dict) -> dict:
    from ..model.cpu import cpu_classes, integer_class

    return {"classes": list(cpu_classes()), "integer_class": integer_class(),
            "exact_int8_mode": bool(about.get("exact_int8_mode"))}


@bp.post("/clear_cache")
def clear_cache():
    before = rss_mb()
    trimmed = release_memory()
    after = rss_mb()
    return jsonify(
        status="ok",
        malloc_trim=trimmed,
        memory_before_mb=round(before, 1),
        memory_after_mb=round(after, 1),
        freed_mb=round(max(0.0, before - after), 1),
    )


@bp.get("/openapi.json")
def openapi():
    from .openapi import openapi_document

    return jsonify(openapi_document(current_settings()))


@pages.get("/")
def index():
    settings = current_settings()
    return render_template(
        "index.html",
        model=current_engine().spec.name,
        max_file_size_mb=settings.max_file_size_mb,
        max_dimension=settings.max_dimension,
        extensions=", ".join(ALLOWED_EXTENSIONS),
        api_key_required=bool(settings.api_keys),
    )
