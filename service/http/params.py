"""Every request option of the HTTP APIs, declared once.

A :class:`Param` says a field's name, its JSON Schema (type, range, choices, default), what it does,
which operations take it, remove.bg's name for it where remove.bg takes it too, and the pipeline
option (:class:`service.pipeline.Options`) it sets. From the table come:

- reading a form: :func:`read_form` checks every field of a request against its operation (an
  unknown one is refused, naming the nearest known name), reads each given field by its schema,
  and refuses a field given without the one it needs or with one it does not go with;
- the Options of what was read (:func:`options_of`), for every field that maps onto one;
- the OpenAPI document's request bodies (:func:`form_schema`), remove.bg's included.

What depends on several fields at once or on the server's settings (a background from a colour or an
image, the canvas and its padding, ``size``) is done by the code that reads the form
(:func:`service.http.web.form_options`); a field that maps straight onto an option needs no code there.
"""
from __future__ import annotations

import difflib
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from PIL import ImageColor

from ..imaging.effects import BLUR_MAX, OUTLINE_MAX, SHADOWS
from ..errors import BadColor, BadRequest
from ..imaging.geometry import ALIGNMENTS, parse_margin
from ..imaging.compose import parse_color

REMOVE, CHANGE_COLOR, BATCH, JOBS, REMOVEBG, REMBG = "remove", "change_color", "batch", "jobs", "removebg", "rembg"
# The operations under /api/bg that take a photo and the options of its answer.
FORM = (REMOVE, CHANGE_COLOR, BATCH, JOBS)
# The paths of the operations, for the messages.
PATHS = {REMOVE: "/api/bg/remove", CHANGE_COLOR: "/api/bg/change_color", BATCH: "/api/bg/batch",
         JOBS: "/api/bg/jobs", REMOVEBG: "/v1.0/removebg", REMBG: "/api/remove"}

_BINARY = {"type": "string", "format": "binary"}
_BOOLEAN = {"type": "boolean"}
_COLOR = {"type": "string", "examples": ["#00ff00", "00ff00", "#0f0", "0,255,0", "teal", "rgba(0,0,255,0.5)",
                                         "transparent"]}
_BYTE = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # 0–255, no leading zeros
_COLOR_HELP = ("#RRGGBB, RRGGBB, #RGB, #RRGGBBAA, R,G,B (0–255), rgba(r,g,b,alpha 0–1), a CSS colour name, or "
               "transparent; alpha only where the format has it (PNG, WebP)")


