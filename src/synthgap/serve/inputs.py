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

from synthgap.data.images import open_image, upright_rgb

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
    image: Image.Image  # RGB, EXIF orientation applied
    data: bytes  # the bytes as sent
    format: str  # PIL's name: PNG, JPEG, ...
    model: str | None  # the model the client expects, if it named one


def _format_from_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in SIGNATURES.items() if data.startswith(sig)), None)


def decode_image(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """An RGB image and its format from uploaded bytes, or a 400 saying what is wrong with them."""
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
    try:  # the files' own conversion (data.images.upright_rgb): an upload is seen as the same file on disk would be
        return upright_rgb(im), str(im.format)
    except Image.DecompressionBombError as e:
        raise BadRequest(f"decompression bomb refused: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
        raise BadRequest(f"corrupt or truncated {im.format} image: {e}") from None


def _read_body(request: Request) -> None:
    """Read (and cache) the body up front; werkzeug refuses one over MAX_CONTENT_LENGTH: say the limit."""
    try:
        request.get_data(parse_form_data=True)
    except RequestEntityTooLarge:
        raise RequestEntityTooLarge(
            f"the request is too large: at most {request.max_content_length:,} bytes are accepted"
        ) from None


def _json_object(request: Request) -> dict:
    try:
        body = request.get_json(silent=False)
    except RecursionError:  # json.loads on very deep nesting; not a ValueError, so Flask lets it through
        raise BadRequest("the JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the JSON body must be an object, got {type(body).__name__}")
    return body


def _check_fields(got: set, allowed: set[str], what: str) -> None:
    unknown = sorted(got - allowed, key=str)  # a malformed multipart part has the name None
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(repr(u) for u in unknown)} in {what}; expected: {', '.join(sorted(allowed))}"
        )


def _model_field(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"field 'model' must be text (a model name from /api/models), got {type(value).__name__}")
    return value


def read_upload(request: Request, max_pixels: int) -> Upload:
    """The image of a classify/detect request: multipart file field 'image', or JSON with base64 'image'."""
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
    image, fmt = decode_image(data, max_pixels)
    return Upload(image, data, fmt, model)


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
