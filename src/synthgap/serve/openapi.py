"""The OpenAPI 3.1 document of the JSON API (served at /api/openapi.json; a test checks it against
the app's routes and validates real responses with its schemas)."""

from __future__ import annotations

import synthgap


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "additionalProperties": False,
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP, BMP, GIF or TIFF"},
                    "model": {"type": "string", "description": "the model name expected (optional)"},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "additionalProperties": False,
                "properties": {
                    "image": {
                        "type": "string",
                        "contentEncoding": "base64",
                        "description": "the image file, base64 (a data: URI is accepted too)",
                    },
                    "model": {"type": "string"},
                },
            }
        },
    },
}

IMAGE_ERRORS = {
    "400": _error(
        "not an image, corrupt, too many pixels, unsupported mode, wrong or unknown field, other model named"
    ),
    "404": _error("this server runs without this model"),
    "413": _error("request body larger than the server's max_upload_bytes"),
    "415": _error("neither multipart/form-data nor JSON"),
}

PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}

PROVENANCE = {
    "type": "object",
    "required": ["verdict", "code", "why", "c2pa", "metadata", "notes"],
    "additionalProperties": False,
    "description": "what the file says about where it came from; missing metadata says nothing, unsigned metadata is a hint",
    "properties": {
        "verdict": {"type": "string"},
        "code": {
            "enum": [
                "signed_ai",
                "signed_capture",
                "signed",
                "tampered",
                "invalid",
                "unsigned_ai",
                "unsigned_capture",
                "none",
            ]
        },
        "why": {"type": "string"},
        "c2pa": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["state"],
                    "properties": {
                        "state": {
                            "enum": ["trusted", "untrusted", "valid", "tampered", "invalid", "unreadable", "timeout"],
                            "description": "untrusted: a valid signature from a signer outside the trust anchors",
                        },
                        "claim_generator": {"type": "string"},
                        "signer": {
                            "type": "object",
                            "properties": {"common_name": {"type": "string"}, "issuer": {"type": "string"}},
                        },
                        "actions": {"type": "array", "items": {"type": "object"}},
                        "failures": {"type": "array", "items": {"type": "string"}},
                        "error": {"type": "string"},
                    },
                },
            ]
        },
        "metadata": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["where", "declares", "what"],
                "properties": {
                    "where": {"type": "string"},
                    "declares": {"enum": ["ai", "capture", "software"]},
                    "what": {"type": "string"},
                    "excerpt": {"type": "string"},
                    "bytes": {"type": "integer"},
                },
            },
        },
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}

ANSWER = {
    "type": "object",
    "required": ["verdict", "decided_by", "why"],
    "additionalProperties": False,
    "description": "one answer from the provenance and the pixel detector, and which evidence decided",
    "properties": {
        "verdict": {"enum": ["real", "synthetic", "unsure", "outside the training domain", "unknown"]},
        "decided_by": {"enum": ["C2PA manifest", "pixel detector", "nothing"]},
        "why": {"type": "string"},
    },
}