_NOTHING = object()  # no value asks for nothing


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Param:
    """One request field.

    ``schema``: its JSON Schema as the OpenAPI document shows it (``per_api`` replaces parts of it
    for some operations), and what :meth:`parse` checks when no ``read`` function is given: a
    boolean is ``true`` or ``false``; a choice one of ``enum`` (any case); a number or an integer
    within ``minimum``/``exclusiveMinimum`` and ``maximum``. ``read``: the field's text → its value
    (BadRequest when it is wrong). ``option``: the Options field its value sets, through
    ``to_option`` (None: its operation's code reads it). ``needs``: a field that must be given, and
    not off (false, none), for this one to mean anything. ``not_with``: fields that, given and not
    off, this one does not go with. ``off``: the value that asks for nothing (a choice's "none")."""
    name: str
    schema: dict
    help: str
    apis: tuple[str, ...] = FORM
    option: str | None = None
    to_option: Callable[[Any], Any] = _same
    read: Callable[[str], Any] | None = None
    needs: str | None = None
    not_with: tuple[str, ...] = ()
    off: Any = _NOTHING
    aliases: Mapping[str, str] = field(default_factory=dict)
    why_not: Mapping[str, str] = field(default_factory=dict)
    removebg: str | None = None
    per_api: Mapping[str, dict] = field(default_factory=dict)

    def schema_for(self, api: str) -> dict:
        return {**self.schema, **self.per_api.get(api, {}), "description": self.help}

    def parse(self, text: str, api: str) -> Any:
        """The field's text → its value, checked against its schema for ``api``."""
        if self.read is not None:
            return self.read(text)
        schema = self.schema_for(api)
        kind, value = schema["type"], text.strip()
        if "enum" in schema:
            choice = self.aliases.get(value.lower(), value.lower())
            if choice not in schema["enum"]:
                why = f"; {self.why_not[choice]}" if choice in self.why_not else ""
                raise BadRequest(f"{self.name} must be one of {', '.join(map(str, schema['enum']))}, got "
                                 f"{text[:40]!r}{why}")
            return choice
        if kind == "boolean":
            if value.lower() not in ("true", "false"):
                raise BadRequest(f"{self.name} must be true or false, got {text[:20]!r}")
            return value.lower() == "true"
        if kind in ("integer", "number"):
            return self._number(value, schema, text)
        return value

    def _number(self, value: str, schema: dict, text: str) -> float | int:
        low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
        try:
            number = int(value) if schema["type"] == "integer" else float(value.rstrip("%"))
        except ValueError:
            number = None
        if (number is None or number != number or (low is not None and number < low)
                or ("exclusiveMinimum" in schema and number <= low) or (high is not None and number > high)):
            whole = "a whole number" if schema["type"] == "integer" else "a number"
            bounds = (f"above {low:g}" if "exclusiveMinimum" in schema else f"from {low:g}") + f" to {high:g}"
            raise BadRequest(f"{self.name} must be {whole} {bounds}, got {text[:20]!r}")
        return number

    def is_on(self, value: Any) -> bool:
        """Whether a given value asks for something (not false, not ``off``)."""
        return value is not False and value != self.off


def _color(name: str) -> Callable[[str], Any]:
    def read(text: str):
        try:
            return parse_color(text)
        except BadColor as exc:
            raise BadColor(f"{name}: {exc.message}") from None
    return read


def _visible_color(text: str):
    value = _color("outline_color")(text)
    if value is None:
        raise BadColor("outline_color: an outline needs a visible colour, not transparent")
    return value


def _margin(text: str):
    return parse_margin(text)


