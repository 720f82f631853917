"""The gateway in front of TorchServe: the one door clients use, locally and in the cluster.

What it adds to TorchServe's own frontend (both modes):
- an inference body is the image itself whatever the client's Content-Type says: curl's
  `--data-binary @face.jpg` labels it a form, which TorchServe's frontend would decode as form fields
  (500, the request bytes echoed in the message); the gateway sends every inference body on as
  `application/octet-stream`, and a `multipart/form-data` upload as its file part;
- a body over the limit gets 413 with a JSON body in TorchServe's error shape, before it is read
  (also for `Expect: 100-continue`); malformed requests get 400, never 500, and no error echoes the body.

Two ways to authenticate:
- cluster (k8s/base/torchserve.yaml, container `gateway`): TorchServe 0.12 makes its own random keys at
  start (key_file.json), one set per pod, while clients of a Deployment with several replicas need
  tokens an operator controls: the Secret fer-torchserve-token, key `token` for inference and key
  `management-token` for the management API (two tokens: an app holding the inference token cannot
  register models). TorchServe listens on the pod's loopback only; the gateway listens on the pod IP,
  checks the client's `Authorization: Bearer <token>` against the route's token (mounted as a file) and
  forwards with the pod's own TorchServe key. `GET /healthz` (inference listener only) is the one path
  without a token: 200 when TorchServe's /ping says Healthy, 503 otherwise; the kubelet probes it.
- local (`fer serve start`, FER_GATEWAY_AUTH=passthrough): the gateway listens on serve.inference_port
  and passes the client's own Authorization header on; TorchServe (on a loopback port of its own)
  checks its keys from FER_HOME/torchserve/key_file.json as usual.

Standard library only, so it runs in the TorchServe image and beside a local TorchServe with nothing
more to install: `python -m fer_core.serving.gateway`. Environment: FER_GATEWAY_AUTH (tokens |
passthrough), FER_GATEWAY_TOKEN_FILE (inference), FER_GATEWAY_MANAGEMENT_TOKEN_FILE, FER_GATEWAY_KEY_FILE,
FER_GATEWAY_INFERENCE and FER_GATEWAY_MANAGEMENT ("listen_host:port=upstream_host:port"; management is
optional in passthrough mode), FER_GATEWAY_MAX_BODY (bytes).
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLACEHOLDER = "REPLACE_ME"
# Headers that describe one connection, not the message (RFC 9110 section 7.6.1): never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "authorization", "content-length"}


DIGITS = re.compile(r"[0-9]{1,15}")              # Content-Length: ASCII digits only ("²".isdigit() is True)
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")   # a chunk size: hex digits, never a sign
DRAIN_BYTES = 64 << 20                           # read and dropped after an early refusal, at most
DRAIN_SECONDS = 2.0
CLIENT_TIMEOUT_S = 60.0                          # a client that stops sending mid-request is dropped


class GatewayError(RuntimeError):
    """A setting or file the gateway cannot work with; the message names it."""


class _WatchedFile:
    """The text of a file, re-read when its mtime changes (Secret rotation, TorchServe key refresh)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._text = ""

    def read(self) -> str:
        stamp = self.path.stat().st_mtime_ns
        with self._lock:
            if stamp != self._stamp:
                self._text = self.path.read_text(encoding="utf-8")
                self._stamp = stamp
            return self._text


class ClientToken:
    """The one token clients must send (from the Secret); refuses empty or placeholder values."""

    def __init__(self, path: Path) -> None:
        self._file = _WatchedFile(path)
        self.current()  # fail at start, not on the first request

    def current(self) -> str:
        try:
            token = self._file.read().strip()
        except FileNotFoundError:
            raise GatewayError(f"token file {self._file.path} does not exist (Secret fer-torchserve-token "
                               "not mounted?)") from None
        if not token or token == PLACEHOLDER:
            raise GatewayError(f"token file {self._file.path} holds no real token ({token or 'empty'!r}); "
                               "create the Secret fer-torchserve-token as docs/deploy.md shows")
        return token

    def accepts(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.current().encode())


class TorchServeKeys:
    """TorchServe's own keys from its key_file.json ({"inference": {"key": ...}, "management": ...})."""

    def __init__(self, path: Path) -> None:
        self._file = _WatchedFile(path)

    def key(self, kind: str) -> str:
        try:
            return json.loads(self._file.read())[kind]["key"]
        except FileNotFoundError:
            raise GatewayError(f"{self._file.path}: TorchServe has not written its key file yet") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise GatewayError(f"{self._file.path}: not a TorchServe key file ({exc!r})") from None


