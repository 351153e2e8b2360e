"""Hypothesis against every route of the web app (issue 29: no 5xx for any input).

Random fields, unicode (lone surrogates too), JSON shapes (nested, wrong types, huge numbers, NaN and
Infinity), image bytes (random, truncated or bit-flipped valid files, bombs' headers, tiny valid images),
sent as JSON, multipart and urlencoded forms and raw bodies, with a Content-Length or chunked; odd
methods, paths and query strings. Asserted, and only this: never a 5xx, an API error is JSON with
`error` and `status`, every body is valid UTF-8, nothing is logged at WARNING or above (no traceback with
the input) and /healthz still answers 200.

SYNTHGAP_FUZZ_EXAMPLES: examples per route (default 200: the whole file in ~15 s on 2 cores). A valid
generation request runs everything but the diffusion loop, whose image comes at once.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_serve import (  # noqa: F401 (model_files: the models, a fixture)
    MAX_PIXELS,
    MAX_UPLOAD,
    model_files,
    png_bytes,
    png_claiming,
    tiff_two_samples,
)

from synthgap.serve import ServeConfig, create_app
from synthgap.serve.inputs import GENERATE_FIELDS, IMAGE_FIELDS

FUZZ = settings(
    max_examples=int(os.environ.get("SYNTHGAP_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# Pillow warns of what it skips in a corrupt TIFF; the request still gets its answer.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
API_POSTS = ["/api/classify", "/api/detect", "/api/generate"]
PAGE_POSTS = ["/", "/check"]
ROUTES = {*API_POSTS, *PAGE_POSTS, "/models", "/healthz", "/api/models", "/api/openapi.json"}


@pytest.fixture(scope="module")
def fuzz_client(model_files, tmp_path_factory):  # noqa: F811
    cfg = ServeConfig(
        **{k: str(v) for k, v in model_files.items()},
        output=str(tmp_path_factory.mktemp("fuzz-out")),
        keep_uploads=True,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        max_steps=4,
        max_prompt_chars=200,
    )
    app = create_app(cfg)

    def render(prompt, seed, steps, guidance_scale):
        return Image.new("RGB", (32, 32), (seed % 256, 90, 160))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app.extensions["synthgap"].generator, "render", render)
        yield app.test_client()


@pytest.fixture(scope="module")
def server_log():
    """What the app logs at WARNING or above while the module runs (Flask logs a 500's traceback)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    yield records
    logging.getLogger().removeHandler(handler)


# ------------------------------------------------------------------ what a client can send

SURROGATES = ["\ud800", "\udfff", "a\udc80b", "\ud83d", "x\ud800\udc00y"]  # lone halves (JSON \u escapes)
ODD_TEXT = [
    "", " ", "NaN", "nan", "Infinity", "-Infinity", "1e999", "-0", "0x1F", "1_000", " 7 ", "١٢", "𝟕", "null",
    "true", "[]", "{}", "\x00", "a\x00b", "\u202e", "\ufeff", "\r\n", "a" * 300, "../../etc/passwd",
    "<script>alert(1)</script>", "%s%n", "cat", "bird", "frog", "airplane", "a cat",
]  # fmt: skip
texts = st.one_of(  # half of them with a lone surrogate somewhere
    st.sampled_from(SURROGATES),
    st.tuples(st.text(max_size=10), st.characters(categories=["Cs"]), st.text(max_size=10)).map("".join),
    st.sampled_from(ODD_TEXT),
    st.text(st.characters(exclude_categories=()), max_size=30),
)
encodable = st.text(max_size=30) | st.sampled_from(ODD_TEXT)  # what a form can carry: a client encodes UTF-8
numbers = (
    st.integers()
    | st.sampled_from([0, 1, 2, 3, 4, 5, -1, 2**32 - 1, 2**32, 10**30, 10**400])
    | st.floats()  # NaN and +-Infinity too: json.dumps writes them as bare words, Python reads them back
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
field_names = st.sampled_from(sorted(GENERATE_FIELDS | IMAGE_FIELDS) + ["file", "size", "Image", "image[]"]) | texts

VALID_IMAGES = [
    png_bytes(12, mode=mode, fmt=fmt)
    for mode, fmt in [
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "GIF"),
        ("RGB", "BMP"),
        ("RGB", "WEBP"),
        ("RGB", "TIFF"),
        ("CMYK", "JPEG"),
        ("1", "PNG"),
        ("LA", "PNG"),
        ("I;16", "PNG"),
        ("F", "TIFF"),
    ]
]
valid_images = st.sampled_from(VALID_IMAGES)
images = st.one_of(
    valid_images,
    valid_images,
    valid_images,
    st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a\x01\x00",
            b"BM",
            b"II*\x00",
            b"RIFF\x00\x00\x00\x00WEBP",
            png_claiming(5000, 5000),
            png_claiming(0, 0),
            png_claiming(2**31 - 1, 1),
            tiff_two_samples(),
        ]
    ),
    st.tuples(st.sampled_from(VALID_IMAGES), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
    st.tuples(st.sampled_from(VALID_IMAGES), st.integers(0, 10**6), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    ),
    st.binary(max_size=200),
)
image_texts = st.one_of(  # what a JSON body's 'image' may hold
    images.map(lambda b: base64.b64encode(b).decode()),
    images.map(lambda b: base64.b64encode(b).decode()),
    images.map(lambda b: base64.b64encode(b).decode()),
    images.map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()),
    images.map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    texts,
)
generate_bodies = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.sampled_from(["a cat", "a red bird", "  a frog  "]) | texts,
        "class": st.sampled_from(["cat", "bird", "frog", "unicorn"]) | texts,
        "seed": numbers | json_values,
        "steps": st.integers(-1, 6) | json_values,
        "guidance_scale": numbers | json_values,
        "model": st.none() | texts,
    },
)
image_bodies = st.fixed_dictionaries(
    {"image": image_texts | image_texts | json_values}, optional={"model": st.sampled_from([None, ""]) | texts}
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-16",
        "multipart/form-data",
        "multipart/form-data; boundary=b",
        "application/x-www-form-urlencoded",
        "text/plain",
        "image/png",
        "application/octet-stream",
        "*/*",
        "application/json\x00",
    ]
)


