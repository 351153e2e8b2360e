"""Reading what a request sends: an image (multipart file or base64 JSON) or generation settings.

Everything a user can get wrong ends here as a 4xx with a message saying what to send instead;
werkzeug refuses bodies over MAX_CONTENT_LENGTH with 413 before any of this runs.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.wsgi import LimitedStream

from synthgap.data.images import decoded_size, open_image, short_jpeg, upright_rgb

SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
# Pixel modes `to_rgb` converts (alpha on white, 16/32-bit rescaled).
MODES = {
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "RGBX",
    "RGBa",
    "LA",
    "PA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
    "I;16N",
    "F",
}
IMAGE_FIELDS = {"image", "model"}
GENERATE_FIELDS = {"prompt", "class", "seed", "steps", "guidance_scale", "model"}
HOW_TO_SEND = 'send multipart/form-data with the image in a file field \'image\', or JSON {"image": "<base64>"}'
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0


@dataclass
class Upload:
    opened: Image.Image  # its header read and checked, no pixel decoded yet (`decode`)
    data: bytes  # the bytes as sent
    format: str  # PIL's name: PNG, JPEG, ...
    model: str | None  # the model the client expects, if it named one
    min_side: int | None = None  # what the models need of the shorter side (None: every pixel)

    @property
    def pixels(self) -> int:
        """How many pixels `decode` will hold in memory: what admission counts."""
        w, h = decoded_size(self.opened, self.min_side)
        return w * h

    def decode(self) -> Image.Image:
        """RGB, EXIF orientation applied, no larger than the models need; a 400 if the pixels are corrupt."""
        return decode_pixels(self.opened, self.min_side)


def _format_from_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in SIGNATURES.items() if data.startswith(sig)), None)


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The uploaded image with its header read and checked (format, pixel count, mode, a JPEG too short for
    what it claims), no pixel decoded; or a 400 saying what is wrong with the bytes."""
    supported = "PNG, JPEG, WebP, BMP, GIF or TIFF"
    if not data:
        raise BadRequest("the image is empty (0 bytes)")
    try:
        im = open_image(data)
    except UnidentifiedImageError:
        fmt = _format_from_signature(data)
        if fmt:
            raise BadRequest(
                f"this {fmt} file cannot be decoded: an unsupported pixel mode or layout, or a corrupt header"
            ) from None
        raise BadRequest(f"not an image in a supported format: send {supported}") from None
    except Image.DecompressionBombError as e:
        raise BadRequest(f"decompression bomb refused: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadRequest(f"corrupt image: {e}") from None
    w, h = im.size
    if w * h > max_pixels:  # checked from the header, before a single pixel is decoded
        raise BadRequest(
            f"image of {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} "
            "(a decompression bomb?); send a smaller image"
        )
    if im.mode not in MODES:
        raise BadRequest(f"unsupported pixel mode '{im.mode}' ({im.format}); send an RGB, RGBA or grayscale image")
    if why := short_jpeg(im, data):
        raise BadRequest(f"corrupt JPEG image: {why}")
    return im


def decode_pixels(im: Image.Image, min_side: int | None = None) -> Image.Image:
    """An opened upload's pixels through the files' own conversion (data.images.upright_rgb: an upload is seen
    as the same file on disk would be), no larger than min_side needs; a 400 if they are corrupt."""
    try:
        return upright_rgb(im, min_side)
    except Image.DecompressionBombError as e:
        raise BadRequest(f"decompression bomb refused: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
        raise BadRequest(f"corrupt or truncated {im.format} image: {e}") from None


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> tuple[Image.Image, str]:
    """An RGB image and its format from uploaded bytes (open_upload, then decode_pixels), or a 400."""
    im = open_upload(data, max_pixels)
    return decode_pixels(im, min_side), str(im.format)


def safe_text(text: Any, limit: int | None = None) -> str:
    """Text a client sent, fit to echo in any response: what UTF-8 cannot encode (a lone surrogate, which
    JSON's \\udXXX escapes can carry) as a backslash escape, at most `limit` characters of it."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _body_goes_on(request: Request) -> bool:
    """Whether a body without a Content-Length (chunked) holds more than werkzeug read: it stops at
    MAX_CONTENT_LENGTH without a word (LimitedStream's readall), so one more byte is asked of the server."""
    stream = request.stream  # after get_data: the LimitedStream werkzeug (or its form parser) read
    if request.content_length is not None or not isinstance(stream, LimitedStream) or not stream.is_exhausted:
        return False
    try:
        return bool(request.input_stream.read(1))
    except (OSError, ValueError):  # the client went away
        return False


def _read_body(request: Request) -> None:
    """Read (and cache) the body up front; one over MAX_CONTENT_LENGTH is a 413 saying the limit, whether
    its Content-Length says so (werkzeug refuses it before reading) or a chunked body runs past it."""
    limit = request.max_content_length
    too_large = f"the request is too large: at most {limit:,} bytes are accepted" if limit is not None else None
    try:
        request.get_data(parse_form_data=True)
        if limit is not None and _body_goes_on(request):
            raise RequestEntityTooLarge
    except RequestEntityTooLarge:
        # No form then: a page showing the form back must not read the body again (and fail again).
        empty = request.parameter_storage_class()
        request.__dict__.update(form=empty, files=empty)
        raise RequestEntityTooLarge(too_large) from None


def _json_object(request: Request) -> dict:
    try:
        body = request.get_json(silent=False)
    except RecursionError:  # json.loads on very deep nesting; not a ValueError, so Flask lets it through
        raise BadRequest("the JSON body is nested too deeply") from None
    except BadRequest as e:  # Flask's message outside debug mode is "Bad Request" alone: say what is wrong
        why = e.__cause__.__context__ if e.__cause__ is not None else None  # json.loads' ValueError
        raise BadRequest(
            f"the body is not valid JSON: {safe_text(why, 200)}" if why else "the body is not valid JSON"
        ) from None
    if not isinstance(body, dict):
        raise BadRequest(f"the JSON body must be an object, got {type(body).__name__}")
    return body


def _check_fields(got: set, allowed: set[str], what: str) -> None:
    unknown = sorted(got - allowed, key=str)  # a malformed multipart part has the name None
    if unknown:
        # repr: quoted, with what cannot be printed (a lone surrogate too) escaped; long names cut short
        names = ", ".join(repr(u[:40] + "..." if isinstance(u, str) and len(u) > 40 else u) for u in unknown[:5])
        raise BadRequest(
            f"unknown field(s) {names}{' and more' if len(unknown) > 5 else ''} in {what}; "
            f"expected: {', '.join(sorted(allowed))}"
        )


def _model_field(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"field 'model' must be text (a model name from /api/models), got {type(value).__name__}")
    return value


def read_upload(request: Request, max_pixels: int, min_side: int | None = None) -> Upload:
    """The image of a classify/detect request (multipart file field 'image', or JSON with base64 'image'),
    its header checked; its pixels are decoded by `Upload.decode`, once admitted (Models.admission)."""
    _read_body(request)
    if request.mimetype == "multipart/form-data":
        _check_fields(set(request.files) | set(request.form), IMAGE_FIELDS, "the form")
        file = request.files.get("image")
        if file is None:
            if "image" in request.form:
                raise BadRequest("field 'image' must be a file upload, not text")
            raise BadRequest(f"no image: {HOW_TO_SEND}")
        data = file.read()
        model = _model_field(request.form.get("model"))
    elif request.is_json:
        body = _json_object(request)
        _check_fields(set(body), IMAGE_FIELDS, "the JSON body")
        text = body.get("image")
        if not isinstance(text, str):
            raise BadRequest(f"field 'image' must be a base64 string, got {type(text).__name__}; {HOW_TO_SEND}")
        if text.startswith("data:"):  # a data URI, as a browser's FileReader makes
            text = text.partition(",")[2]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("field 'image' is not valid base64") from None
        model = _model_field(body.get("model"))
    else:
        raise UnsupportedMediaType(f"content type '{request.mimetype or 'none'}' not accepted: {HOW_TO_SEND}")
    im = open_upload(data, max_pixels)
    return Upload(im, data, str(im.format), model, min_side)


@dataclass
class GenerateRequest:
    prompt: str | None  # exactly one of prompt and cls
    cls: str | None
    seed: int
    steps: int | None  # None: the model family's default
    guidance_scale: float | None
    model: str | None


def _number(name: str, value: Any, kind: type, low: float, high: float, from_form: bool) -> Any:
    if from_form and isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise BadRequest(
                f"field '{name}' must be a {'whole ' if kind is int else ''}number, got {value!r}"
            ) from None
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types) or (kind is float and not math.isfinite(value)):
        raise BadRequest(f"field '{name}' must be a {'whole ' if kind is int else ''}number, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"field '{name}' must be between {low:g} and {high:g}, got {value}")
    return value


def read_generate(request: Request, max_prompt_chars: int, max_steps: int, classes: list[str]) -> GenerateRequest:
    """Generation settings from a JSON body (typed values) or a form (text values; empty means absent)."""
    from_form = not request.is_json
    if from_form and request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise UnsupportedMediaType(
            f'content type \'{request.mimetype or "none"}\' not accepted: send JSON {{"prompt": "..."}} (or a form)'
        )
    _read_body(request)
    body: Mapping[str, Any] = (
        {k: v for k, v in request.form.items() if v != ""}
        if from_form  # "": left blank
        else _json_object(request)
    )
    _check_fields(set(body) | (set(request.files) if from_form else set()), GENERATE_FIELDS, "the request")
    prompt, cls = body.get("prompt"), body.get("class")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise BadRequest(f"field 'prompt' must be text, got {type(prompt).__name__}")
        prompt = prompt.strip()
        if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r" for c in prompt):
            raise BadRequest("the prompt holds control characters or invalid Unicode; send plain text")
        if not prompt:
            raise BadRequest("the prompt is empty: describe the image to generate")
        if len(prompt) > max_prompt_chars:
            raise BadRequest(f"the prompt is {len(prompt)} characters long; at most {max_prompt_chars} are accepted")
    if cls is not None:
        if not isinstance(cls, str):
            raise BadRequest(f"field 'class' must be text, got {type(cls).__name__}")
        if cls not in classes:
            raise BadRequest(f"unknown class '{cls[:100]}'; the prompt templates know: {', '.join(classes)}")
    if (prompt is None) == (cls is None):
        raise BadRequest(
            "give either a 'prompt' or a 'class' (whose prompt template fills the prompt), not both"
            if prompt is not None
            else "give a 'prompt' (or a 'class' whose prompt template fills one)"
        )
    seed = body.get("seed")
    steps = body.get("steps")
    guidance = body.get("guidance_scale")
    return GenerateRequest(
        prompt=prompt,
        cls=cls,
        seed=secrets.randbelow(MAX_SEED + 1) if seed is None else _number("seed", seed, int, 0, MAX_SEED, from_form),
        steps=None if steps is None else _number("steps", steps, int, 1, max_steps, from_form),
        guidance_scale=None
        if guidance is None
        else float(_number("guidance_scale", guidance, float, 0, MAX_GUIDANCE, from_form)),
        model=_model_field(body.get("model")),
    )
