"""The OpenAPI 3.1 description of the HTTP API, served at /api/bg/openapi.json.

Written by hand to match ``service/http/api.py``; tests check it is a valid
document, that it names exactly the app's routes, and that live answers
fit its schemas.
"""
from __future__ import annotations

from ..version import __version__
from ..config import Settings
from .params import BATCH, CHANGE_COLOR, JOBS, REMBG, REMOVE, REMOVEBG, TABLE, form_schema, query_parameters

_ERROR_CODES = {
    "400": "Missing file (`missing_file`), not an image (`not_an_image`), bad colour (`bad_color`) "
           "or another bad parameter (`bad_request`)",
    "401": "API keys are set (API_KEY, API_KEYS, API_KEYS_FILE) and `X-API-Key` is missing or wrong "
           "(`unauthorized`)",
    "429": "The API key's rate limit is reached (`rate_limited`); `Retry-After` and `X-RateLimit-Reset` say when "
           "it starts again",
    "413": "Upload over the size limit (`file_too_large`), declared pixels over the budget (`image_too_large`), "
           "or an animation over MAX_FRAMES or MAX_ANIMATION_PIXELS (`animation_too_large`)",
    "415": "A recognised image format that is not accepted (`unsupported_type`)",
    "404": "No such job (`job_not_found`: never made, or its results expired), or jobs are off on this server "
           "(`jobs_disabled`: REDIS_URL is unset)",
    "500": "The model run failed (`inference_failed`); the next request is served normally",
    "503": "The queue is full (`busy`), or the time limit passed while waiting or running (`timeout`); "
           "retry after `Retry-After` seconds",
}

_QUALITY_HEADERS = {
    "X-Mask-Confidence": {"schema": {"type": "number", "minimum": 0, "maximum": 1},
                          "description": "how far to trust the mask, read from the mask alone"},
    "X-Mask-Warning": {"schema": {"type": "string", "enum": ["empty", "full", "fragmented", "uncertain"]},
                       "description": "present where the mask looks wrong"},
}
def _json(description: str, schema: str | dict) -> dict:
    """A JSON response; ``schema`` is a component's name or an inline schema."""
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "integer", "minimum": 1},
                          "description": "requests a minute this API key may make; only for a key with a limit"},
    "X-RateLimit-Remaining": {"schema": {"type": "integer", "minimum": 0}},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "when the window ends, Unix seconds"},
}


def _error(description: str, retry: bool = False, limit: bool = False) -> dict:
    response = _json(description, "Error")
    if retry:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                               "description": "seconds"}, **(_RATE_LIMIT_HEADERS if limit else {})}
    return response


def _errors(*codes: str) -> dict:
    return {code: _error(_ERROR_CODES[code], retry=code in ("429", "503"), limit=code == "429") for code in codes}


def _image_response(media: list[str], description: str) -> dict:
    return {
        "description": description,
        "headers": {
            "X-Model-Used": {"schema": {"type": "string"}},
            "X-Processing-Time-Ms": {"schema": {"type": "integer", "minimum": 0}},
            "X-Frames": {"schema": {"type": "integer", "minimum": 2},
                         "description": "the answer's frames, where an animation was answered animated"},
            "Content-Disposition": {"schema": {"type": "string"}},
            **_QUALITY_HEADERS,
            **_RATE_LIMIT_HEADERS,
        },
        "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in media},
    }


def _upload_body(api: str, **schema_options) -> dict:
    """A multipart request body of ``api``'s fields, from the parameter table (service/http/params.py)."""
    return {"required": True, "content": {"multipart/form-data": {"schema": form_schema(api, **schema_options)}}}