TABLE: tuple[Param, ...] = (
    Param("file", _BINARY, "the image (PNG, JPEG, WebP, BMP, GIF, TIFF, HEIC/HEIF, AVIF); its format is sniffed "
          "from the bytes", apis=(*FORM, REMBG), per_api={BATCH: {"type": "array", "items": _BINARY, "format": None},
                                     JOBS: {"type": "array", "items": _BINARY, "format": None}}),
    Param("format", {"type": "string", "enum": ["png", "webp", "avif"], "default": "png"},
          "WebP: lossy colour (quality 90), lossless alpha; AVIF: lossy colour and alpha (quality 85), not with "
          "only_mask; JPEG (change_color): no transparency", option="fmt", aliases={"jpg": "jpeg"},
          why_not={"jpeg": "JPEG has no transparency: /api/bg/change_color answers JPEG on a colour"},
          per_api={CHANGE_COLOR: {"enum": ["jpeg", "jpg", "png", "webp", "avif"], "default": "jpeg"}}),
    Param("only_mask", {**_BOOLEAN, "default": False},
          "answer the 8-bit mask (grey, 255 = subject) instead of the cut-out", apis=(REMOVE, BATCH, JOBS),
          option="only_mask"),
    Param("refine", {**_BOOLEAN, "default": False},
          "fit the mask's soft edges (hair, fur) to the photo at full resolution", option="refine"),
    Param("semitransparency", {**_BOOLEAN, "default": True},
          "false: every pixel fully kept or fully removed (alpha 0 or 255), no soft edges", option="hard_edges",
          to_option=operator.not_, removebg="semitransparency"),
    Param("color", _COLOR, "a colour to put the subject on: " + _COLOR_HELP, read=_color("color"),
          removebg="bg_color", per_api={CHANGE_COLOR: {"anyOf": [
              {"pattern": "^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"}, {"pattern": f"^{_BYTE},{_BYTE},{_BYTE}$"},
              {"enum": sorted(ImageColor.colormap)}]}}),
    Param("bg_image_file", _BINARY, "an image to put the subject on, scaled to cover; instead of color",
          removebg="bg_image_file"),
    Param("crop", {**_BOOLEAN, "default": False}, "cut the answer to the subject", option="crop", removebg="crop"),
    Param("crop_margin", {"type": "string", "default": "0", "examples": ["30px", "10%", "10px 5%"]},
          "with crop: one, two or four values, px or % of the subject", option="crop_margin", read=_margin,
          removebg="crop_margin"),
    Param("size", {"type": "string", "enum": ["default", "full"], "default": "default"},
          "default: at most MAX_DIMENSION on the long side; full: the photo's own size, up to MAX_OUTPUT_PIXELS "
          "(413 beyond)"),
    Param("shadow", {"type": "string", "enum": ["none", *SHADOWS], "default": "none"},
          "a shadow drawn from the mask under the cut-out: drop (offset, soft) or contact (flattened under the "
          "subject's base)", option="shadow", to_option=lambda kind: None if kind == "none" else kind, off="none",
          not_with=("only_mask",)),
    Param("shadow_opacity", {"type": "number", "minimum": 0, "maximum": 100, "default": 50},
          "percent; only with a shadow", option="shadow_opacity", to_option=lambda percent: percent / 100,
          needs="shadow", removebg="shadow_opacity"),
    Param("outline_width", {"type": "integer", "minimum": 1, "maximum": OUTLINE_MAX},
          "a border this many pixels wide round the subject (a sticker's)", option="outline_width",
          not_with=("only_mask",)),
    Param("outline_color", {**_COLOR, "default": "white"}, "the border's colour; with outline_width",
          option="outline_color", read=_visible_color, needs="outline_width"),
    Param("output_size", {"type": "string", "pattern": "^[0-9]+x[0-9]+$", "examples": ["1000x1000"]},
          "a canvas of WIDTHxHEIGHT pixels (up to MAX_OUTPUT_PIXELS, 413 beyond), the subject fitted inside the "
          "padding, from the cut-out at the size asked (size=full for a canvas larger than the default's)"),
    Param("padding", {"type": "string", "examples": ["0.1", "10%", "50px"]},
          "with output_size: room between the subject and each edge, a ratio 0–0.49, a percentage or pixels",
          needs="output_size"),
    *(Param(name, {"type": "string", "enum": list(places), "default": "center"}, "with output_size",
            needs="output_size") for name, places in ALIGNMENTS.items()),
    Param("bg_blur", {"type": "number", "exclusiveMinimum": 0, "maximum": round(BLUR_MAX * 100, 6)},
          "keep the photo's own background, blurred by this radius in % of its long side (2: a portrait look); "
          "instead of a colour or image, not with crop or output_size", option="bg_blur",
          to_option=lambda percent: percent / 100,
          not_with=("only_mask", "color", "bg_image_file", "crop", "output_size")),
    Param("frames", {"type": "string", "enum": ["all", "first"], "default": "all"},
          "all: an animated GIF, WebP or APNG is answered animated, every frame cut out (png, webp or avif; up to "
          "MAX_FRAMES and MAX_ANIMATION_PIXELS, 413 animation_too_large beyond); first: its first frame alone",
          option="frames"),
    Param("webhook_url", {"type": "string", "format": "uri"}, "called with the job's summary when it ends",
          apis=(JOBS,)),
    # rembg's server (rembg s), on /api/remove: its names, form or query (service/http/rembg_api.py)
    Param("url", {"type": "string", "format": "uri"}, "GET: the photo's address, fetched where ALLOW_IMAGE_URL is "
          "set, from public addresses only", apis=(REMBG,)),
    Param("model", {"type": "string", "examples": ["isnet-general-use", "u2netp"]}, "the model this server "
          "serves (BG_REMOVAL_MODEL), by its name or rembg's; another is refused", apis=(REMBG,)),
    Param("a", {**_BOOLEAN, "default": False}, "alpha matting: this server's edge refinement (refine=true)",
          apis=(REMBG,), option="refine"),
    *(Param(name, {"type": "integer", "minimum": 0, "maximum": 255 if name != "ae" else 1000, "default": default},
            f"rembg's alpha matting {about}: accepted, unused (the refinement here needs none)", apis=(REMBG,))
      for name, default, about in (("af", 240, "foreground threshold"), ("ab", 10, "background threshold"),
                                   ("ae", 10, "erode size"))),
    Param("om", {**_BOOLEAN, "default": False}, "only the mask (grey, 255 = subject)", apis=(REMBG,),
          option="only_mask"),
    Param("ppm", {**_BOOLEAN, "default": False}, "post-process the mask: opened, blurred, cut at 127 into 0 or 255",
          apis=(REMBG,)),
    Param("bgc", {"type": "string", "examples": ["[255, 255, 255, 255]"]}, "a background colour as a JSON list "
          "[R, G, B, A], 0–255", apis=(REMBG,)),
    Param("extras", {"type": "string"}, "rembg's session options (JSON): accepted, unused", apis=(REMBG,)),
)
BY_NAME = {param.name: param for param in TABLE}