@dataclass(frozen=True)
class Route:
    kind: str            # "inference" or "management": which TorchServe key to send
    listen: tuple[str, int]
    upstream: tuple[str, int]


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """One JSON response with its length (the gateway's own answers; test doubles of TorchServe too)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class RequestError(ValueError):
    """A request the gateway answers with 400 itself (the message says why, never echoes the body)."""


def _media_type(headers: dict[str, str]) -> str:
    given = next((value for name, value in headers.items() if name.lower() == "content-type"), "")
    return given.split(";", 1)[0].strip().lower()


def multipart_file(content_type: str, body: bytes) -> bytes:
    """The uploaded file of a `multipart/form-data` body (`curl -F data=@face.jpg`): the part named
    `data` (TorchServe's convention), else the first part with a file name, else the first part."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise RequestError("multipart/form-data body without a boundary or parts")
    parts = [part for part in message.iter_parts() if not part.is_multipart()]
    if not parts:
        raise RequestError("multipart/form-data body has no parts")
    chosen = (next((p for p in parts if p.get_param("name", header="content-disposition") == "data"), None)
              or next((p for p in parts if p.get_filename()), None) or parts[0])
    return chosen.get_payload(decode=True) or b""


def raw_image_request(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """An inference request as TorchServe should get it: the image bytes as `application/octet-stream`,
    whatever Content-Type the client sent (none, a form, text, JSON, image/*); a multipart upload
    becomes its file part. The handler then judges the bytes (400 InvalidImage if they are not one)."""
    out = {name: value for name, value in headers.items() if name.lower() != "content-type"}
    if _media_type(headers) == "multipart/form-data":
        given = next(value for name, value in headers.items() if name.lower() == "content-type")
        body = multipart_file(given, body)
    out["Content-Type"] = "application/octet-stream"
    return out, body


def parse_route(kind: str, text: str) -> Route:
    """'0.0.0.0:8080=127.0.0.1:18080' -> Route; a clear error naming the variable otherwise."""
    try:
        listen, upstream = text.split("=", 1)
        (lhost, lport), (uhost, uport) = (part.rsplit(":", 1) for part in (listen, upstream))
        return Route(kind, (lhost, int(lport)), (uhost, int(uport)))
    except ValueError:
        raise GatewayError(f"FER_GATEWAY_{kind.upper()}={text!r} must look like "
                           "listen_host:port=upstream_host:port") from None


def _too_large(max_body: int, length: int | None = None) -> dict:
    said = f"request body of {length} bytes is over {max_body}" if length else f"request body over {max_body} bytes"
    return {"code": 413, "type": "PayloadTooLarge", "message": f"{said} (serve.max_request_bytes)"}


def make_handler(route: Route, token: "ClientToken | DistinctToken | None", keys: TorchServeKeys | None,
                 max_body: int, timeout_s: float = 300.0) -> type[BaseHTTPRequestHandler]:
    """`token` None: pass-through mode (the client's Authorization goes on to TorchServe, which checks
    it); else the route's token is checked here and `keys` supplies TorchServe's own key."""

    upstream_pool = threading.local()  # one kept-alive connection to TorchServe per gateway thread

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fer-gateway"
        sys_version = ""  # no Python version in the Server header
        timeout = CLIENT_TIMEOUT_S

        def setup(self) -> None:
            super().setup()
            # the status line + headers and the body go out in separate writes: without TCP_NODELAY,
            # Nagle's algorithm holds the body until the client's delayed ACK (~40 ms per request)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _has_body(self) -> bool:
            return bool(self.headers.get_all("Transfer-Encoding")) or (self.headers.get("Content-Length") or "0").strip() != "0"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            sys.stderr.write(f"{route.kind} {self.address_string()} {format % args}\n")

        def _reply(self, status: int, body: dict) -> None:
            send_json(self, status, body)

        def _declared_length(self) -> int:
            """The body's length: Content-Length (ASCII digits, one value) or 0; RequestError for a
            message whose framing is ambiguous (RFC 9112 section 6.3: a request smuggling vector)."""
            lengths = self.headers.get_all("Content-Length") or []
            if len(set(v.strip() for v in lengths)) > 1:
                raise RequestError("more than one Content-Length")
            if lengths and self.headers.get_all("Transfer-Encoding"):
                raise RequestError("both Content-Length and Transfer-Encoding")
            text = lengths[0].strip() if lengths else "0"
            if not DIGITS.fullmatch(text):
                raise RequestError(f"Content-Length {text[:40]!r} is not a number of bytes")
            return int(text)

        def _chunked(self) -> bool:
            """True for `Transfer-Encoding: chunked`; RequestError for any other transfer coding."""
            codings = [c.strip().lower() for v in (self.headers.get_all("Transfer-Encoding") or []) for c in v.split(",")]
            if not codings:
                return False
            if codings != ["chunked"]:
                raise RequestError(f"Transfer-Encoding {', '.join(codings)!r} is not supported (only chunked)")
            if self.headers.get_all("Content-Length"):
                raise RequestError("both Content-Length and Transfer-Encoding")
            return True

        def _refuse(self, status: int, body: dict, unread: int = 0) -> None:
            """Reply before the request body was read, then close: the unread body must never be taken
            for a next request. Up to DRAIN_BYTES of it is read and dropped first (briefly), so that a
            client still sending gets the answer rather than a connection reset."""
            self.close_connection = True
            self._reply(status, body)
            try:
                self.wfile.flush()
                self.connection.settimeout(DRAIN_SECONDS)
                left = min(unread, DRAIN_BYTES) if unread else 0
                deadline = time.monotonic() + DRAIN_SECONDS
                while left > 0 and time.monotonic() < deadline:
                    chunk = self.rfile.read1(min(left, 65536))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass

        def handle_expect_100(self) -> bool:
            """Refuse an oversized body before the client sends it (curl asks first above 1 MB)."""
            try:
                chunked = self._chunked()
                length = 0 if chunked else self._declared_length()
            except RequestError as exc:
                self._refuse(400, {"code": 400, "type": "BadRequest", "message": str(exc)})
                return False
            if length > max_body:
                self._refuse(413, _too_large(max_body, length))  # nothing sent yet: nothing to drain
                return False
            return super().handle_expect_100()

        def _read_body(self) -> bytes | None:
            """The request body (Content-Length or chunked), or None after replying with an error."""
            try:
                if self._chunked():
                    chunks, size = [], 0
                    while True:
                        size_line = self.rfile.readline(80).split(b";")[0].strip()
                        if not CHUNK_SIZE.fullmatch(size_line):
                            raise RequestError("malformed chunked request body")
                        length = int(size_line, 16)
                        if length == 0:
                            while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        size += length
                        if size > max_body:
                            self._refuse(413, _too_large(max_body), unread=length)
                            return None
                        chunk = self.rfile.read(length)
                        if len(chunk) != length:
                            raise RequestError("chunked request body ended early")
                        chunks.append(chunk)
                        self.rfile.readline(80)
                length = self._declared_length()
            except RequestError as exc:
                self._refuse(400, {"code": 400, "type": "BadRequest", "message": str(exc)})
                return None
            if length > max_body:
                self._refuse(413, _too_large(max_body, length), unread=length)
                return None
            return self.rfile.read(length) if length else b""

        def _upstream(self, method: str, path: str, body: bytes, headers: dict[str, str]):
            """One request to TorchServe over this thread's kept-alive connection (a new TCP connection
            per request cost the gateway a third of TorchServe's throughput at concurrency 8); a
            connection TorchServe closed meanwhile is opened again once."""
            while True:
                connection = getattr(upstream_pool, "connection", None)
                reused = connection is not None
                if not reused:
                    connection = upstream_pool.connection = http.client.HTTPConnection(*route.upstream, timeout=timeout_s)
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except BaseException as exc:
                    connection.close()
                    upstream_pool.connection = None
                    stale = isinstance(exc, (http.client.RemoteDisconnected, http.client.CannotSendRequest,
                                             BrokenPipeError, ConnectionResetError))
                    if reused and stale:
                        continue  # TorchServe closed the idle kept-alive connection: once more on a new one
                    raise
                if response.will_close:
                    connection.close()
                    upstream_pool.connection = None
                return response.status, response.getheaders(), data

        def _healthz(self) -> None:
            self.close_connection = self._has_body()  # an unexpected body is never read as a next request
            try:
                auth = {"Authorization": f"Bearer {keys.key('inference')}"} if keys is not None else {}
                status, _, data = self._upstream("GET", "/ping", b"", auth)
                healthy = status == 200 and json.loads(data).get("status") == "Healthy"
            except (OSError, GatewayError, ValueError):
                healthy = False
            self._reply(200 if healthy else 503, {"status": "ok" if healthy else "unavailable"})

        def _authorized(self) -> bool:
            """Check the client's token (token mode); False after replying."""
            if token is None:
                return True
            try:
                allowed = token.accepts(self.headers.get("Authorization"))
            except GatewayError as exc:
                self.log_message("%s", exc)
                self._refuse(503, {"code": 503, "type": "GatewayMisconfigured", "message": "no token configured"})
                return False
            if not allowed:
                self._refuse(401, {"code": 401, "type": "Unauthorized",
                                   "message": f"send Authorization: Bearer <{route.kind} token of Secret "
                                              f"fer-torchserve-token>"})
            return allowed

        def _forward(self) -> None:
            if route.kind == "inference" and self.command == "GET" and self.path == "/healthz":
                self._healthz()
                return
            if not self._authorized():
                return
            body = self._read_body()
            if body is None:
                return
            headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
            if route.kind == "inference" and (body or self.command in ("POST", "PUT", "PATCH")):
                try:
                    headers, body = raw_image_request(headers, body)
                except RequestError as exc:
                    self._reply(400, {"code": 400, "type": "InvalidRequest", "message": str(exc)})
                    return
            try:
                if keys is not None:
                    headers["Authorization"] = f"Bearer {keys.key(route.kind)}"
                elif self.headers.get("Authorization"):
                    headers["Authorization"] = self.headers["Authorization"]
                status, reply_headers, data = self._upstream(self.command, self.path, body, headers)
            except GatewayError as exc:
                self._reply(503, {"code": 503, "type": "ServiceUnavailable", "message": str(exc)})
                return
            except OSError as exc:
                self._reply(502, {"code": 502, "type": "BadGateway", "message": f"TorchServe: {exc}"})
                return
            self.send_response(status)
            for name, value in reply_headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward

    return Handler


class DistinctToken:
    """The management token, refused while it equals the inference token (a rotated Secret must not
    let the inference token into the management API)."""

    def __init__(self, own: ClientToken, other: ClientToken) -> None:
        self.own, self.other = own, other

    def current(self) -> str:
        value = self.own.current()
        if value == self.other.current():
            raise GatewayError("the inference and management tokens are the same; give the management API "
                               "its own token (Secret fer-torchserve-token, key management-token)")
        return value

    def accepts(self, header: str | None) -> bool:
        self.current()
        return self.own.accepts(header)


class GatewayServer(ThreadingHTTPServer):
    """A thread per connection; a listen backlog for bursts (http.server's default of 5 let a burst of
    32 new connections overflow the accept queue, and some clients saw their connection reset)."""

    daemon_threads = True
    request_queue_size = 1024


def build_servers(routes: list[Route], tokens: dict[str, ClientToken] | None, keys: TorchServeKeys | None,
                  max_body: int) -> list[ThreadingHTTPServer]:
    """One listener per route, each checking its own kind's token (inference or management); with
    `tokens` None, pass-through: TorchServe checks the client's own key."""
    servers = []
    for route in routes:
        token: ClientToken | DistinctToken | None = None
        if tokens is not None:
            if route.kind not in tokens:
                raise GatewayError(f"no token configured for the {route.kind} route")
            token = tokens[route.kind]
            if route.kind == "management" and "inference" in tokens:
                token = DistinctToken(token, tokens["inference"])
        server = GatewayServer(route.listen, make_handler(route, token, keys, max_body))
        servers.append(server)
    return servers


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise GatewayError(f"environment variable {name} is not set")
    return value


def main() -> int:
    try:
        mode = os.environ.get("FER_GATEWAY_AUTH", "tokens")
        if mode not in ("tokens", "passthrough"):
            raise GatewayError(f"FER_GATEWAY_AUTH={mode!r} must be 'tokens' or 'passthrough'")
        routes = [parse_route("inference", _env("FER_GATEWAY_INFERENCE"))]
        if mode == "tokens" or os.environ.get("FER_GATEWAY_MANAGEMENT"):
            routes.append(parse_route("management", _env("FER_GATEWAY_MANAGEMENT")))
        tokens: dict[str, ClientToken] | None = None
        keys: TorchServeKeys | None = None
        if mode == "tokens":
            tokens = {"inference": ClientToken(Path(_env("FER_GATEWAY_TOKEN_FILE"))),
                      "management": ClientToken(Path(_env("FER_GATEWAY_MANAGEMENT_TOKEN_FILE")))}
            DistinctToken(tokens["management"], tokens["inference"]).current()  # refuse to start when equal
            keys = TorchServeKeys(Path(_env("FER_GATEWAY_KEY_FILE")))
        max_text = os.environ.get("FER_GATEWAY_MAX_BODY", "10485760")
        if not max_text.isdigit() or int(max_text) < 1:
            raise GatewayError(f"FER_GATEWAY_MAX_BODY={max_text!r} must be a positive number of bytes")
        servers = build_servers(routes, tokens, keys, int(max_text))
    except (GatewayError, OSError, ValueError) as exc:
        print(f"fer-gateway: error: {exc}", file=sys.stderr)
        return 2
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"fer-gateway ({mode}): " + ", ".join(f"{s.server_address} -> {r.upstream} ({r.kind})"
                                                for s, r in zip(servers, routes)), file=sys.stderr, flush=True)
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