def _json_bytes(value, ascii_only: bool) -> bytes:
    """JSON as a client may send it: \\u escapes, or UTF-8 with a lone surrogate's three bytes as they are."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _raw_multipart(name: bytes, filename: bytes | None, data: bytes, rfc2231: bool) -> bytes:
    disposition = b'form-data; name="' + name + b'"'
    if filename is not None:
        disposition += (b"; filename*=utf-8''" if rfc2231 else b'; filename="') + filename + (b"" if rfc2231 else b'"')
    return b"--b\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + data + b"\r\n--b--\r\n"


raw_names = st.sampled_from(
    [b"image", b"prompt", b"model", b"\xed\xbf\xbf", b"\xff\xfe", b"%ED%BF%BF", b""]
) | st.binary(max_size=10)
json_requests = st.builds(
    lambda value, ascii_only: {"body": _json_bytes(value, ascii_only), "content_type": "application/json"},
    st.one_of(generate_bodies, image_bodies, st.dictionaries(field_names, json_values, max_size=5), json_values),
    st.booleans(),
)
raw_json_requests = st.builds(  # what json.dumps never writes
    lambda text: {"body": text.encode(), "content_type": "application/json"},
    st.sampled_from(
        [
            '{"seed": ' + "9" * 5000 + "}",  # more digits than int() takes
            '{"prompt": "a", "steps": 1e400}',
            '{"prompt": "a",}',
            '{"prompt": "a", "prompt": "b"}',
            "[" * 5000 + "]" * 5000,
            '{"prompt": "\\ud800\\udc00"}',
            '"\\udfff"',
            "\ufeff{}",
        ]
    ),
)
form_names = st.sampled_from(sorted(GENERATE_FIELDS | IMAGE_FIELDS) + ["file", "Image", ""]) | st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=10
)
filenames = (
    st.sampled_from(["x.png", "photo.jpg", "", "../../etc/passwd", 'a"b.png', "ünïcödé.png", "x" * 300, "a;b=c"])
    | encodable
)
multipart_requests = st.builds(
    lambda files, fields: {"files": files, "form": fields},
    st.dictionaries(form_names, st.tuples(images, filenames), max_size=2),
    st.dictionaries(encodable, encodable, max_size=3),
)
raw_multipart_requests = st.builds(
    lambda name, filename, data, rfc2231: {
        "body": _raw_multipart(name, filename, data, rfc2231),
        "content_type": "multipart/form-data; boundary=b",
    },
    raw_names,
    st.none() | raw_names,
    images,
    st.booleans(),
)
urlencoded_requests = st.one_of(
    st.dictionaries(st.sampled_from(sorted(GENERATE_FIELDS)) | encodable, encodable, max_size=5).map(
        lambda d: {"body": urlencode(d).encode(), "content_type": "application/x-www-form-urlencoded"}
    ),
    st.binary(max_size=100).map(lambda b: {"body": b, "content_type": "application/x-www-form-urlencoded"}),
)
raw_requests = st.builds(lambda b, ct: {"body": b, "content_type": ct}, st.binary(max_size=300), content_types)
any_request = st.one_of(
    json_requests, raw_json_requests, multipart_requests, raw_multipart_requests, urlencoded_requests, raw_requests
)

# Requests that are right, or nearly: the routes' own fields, so that the fuzz gets past the first check.
no_extra = st.just({}) | st.just({}) | st.just({}) | st.dictionaries(field_names, json_values, max_size=1)
echoed_image = st.fixed_dictionaries(  # well formed, with a value the error message repeats
    {"image": valid_images.map(lambda b: base64.b64encode(b).decode()), "model": texts}
)
image_requests = st.one_of(
    st.builds(
        lambda body, extra, ascii_only: {
            "body": _json_bytes({**body, **extra}, ascii_only),
            "content_type": "application/json",
        },
        image_bodies | echoed_image,
        no_extra,
        st.booleans(),
    ),
    st.builds(
        lambda image, filename, form: {"files": {"image": (image, filename)}, "form": form},
        images,
        filenames,
        st.just({}) | st.just({}) | st.dictionaries(st.just("model") | form_names, encodable, max_size=2),
    ),
)
good_generate = st.one_of(
    *(
        st.fixed_dictionaries(
            {key: values},
            optional={
                "seed": st.integers(0, 2**32 - 1),
                "steps": st.integers(1, 4),
                "guidance_scale": st.floats(0, 30),
                "model": st.sampled_from([None, ""]),
            },
        )
        for key, values in (
            ("prompt", st.sampled_from(["a cat", "a red bird", "  a frog  ", "ünïcödé ✓", "a" * 200]) | encodable),
            ("class", st.sampled_from(["cat", "bird", "frog", "airplane", "truck"])),
        )
    )
)
echoed_generate = st.one_of(  # well formed, with a value the error message repeats
    st.fixed_dictionaries({"class": texts}),
    st.fixed_dictionaries({"prompt": st.just("a cat"), "model": texts}),
)
generate_requests = st.one_of(
    st.builds(
        lambda body, extra, ascii_only: {
            "body": _json_bytes({**body, **extra}, ascii_only),
            "content_type": "application/json",
        },
        good_generate | generate_bodies | echoed_generate,
        no_extra,
        st.booleans(),
    ),
    (good_generate | generate_bodies).map(  # a form: text values
        lambda d: {
            "body": urlencode(
                {k: str(v).encode("utf-8", "surrogatepass") for k, v in d.items() if v is not None}
            ).encode(),
            "content_type": "application/x-www-form-urlencoded",
        }
    ),
    st.builds(
        lambda d, files: {"files": files, "form": {k: str(v) for k, v in d.items() if v is not None}},
        good_generate,
        st.just({}) | st.dictionaries(form_names, st.tuples(images, filenames), max_size=1),
    ),
)


def requests_for(url: str):
    """(request, chunked): mostly the route's own kind of request, the rest anything."""
    own = image_requests if url in ("/api/classify", "/api/detect", "/check") else generate_requests
    return st.tuples(st.one_of(own, own, own, any_request), st.booleans())