SCHEMAS = {
    "Provenance": PROVENANCE,
    "Answer": ANSWER,
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Classification": {
        "type": "object",
        "required": ["model", "label", "probabilities"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string"},
            "label": {"type": "string"},
            "probabilities": {
                "type": "array",
                "description": "every class, most probable first",
                "items": {
                    "type": "object",
                    "required": ["class", "probability"],
                    "additionalProperties": False,
                    "properties": {"class": {"type": "string"}, "probability": PROBABILITY},
                },
            },
            "provenance": {"$ref": "#/components/schemas/Provenance"},
        },
    },
    "Detection": {
        "type": "object",
        "required": [
            "model",
            "p_synthetic",
            "p_range",
            "threshold",
            "unsure_band",
            "verdict",
            "rule",
            "reliable",
            "why",
            "domain",
            "provenance",
            "answer",
        ],
        "additionalProperties": False,
        "properties": {
            "model": {
                "type": ["string", "null"],
                "description": "the detector that answered; null when several detectors are served and none "
                "covers the image",
            },
            "p_synthetic": {
                "oneOf": [PROBABILITY, {"type": "null"}],
                "description": "P(AI-generated); null when no detector covers the image (several served)",
            },
            "p_range": {
                "oneOf": [{"type": "array", "items": PROBABILITY, "minItems": 2, "maxItems": 2}, {"type": "null"}],
                "description": "P over the image and its mild perturbations (JPEG q90, x0.75, 1 px shift)",
            },
            "threshold": {"oneOf": [PROBABILITY, {"type": "null"}]},
            "unsure_band": {
                "oneOf": [{"type": "array", "items": PROBABILITY, "minItems": 2, "maxItems": 2}, {"type": "null"}]
            },
            "verdict": {"enum": ["real", "synthetic", "unsure", "outside the training domain"]},
            "rule": {
                "enum": ["threshold", "near_threshold", "not_confidently_real", "unstable", "outside_domain"],
                "description": "which rule gave the verdict",
            },
            "reliable": {"type": "boolean", "description": "false: do not act on p_synthetic"},
            "why": {"type": "string"},
            "domain": {
                "type": "object",
                "required": ["inside", "why"],
                "properties": {"inside": {"type": "boolean"}, "why": {"type": "array", "items": {"type": "string"}}},
            },
            "answered_by": {
                "oneOf": [{"$ref": "#/components/schemas/DetectorSummary"}, {"type": "null"}],
                "description": "the detector that answered (the first, in the served order, whose training domain "
                "holds the image); null when none covers it",
            },
            "routing": {
                "type": "object",
                "required": ["order", "tried"],
                "description": "the detectors in the order they are asked, and what each one tried said",
                "properties": {
                    "order": {"type": "array", "items": {"type": "string"}},
                    "tried": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "inside", "why"],
                            "properties": {
                                "name": {"type": "string"},
                                "inside": {"type": "boolean"},
                                "why": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                },
            },
            "views": {
                "type": "object",
                "required": ["n", "p_min", "p_max", "p_std"],
                "description": "a detector reading windows at the image's own scale: p_synthetic "
                "is the mean over n windows; their spread",
                "properties": {
                    "n": {"type": "integer", "minimum": 2},
                    "p_min": PROBABILITY,
                    "p_max": PROBABILITY,
                    "p_std": {"type": "number", "minimum": 0},
                },
            },
            "provenance": {"$ref": "#/components/schemas/Provenance"},
            "answer": {"$ref": "#/components/schemas/Answer"},
        },
    },
    "DetectorSummary": {
        "type": "object",
        "required": ["name", "backbone", "input"],
        "properties": {
            "name": {"type": "string", "description": "detector.json's name, else its folder's name"},
            "backbone": {"type": ["string", "null"]},
            "input": {"type": "string", "description": "its input chain, e.g. 'windows at native scale'"},
            "test_auc": {"type": ["number", "null"]},
            "test_accuracy": {"type": ["number", "null"]},
            "probes": {
                "type": "object",
                "description": "what file metadata alone and content alone (thumbnails) achieve on the same "
                "test split, and what the detector gets beyond them (when the bundle records them)",
                "properties": {
                    "metadata": {"type": "object"},
                    "content": {"type": "object"},
                    "credited": {"type": "string"},
                },
            },
        },
    },
    "GenerateRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "exactly one of prompt and class",
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "class": {"type": "string", "description": "a class of the prompt templates (see /api/models)"},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "description": "default: random"},
            "steps": {"type": "integer", "minimum": 1, "description": "default: the model family's"},
            "guidance_scale": {"type": "number", "minimum": 0, "maximum": 30},
            "model": {"type": "string"},
        },
    },
    "Generation": {
        "type": "object",
        "additionalProperties": False,
        "required": ["image", "prompt", "seed", "steps", "guidance_scale", "model", "width", "height", "seconds"],
        "properties": {
            "image": {
                "type": "string",
                "contentEncoding": "base64",
                "contentMediaType": "image/png",
                "description": "PNG with the generation record in its text chunks, marked AI-generated in XMP "
                "(and a signed C2PA manifest if the server signs)",
            },
            "prompt": {"type": "string"},
            "negative_prompt": {"type": "string"},
            "class": {"type": ["string", "null"]},
            "seed": {"type": "integer"},
            "steps": {"type": "integer"},
            "guidance_scale": {"type": "number"},
            "model": {"type": "string"},
            "scheduler": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "seconds": {"type": "number"},
            "saved": {"type": ["string", "null"], "description": "path under the output folder, if any"},
            "classifier": {"oneOf": [{"$ref": "#/components/schemas/Classification"}, {"type": "null"}]},
            "detector": {"oneOf": [{"$ref": "#/components/schemas/Detection"}, {"type": "null"}]},
            "provenance": {"$ref": "#/components/schemas/Provenance"},
            "answer": {"$ref": "#/components/schemas/Answer"},
        },
    },
    "Models": {
        "type": "object",
        "required": ["classifier", "detector", "generator", "retention"],
        "properties": {
            **{k: {"type": ["object", "null"]} for k in ("classifier", "detector", "generator")},
            "retention": {
                "type": "object",
                "description": "what the server keeps on disk and for how long (limits: null when nothing is kept)",
                "required": ["writes", "max_bytes", "max_files", "max_age_hours", "summary"],
                "properties": {
                    "writes": {"type": "array", "items": {"enum": ["generated images", "uploads"]}},
                    "max_bytes": {"type": ["integer", "null"]},
                    "max_files": {"type": ["integer", "null"]},
                    "max_age_hours": {"type": ["number", "null"]},
                    "summary": {"type": "string"},
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "models"],
        "properties": {
            "status": {"const": "ok"},
            "models": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    },
}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "synthgap",
            "version": synthgap.__version__,
            "description": "Generate images and check them: a classifier's classes and a detector's P(AI-generated).",
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "liveness and which models are loaded",
                    "operationId": "healthz",
                    "responses": {"200": _json("Health", "up")},
                }
            },
            "/api/models": {
                "get": {
                    "summary": "the loaded models, their metrics and provenance",
                    "operationId": "models",
                    "responses": {"200": _json("Models", "the models")},
                }
            },
            "/api/classify": {
                "post": {
                    "summary": "the classifier's classes for one image",
                    "operationId": "classify",
                    "requestBody": IMAGE_BODY,
                    "responses": {"200": _json("Classification", "classes"), **IMAGE_ERRORS},
                }
            },
            "/api/detect": {
                "post": {
                    "summary": "the detector's probability that one image is AI-generated, the file's provenance, one answer",
                    "operationId": "detect",
                    "requestBody": IMAGE_BODY,
                    "responses": {"200": _json("Detection", "P(AI) and verdict"), **IMAGE_ERRORS},
                }
            },
            "/api/generate": {
                "post": {
                    "summary": "generate one image; the classifier and the detector look at it",
                    "operationId": "generate",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/GenerateRequest"}
                            },
                        },
                    },
                    "responses": {
                        "200": _json("Generation", "the image and what the models say"),
                        "400": _error(
                            "empty or over-long prompt, unknown class, bad number, unknown field, other model named"
                        ),
                        "404": _error("this server runs without a generator"),
                        "413": _error("request body too large"),
                        "415": _error("not JSON or a form"),
                        "429": {
                            **_error("the generator's queue is full"),
                            "headers": {
                                "Retry-After": {
                                    "schema": {"type": "integer"},
                                    "description": "seconds until the jobs in line (of every worker) are expected done",
                                }
                            },
                        },
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "this document",
                    "operationId": "openapi",
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