def _rembg_operations() -> dict:
    """GET and POST /api/remove in rembg's terms (service/http/rembg_api.py)."""
    detail = {"description": "rembg's error shape", "content": {"application/json": {"schema": {
        "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}}}}
    answer = {"description": "the cut-out (or the mask) as PNG, at the photo's own size",
              "headers": {"X-Model-Used": {"schema": {"type": "string"}}, **_QUALITY_HEADERS},
              "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    responses = {"200": answer, **{code: detail for code in ("400", "401", "413", "415", "429", "500", "503")}}
    return {
        "get": {"summary": "rembg's server: the photo at ?url= (where ALLOW_IMAGE_URL is set)",
                "security": [{}, {"ApiKey": []}], "parameters": query_parameters(REMBG, leave_out=("file",)),
                "responses": responses},
        "post": {"summary": "rembg's server: a rembg client works by changing only its base URL",
                 "security": [{}, {"ApiKey": []}], "requestBody": _upload_body(REMBG, leave_out=("url",), closed=False),
                 "responses": responses},
    }


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "the id the submit answered (32 hex digits)"}


def _removebg_operation() -> dict:
    """POST /v1.0/removebg in remove.bg's terms (service/http/removebg.py)."""
    from .removebg import FORMATS, MODEL_SHADOWS, SHADOW_TYPES, SIZES, TYPES

    params = {
        "image_file": {"type": "string", "format": "binary"},
        "image_file_b64": {"type": "string", "description": "the image, base64"},
        "size": {"type": "string", "enum": list(SIZES), "default": "auto"},
        "format": {"type": "string", "enum": list(FORMATS), "default": "auto"},
        "channels": {"type": "string", "enum": ["rgba", "alpha"], "default": "rgba"},
        "type": {"type": "string", "enum": list(TYPES), "default": "auto"},
        "image_url": {"type": "string", "format": "uri",
                      "description": "fetched only where ALLOW_IMAGE_URL is set, from public addresses"},
        "bg_image_url": {"type": "string", "format": "uri", "description": "as image_url, for the background"},
        "scale": {"type": "string", "default": "original", "examples": ["original", "50%"],
                  "description": "the subject's share of the image along its tighter side, 10%–100%"},
        "position": {"type": "string", "default": "original", "examples": ["original", "center", "50% 100%"]},
        "roi": {"type": "string", "default": "0% 0% 100% 100%",
                "description": "x1 y1 x2 y2 in px or %: the region that may hold the subject"},
        "shadow_type": {"type": "string", "enum": [*SHADOW_TYPES, *MODEL_SHADOWS], "default": "none",
                        "description": "drop or contact: drawn from the mask; car and 3D are refused (they need a "
                                       "model this server does not have)"},
        "add_shadow": {"type": "boolean", "default": False, "description": "true: a drop shadow"},
        # what /api/bg's fields do too, under remove.bg's names
        **{param.removebg: param.schema_for(REMOVEBG) for param in TABLE if param.removebg},
    }
    errors = {"description": "remove.bg's error shape",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RemoveBgErrors"}}}}
    busy = {**errors, "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}}
    box = {f"X-{name}": {"schema": {"type": "integer", "minimum": 0}}
           for name in ("Width", "Height", "Foreground-Top", "Foreground-Left", "Foreground-Width",
                        "Foreground-Height", "Credits-Charged")}
    return {"post": {
        "summary": "remove.bg's API: a remove.bg client works by changing only its base URL",
        "security": [{}, {"RemoveBgKey": []}],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": params}},
            "application/json": {"schema": {"type": "object", "properties": {
                k: v for k, v in params.items() if k not in ("image_file", "bg_image_file")}}}}},
        "responses": {
            "200": {"description": "the result image, or with `Accept: application/json` its base64 in JSON",
                    "headers": {**box, **_QUALITY_HEADERS, **_RATE_LIMIT_HEADERS},
                    "content": {**{m: {"schema": {"type": "string", "format": "binary"}}
                                   for m in ("image/png", "image/jpeg", "image/webp", "application/zip")},
                                "application/json": {"schema": {"$ref": "#/components/schemas/RemoveBgResult"}}}},
            "400": errors, "403": errors, "413": errors, "415": errors,
            "429": {**errors, "headers": {**busy["headers"], **_RATE_LIMIT_HEADERS}}, "500": errors, "503": busy,
        },
    }}


def _account_operation() -> dict:
    """GET /v1.0/account in remove.bg's shape (service/http/removebg.py)."""
    count = {"type": "integer", "minimum": 0}
    schema = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "object", "required": ["attributes"], "properties": {"attributes": {
            "type": "object", "required": ["credits", "api"], "properties": {
                "credits": {"type": "object", "required": ["total", "subscription", "payg", "enterprise"],
                            "properties": {k: count for k in ("total", "subscription", "payg", "enterprise")},
                            "description": "all 0: nothing is bought or charged here"},
                "api": {"type": "object", "required": ["free_calls", "sizes"], "properties": {
                    "free_calls": {**count, "description": "what the key has left of its rate limit this "
                                                           "minute; 1000000 where nothing limits it"},
                    "sizes": {"type": "string", "enum": ["all"]}}}}}}}}}
    errors = {"description": "remove.bg's error shape",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RemoveBgErrors"}}}}
    return {"get": {
        "summary": "remove.bg's account call: credits (none are charged) and the calls the key has left",
        "security": [{}, {"RemoveBgKey": []}],
        "responses": {"200": {"description": "the account", "headers": _RATE_LIMIT_HEADERS,
                              "content": {"application/json": {"schema": schema}}},
                      "403": errors}}}


def openapi_document(settings: Settings) -> dict:
    number = {"type": "number"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Background-removal appliance",
            "version": __version__,
            "description": f"Removes photo backgrounds with {settings.model}. Uploads up to "
                           f"{settings.max_file_size_mb} MB; images over {settings.max_dimension} px "
                           "on the long side are processed and returned at that size.",
        },
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                           "description": "needed on POST endpoints only where API keys are set"},
                                "RemoveBgKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                                                "description": "remove.bg's header; needed only where API keys are set"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "code"], "additionalProperties": False,
                          "properties": {"error": {"type": "string"}, "code": {"type": "string"}}},
                "RemoveBgErrors": {"type": "object", "required": ["errors"], "properties": {"errors": {
                    "type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["title", "code", "detail"],
                        "properties": {"title": {"type": "string"}, "code": {"type": "string"},
                                       "detail": {"type": "string"}}}}}},
                "RemoveBgResult": {"type": "object", "required": ["data"], "properties": {"data": {
                    "type": "object",
                    "required": ["result_b64", "foreground_top", "foreground_left", "foreground_width",
                                 "foreground_height"],
                    "properties": {"result_b64": {"type": "string"},
                                   **{k: {"type": "integer", "minimum": 0} for k in (
                                       "foreground_top", "foreground_left", "foreground_width",
                                       "foreground_height")}}}}},
                "Health": {"type": "object", "required": ["status", "memory_mb", "model_loaded"],
                           "properties": {"status": {"const": "healthy"}, "memory_mb": number,
                                          "model_loaded": {"type": "boolean"}, "model": {"type": "string"},
                                          "device": {"type": "string"},
                                          "engine": {"enum": ["onnxruntime", "openvino"]},
                                          "precision": {"enum": ["float32", "bfloat16", "int8"]}}},
                "JobAccepted": {"type": "object", "required": ["id", "state", "images", "status_url"],
                                "properties": {"id": {"type": "string"}, "state": {"const": "queued"},
                                               "images": {"type": "integer"}, "status_url": {"type": "string"},
                                               "expires_in_s": {"type": "integer"}}},
                "Job": {"type": "object", "required": ["id", "state", "images", "done", "progress", "files"],
                        "properties": {
                            "id": {"type": "string"},
                            "state": {"enum": ["queued", "started", "finished", "failed"]},
                            "images": {"type": "integer"}, "done": {"type": "integer"}, "progress": number,
                            "succeeded": {"type": "integer"}, "attempts": {"type": "integer"},
                            "created": number, "finished": {"type": ["number", "null"]}, "expires_at": number,
                            "error": {"type": "string"}, "webhook_status": {"type": "string"},
                            "files": {"type": "array", "items": {"type": "object", "required": ["index", "input",
                                                                                                "status"]}}}},
                "Ready": {"type": "object", "required": ["status", "queue"],
                          "properties": {"status": {"enum": ["ready", "busy", "draining"]},
                                         "reason": {"type": "string"},
                                         "queue": {"type": "object", "required": ["admitted", "waiting_mb",
                                                                                  "expected_wait_s"],
                                                   "properties": {"admitted": {"type": "integer"},
                                                                  "waiting_mb": number,
                                                                  "expected_wait_s": number}}}},
                "Status": {"type": "object",
                           "required": ["status", "model", "memory", "max_file_size_mb", "max_dimension",
                                        "allowed_extensions"],
                           "properties": {
                               "status": {"const": "ready"}, "model": {"type": "string"},
                               "requested_model": {"type": "string"},
                               "model_fallback_reason": {"type": ["string", "null"]},
                               "model_used": {"type": "string",
                                              "description": "the model and how it runs, as X-Model-Used says it: "
                                                             "isnet-general-tiny (openvino, bf16)"},
                               "engine": {"type": "object", "required": ["name", "precision", "build"], "properties": {
                                   "name": {"enum": ["onnxruntime", "openvino"]},
                                   "precision": {"enum": ["float32", "bfloat16", "int8"]},
                                   "build": {"type": "string", "description": "the catalog build that runs"},
                                   "device": {"type": "string"}, "threads": {"type": "integer"},
                                   "fallback_reason": {"type": ["string", "null"],
                                                       "description": "why this is not the engine or precision "
                                                                      "asked for (BG_REMOVAL_FALLBACK)"}}},
                               "device": {"type": "object", "properties": {
                                   "requested": {"type": "string"}, "used": {"type": "string"},
                                   "providers": {"type": "array", "items": {"type": "string"}},
                                   "fallback_reason": {"type": ["string", "null"]},
                                   "gpu": {"type": ["object", "null"]}}},
                               "version": {"type": "string"}, "threads": {"type": "integer"},
                               "float_weights": {"type": "boolean"},
                               "cpu": {"type": "object", "properties": {
                                   "classes": {"type": "array", "items": {"type": "string"},
                                               "description": "AVX2, AVX-VNNI, AVX512, AVX512-VNNI, AVX512_BF16, "
                                                              "AMX-INT8, AMX-BF16: what this CPU has, under "
                                                              "ONEDNN_MAX_CPU_ISA where set"},
                                   "integer_class": {"type": "string"}, "exact_int8_mode": {"type": "boolean"}}},
                               "memory": {"type": "object", "required": ["rss_mb", "peak_rss_mb", "model_loaded"],
                                          "properties": {"rss_mb": number, "peak_rss_mb": number,
                                                         "model_loaded": {"type": "boolean"}}},
                               "queue": {"type": "object", "properties": {"admitted": {"type": "integer"},
                                                                          "waiting_mb": number,
                                                                          "max_waiting_mb": {"type": "integer"},
                                                                          "expected_wait_s": number}},
                               "max_file_size_mb": {"type": "integer"}, "max_dimension": {"type": "integer"},
                               "allowed_extensions": {"type": "array", "items": {"type": "string"}},
                           }},
                "ClearCache": {"type": "object",
                               "required": ["status", "memory_before_mb", "memory_after_mb", "freed_mb"],
                               "properties": {"status": {"const": "ok"}, "malloc_trim": {"type": "boolean"},
                                              "memory_before_mb": number, "memory_after_mb": number,
                                              "freed_mb": number}},
            },
        },
        "paths": {
            "/api/bg/remove": {"post": {
                "summary": "Cut the subject out: a PNG, WebP or AVIF with transparency, or the mask alone",
                "security": [{}, {"ApiKey": []}],
                "requestBody": _upload_body(REMOVE),
                "responses": {"200": _image_response(["image/png", "image/webp", "image/avif"],
                                                     "RGBA image (or the grey mask), same size as the processed image"),
                              **_errors("400", "401", "413", "415", "429", "500", "503")},
            }},
            "/api/bg/change_color": {"post": {
                "summary": "Put the subject on a colour or an image",
                "security": [{}, {"ApiKey": []}],
                "requestBody": _upload_body(CHANGE_COLOR),
                "responses": {"200": _image_response(["image/jpeg", "image/png", "image/webp", "image/avif"], "the composed photo"),
                              **_errors("400", "401", "413", "415", "429", "500", "503")},
            }},
            "/api/bg/batch": {"post": {
                "summary": "Cut out several images: one zip answered, streamed in input order, manifest.json last",
                "description": "Each image goes through the pipeline on its own turn in the queue; one that "
                               "fails is reported in manifest.json (status, code, error) and the rest go on. "
                               f"At most {settings.max_batch_files} images and {settings.max_batch // 2**20} MB "
                               "a request.",
                "security": [{}, {"ApiKey": []}],
                "requestBody": _upload_body(BATCH),
                "responses": {"200": {"description": "a zip: one entry per image that succeeded (nobg_<stem>.png), "
                                                     "then manifest.json",
                                      "content": {"application/zip": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}},
                              **_errors("400", "401", "413", "429", "503")},
            }},
            "/api/bg/jobs": {"post": {
                "summary": "Submit a job: the images and options of /api/bg/batch, answered 202 at once",
                "description": "Workers (python -m service worker) run it; poll the status URL, or name a "
                               "webhook_url to be called (signed with HMAC-SHA256) when it ends. Needs REDIS_URL.",
                "security": [{}, {"ApiKey": []}],
                "requestBody": _upload_body(JOBS),
                "responses": {"202": {**_json("queued", "JobAccepted"),
                                      "headers": {"Location": {"schema": {"type": "string"}}}},
                              **_errors("400", "401", "404", "413", "429", "503")},
            }},
            "/api/bg/jobs/{job_id}": {"get": {
                "summary": "A job's state, progress and, per image, its result's URL or its error",
                "security": [{}, {"ApiKey": []}],
                "parameters": [_JOB_ID],
                "responses": {"200": _json("the job", "Job"), **_errors("401", "404", "503")},
            }},
            "/api/bg/jobs/{job_id}/results/{index}": {"get": {
                "summary": "One image's result, until the job's results expire",
                "security": [{}, {"ApiKey": []}],
                "parameters": [_JOB_ID, {"name": "index", "in": "path", "required": True,
                                         "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": {"description": "the image", "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/webp": {"schema": {"type": "string", "format": "binary"}}}},
                    **_errors("401", "404", "503")},
            }},
            "/v1.0/removebg": _removebg_operation(),
            "/api/remove": _rembg_operations(),
            "/v1.0/account": _account_operation(),
            "/api/bg/health": {"get": {
                "summary": "Liveness, with the process memory",
                "responses": {"200": _json("healthy", "Health")},
            }},
            "/api/bg/ready": {"get": {
                "summary": "Readiness: 503 while the queue turns new images away or the server drains after SIGTERM",
                "responses": {"200": _json("ready", "Ready"),
                              "503": {**_json("busy (a full queue, a wait past the time limit) or draining", "Ready"),
                                      "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                                  "description": "seconds, when busy"}}}},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics: requests, model run and queue times, the queue, memory, the model",
                "description": "Prometheus' text format. With METRICS_REQUIRE_KEY=true it needs the API key, "
                               "in X-API-Key or as a bearer token.",
                "security": [{}, {"ApiKey": []}],
                "responses": {"200": {"description": "the metrics", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}, **_errors("401")},
            }},
            "/api/bg/status": {"get": {
                "summary": "Model, memory (RSS and peak) and limits",
                "responses": {"200": _json("ready", "Status")},
            }},
            "/api/bg/clear_cache": {"post": {
                "summary": "Give free heap memory back to the system",
                "security": [{}, {"ApiKey": []}],
                "responses": {"200": _json("memory before and after", "ClearCache"), **_errors("401")},
            }},
            "/api/bg/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
            }},
            "/": {"get": {
                "summary": "A page documenting the API, with an upload form",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {
                    "schema": {"type": "string"}}}}},
            }},
        },
    }
