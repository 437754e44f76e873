"""Problem details (RFC 9457) as the OpenAPI document states them: the schemas, and the error
responses each route declares. The app renders every error through one handler (`credence.errors`,
which also defines the problem's schema); this module only says, route by route, which errors a
client can meet.
"""

from __future__ import annotations

from typing import Any

from ..errors import PROBLEM_MEDIA_TYPE, FieldError, Problem

__all__ = ["DESCRIPTIONS", "PROBLEM_MEDIA_TYPE", "UPLOAD_BODY", "UPLOAD_ERRORS", "FieldError", "Problem",
           "problem_response", "problems"]

#: What each status means in this API, for the OpenAPI document.
DESCRIPTIONS = {
    400: "Malformed request (a multipart body that does not parse, JSON that is not JSON; on the C2PA "
         "resolution routes, any invalid parameter)",
    401: "No valid API key (send `Authorization: Bearer KEY` or `X-API-Key: KEY`)",
    403: "The key does not carry the scope this route needs",
    409: "Conflict with the resource's state",
    429: "Over the client's request or daily generation quota; `Retry-After` says when to try again",
    404: "No such resource",
    408: "The request body stopped arriving (CREDENCE_BODY_TIMEOUT); the connection is closed",
    410: "The resource existed but is no longer on this server",
    413: "The upload is over the size or duration limit (CREDENCE_MAX_UPLOAD_BYTES, CREDENCE_MAX_UPLOAD_SECONDS)",
    415: "Unsupported content type",
    422: "Invalid request: `errors` names each bad field; for an upload, a file that is not a readable video",
    503: "Busy (every slot and queue place taken), timed out, or a dependency (ledger, keys, models) is "
         "unavailable; `Retry-After` says when to try again",
}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One OpenAPI response object whose body is a problem."""
    response: dict[str, Any] = {
        "description": description or DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                               "schema": {"type": "integer", "minimum": 0}, "required": False}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": False}}
    return response


def problems(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route: `problems(401, 404, s503="ledger unavailable")`."""
    out: dict[int | str, dict[str, Any]] = {status: problem_response(status) for status in statuses}
    for key, text in described.items():
        status = int(key.removeprefix("s"))
        out[status] = problem_response(status, text)
    return out


#: The request body of the upload routes: multipart with a `file` part, or the raw video bytes.
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "description": "The clip: a multipart form whose `file` part holds it, or the video bytes as the body "
                   "(`video/*` or `application/octet-stream`). Every byte of the body counts toward "
                   "CREDENCE_MAX_UPLOAD_BYTES (multipart envelope and other fields: at most 64 KiB more).",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary",
                                               "description": "The video file (MP4, MOV, AVI, WebM, MKV)."}}},
        },
        "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

UPLOAD_ERRORS = problems(400, 401, 403, 408, 413, 415, 422, 429, 503)
