"""What real S3 clients ask for, and whether an IAM policy lets them.

``RecordingS3Proxy`` sits on 127.0.0.1 between a client (Triton, the engine-build Job) and moto's S3 server and
records every request. ``authorization`` names the IAM action, resource and condition keys S3 authorises each
request by (AWS's "Actions, resources, and condition keys for Amazon S3"), and ``is_allowed`` evaluates an
identity policy the way IAM does: an explicit Deny wins, else some Allow must match; a condition on a key the
request does not carry does not match, unless its operator ends in ``IfExists``.
"""

from __future__ import annotations

import fnmatch
import http.client
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Response headers that describe the proxy's own connection, not the S3 reply.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str  # path-style: /bucket or /bucket/key, percent-decoded
    query: Mapping[str, str]

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" if v else k for k, v in sorted(self.query.items()))
        return f"{self.method} {self.path}{'?' + query if query else ''}"


@dataclass(frozen=True)
class Authorization:
    action: str
    resource: str
    context: Mapping[str, str]


def authorization(request: S3Request, partition: str = "aws") -> Authorization:
    """The action, resource and request-context keys S3 authorises ``request`` by."""
    bucket, _, key = request.path.lstrip("/").partition("/")
    q, method = request.query, request.method
    if not key:
        arn = f"arn:{partition}:s3:::{bucket}"
        if method == "HEAD":  # HeadBucket is authorised as s3:ListBucket, and carries no s3:prefix
            return Authorization("s3:ListBucket", arn, {})
        if method == "GET" and not set(q) - {
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "encoding-type",
            "marker",
            "fetch-owner",
        }:
            context = {"s3:prefix": q["prefix"]} if "prefix" in q else {}
            if "delimiter" in q:
                context["s3:delimiter"] = q["delimiter"]
            return Authorization("s3:ListBucket", arn, context)
        if method == "GET" and "location" in q:
            return Authorization("s3:GetBucketLocation", arn, {})
        raise ValueError(f"no IAM mapping for bucket request {request}")
    arn = f"arn:{partition}:s3:::{bucket}/{key}"
    if method in ("GET", "HEAD") and "uploadId" not in q:
        return Authorization("s3:GetObject", arn, {})
    if method in ("PUT", "POST") and not set(q) - {"uploads", "uploadId", "partNumber", "x-id"}:
        return Authorization("s3:PutObject", arn, {})  # PutObject, and every step of a multipart upload
    if method == "DELETE" and "uploadId" in q:
        return Authorization("s3:AbortMultipartUpload", arn, {})
    if method == "DELETE":
        return Authorization("s3:DeleteObject", arn, {})
    raise ValueError(f"no IAM mapping for object request {request}")


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, str]) -> bool:
    base, if_exists = (operator[:-8], True) if operator.endswith("IfExists") else (operator, False)
    if key not in context:
        return if_exists
    actual = context[key]
    if base == "StringEquals":
        return any(actual == e for e in _listed(expected))
    if base == "StringLike":
        return any(_matches(e, actual) for e in _listed(expected))
    if base == "Bool":
        return any(actual.lower() == str(e).lower() for e in _listed(expected))
    raise ValueError(f"condition operator {operator} is not modelled")


def _statement_matches(statement: Mapping[str, Any], request: Authorization) -> bool:
    if not any(_matches(a, request.action, case_sensitive=False) for a in _listed(statement["Action"])):
        return False
    if not any(_matches(r, request.resource) for r in _listed(statement["Resource"])):
        return False
    return all(
        _condition_holds(operator, key, expected, request.context)
        for operator, keys in (statement.get("Condition") or {}).items()
        for key, expected in keys.items()
    )


def is_allowed(policy: Mapping[str, Any], request: Authorization) -> bool:
    """IAM's verdict for one request under one identity policy."""
    matching = [s for s in policy["Statement"] if _statement_matches(s, request)]
    return not any(s["Effect"] == "Deny" for s in matching) and any(s["Effect"] == "Allow" for s in matching)


class RecordingS3Proxy:
    """A pass-through HTTP proxy on 127.0.0.1 to ``upstream`` that records every request it forwards."""

    def __init__(self, upstream: str) -> None:
        self._upstream = urlsplit(upstream)
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                split = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
                with proxy._lock:
                    proxy.requests.append(S3Request(self.command, unquote(split.path), query))
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy._upstream.hostname, proxy._upstream.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status, reply.reason)
                for name, value in reply.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", reply.getheader("Content-Length") or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Handler

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    @contextmanager
    def running(self) -> Iterator[RecordingS3Proxy]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)