# ------------------------------------------------------------------ the checks


def check(client, r, server_log):
    path = r.request.path
    text = r.get_data().decode("utf-8")  # strict: valid UTF-8, whatever was echoed
    assert 200 <= r.status_code < 500, (r.status_code, text[:1000], [rec.getMessage() for rec in server_log])
    event(f"{r.request.method} {path if path in ROUTES else 'elsewhere'}: {r.status_code}")
    if (path.startswith("/api/") or path == "/healthz") and r.status_code >= 400 and r.request.method != "HEAD":
        body = r.get_json(silent=True)
        assert isinstance(body, dict) and body.get("status") == r.status_code, text[:1000]
        assert isinstance(body.get("error"), str) and body["error"], text[:1000]
    assert not server_log, [rec.getMessage() for rec in server_log]
    assert client.get("/healthz").status_code == 200


def send(client, url, request, chunked: bool):
    extra = (
        {"headers": {"Transfer-Encoding": "chunked"}, "environ_overrides": {"wsgi.input_terminated": True}}
        if chunked
        else {}
    )
    if "files" in request:
        data = {k: (io.BytesIO(b), filename) for k, (b, filename) in request["files"].items()}
        data.update({k: v for k, v in request["form"].items() if k not in data})
        return client.post(url, data=data, content_type="multipart/form-data", **extra)
    return client.post(url, data=request["body"], content_type=request["content_type"], **extra)