def params(api: str) -> dict[str, Param]:
    """The fields ``api`` takes, by name."""
    return {param.name: param for param in TABLE if api in param.apis}


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one, if any is close."""
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def check_names(api: str, given: Iterable[str]) -> None:
    """BadRequest for the first field ``api`` does not take, with the nearest name it does."""
    known = params(api)
    for name in given:
        if name not in known:
            guess = nearest(name, known)
            hint = f": did you mean {guess!r}?" if guess else "."
            raise BadRequest(f"{PATHS[api]} takes no field {name[:40]!r}{hint} Its fields are "
                             f"{', '.join(known)} (/api/bg/openapi.json)")


def read_form(api: str, texts: Mapping[str, str], files: Iterable[str] = (), strict: bool = True) -> dict[str, Any]:
    """The given fields of ``api`` (``texts``: field → its text; ``files``: the uploaded fields'
    names), each read by its schema; unknown names (unless not ``strict``: then they are left
    unread, as rembg's server leaves them), a field without the one it ``needs`` and a field with
    one it does not go with are refused."""
    known = params(api)
    if strict:
        check_names(api, [*texts, *files])
    texts = {name: text for name, text in texts.items() if name in known}
    files = [name for name in files if name in known]
    values = {name: BY_NAME[name].parse(text, api) for name, text in texts.items()}
    values.update({name: True for name in files})
    for name, value in values.items():
        param = BY_NAME[name]
        if param.needs and not (param.needs in values and BY_NAME[param.needs].is_on(values[param.needs])):
            raise BadRequest(f"{name} goes with {param.needs}: give {param.needs} too")
        if param.is_on(value):
            for other in param.not_with:
                if other in values and BY_NAME[other].is_on(values[other]):
                    raise BadRequest(f"{name} does not go with {other} ({name}: {param.help})")
    return values


def options_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """The Options fields the read values set, for every field that maps onto one."""
    return {BY_NAME[name].option: BY_NAME[name].to_option(value) for name, value in values.items()
            if BY_NAME[name].option}


def form_schema(api: str, leave_out: Iterable[str] = (), closed: bool = True) -> dict:
    """The multipart form's JSON Schema for ``api`` (``file`` required), without the fields
    ``leave_out``; ``closed``: unknown fields refused (rembg's server leaves them unread)."""
    properties = {name: param.schema_for(api) for name, param in params(api).items() if name not in leave_out}
    for schema in properties.values():
        if schema.get("format") is None:
            schema.pop("format", None)
    return {"type": "object", "required": ["file"], "properties": properties, "additionalProperties": not closed}


def query_parameters(api: str, leave_out: Iterable[str] = ()) -> list[dict]:
    """``api``'s fields as OpenAPI query parameters (for a GET)."""
    return [{"name": name, "in": "query", "required": name == "url", "schema": param.schema_for(api)}
            for name, param in params(api).items() if name not in leave_out]