@pytest.mark.parametrize("url", API_POSTS + PAGE_POSTS)
@FUZZ
@given(data=st.data())
def test_no_post_to_any_route_gets_a_5xx(fuzz_client, server_log, url, data):
    req, chunked = data.draw(requests_for(url), label="request, chunked")
    server_log.clear()
    check(fuzz_client, send(fuzz_client, url, req, chunked), server_log)


PATHS = [
    "/",
    "/check",
    "/models",
    "/healthz",
    "/api/models",
    "/api/openapi.json",
    "/api/generate",
    "/api/detect",
    "/api/classify",
    "/api/",
    "/api/nothing",
    "/static/app.js",
    "/static/style.css",
    "/static/",
    "/static/../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/\x00",
    "/check/",
    "//",
    "/%00",
    "/api/models/",
]
paths = st.sampled_from(PATHS) | st.binary(max_size=30).map(lambda b: "/" + b.decode("latin-1"))
queries = st.one_of(
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),  # as a server passes it: bytes as latin-1
    st.lists(st.tuples(encodable, encodable), max_size=4).map(urlencode),
    st.sampled_from(["a=%ED%BF%BF", "a=%FF", "=" * 50, "&&&", "a[]=1&a[]=2", "x=" + "%" * 30]),
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"]),
    path=paths,
    query=queries,
)
def test_no_method_path_or_query_string_gets_a_5xx(fuzz_client, server_log, method, path, query):
    # PATH_INFO and QUERY_STRING as a WSGI server passes them: the request line's bytes, as latin-1
    server_log.clear()
    r = fuzz_client.open("/", method=method, environ_overrides={"PATH_INFO": path, "QUERY_STRING": query})
    check(fuzz_client, r, server_log)
