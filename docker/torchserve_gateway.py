"""Token gateway beside TorchServe in a pod (k8s/base/torchserve.yaml, container `gateway`).

Why it exists: TorchServe 0.12 keeps token authorization on, but makes its own random keys at start
(key_file.json in its working directory), one set per pod. Clients of a Deployment with several
replicas need tokens that an operator controls: the Secret fer-torchserve-token, key `token` for
inference and key `management-token` for the management API (two tokens: an app holding the
inference token cannot register models). TorchServe listens on the pod's loopback only; this gateway
listens on the pod IP, checks the client's `Authorization: Bearer <token>` against the route's token
(mounted as a file), and forwards the request with the pod's own TorchServe key. TorchServe's own
check stays on behind it.

`GET /healthz` (inference listener only) is the one path without a token: it answers 200 when
TorchServe's /ping says Healthy and 503 otherwise, and tells nothing else; the kubelet probes it.

Standard library only, so it runs in the TorchServe image with nothing more to install.
Environment: FER_GATEWAY_TOKEN_FILE (inference), FER_GATEWAY_MANAGEMENT_TOKEN_FILE, FER_GATEWAY_KEY_FILE, FER_GATEWAY_INFERENCE and
FER_GATEWAY_MANAGEMENT ("listen_host:port=upstream_host:port"), FER_GATEWAY_MAX_BODY (bytes).
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PLACEHOLDER = "REPLACE_ME"
# Headers that describe one connection, not the message (RFC 9110 section 7.6.1): never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "authorization", "content-length"}


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


FORM_TYPES = ("application/x-www-form-urlencoded",)


def raw_body_headers(headers: dict[str, str]) -> dict[str, str]:
    """An inference body is the image itself, whatever the client's Content-Type says: curl's
    `--data-binary @face.jpg` labels it a form, which TorchServe's frontend would try to decode as
    form fields (500, the bytes echoed in the message). Form types go upstream as octet-stream."""
    out = {name: value for name, value in headers.items() if name.lower() != "content-type"}
    given = next((value for name, value in headers.items() if name.lower() == "content-type"), "")
    media = given.split(";", 1)[0].strip().lower()
    out["Content-Type"] = "application/octet-stream" if not media or media in FORM_TYPES else given
    return out


def parse_route(kind: str, text: str) -> Route:
    """'0.0.0.0:8080=127.0.0.1:18080' -> Route; a clear error naming the variable otherwise."""
    try:
        listen, upstream = text.split("=", 1)
        (lhost, lport), (uhost, uport) = (part.rsplit(":", 1) for part in (listen, upstream))
        return Route(kind, (lhost, int(lport)), (uhost, int(uport)))
    except ValueError:
        raise GatewayError(f"FER_GATEWAY_{kind.upper()}={text!r} must look like "
                           "listen_host:port=upstream_host:port") from None


def make_handler(route: Route, token: ClientToken, keys: TorchServeKeys, max_body: int,
                 timeout_s: float = 300.0) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fer-gateway"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            sys.stderr.write(f"{route.kind} {self.address_string()} {format % args}\n")

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> bytes | None:
            """The request body (Content-Length or chunked), or None after replying with an error."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks, size = [], 0
                while True:
                    length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if length == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    size += length
                    if size > max_body:
                        self.close_connection = True
                        self._reply(413, {"code": 413, "type": "PayloadTooLarge",
                                          "message": f"request body over {max_body} bytes"})
                        return None
                    chunks.append(self.rfile.read(length))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body:
                self.close_connection = True
                self._reply(413, {"code": 413, "type": "PayloadTooLarge",
                                  "message": f"request body of {length} bytes is over {max_body}"})
                return None
            return self.rfile.read(length) if length else b""

        def _upstream(self, method: str, path: str, body: bytes, headers: dict[str, str]):
            connection = http.client.HTTPConnection(*route.upstream, timeout=timeout_s)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.getheaders(), response.read()
            finally:
                connection.close()

        def _healthz(self) -> None:
            try:
                status, _, data = self._upstream("GET", "/ping", b"", {
                    "Authorization": f"Bearer {keys.key('inference')}"})
                healthy = status == 200 and json.loads(data).get("status") == "Healthy"
            except (OSError, GatewayError, ValueError):
                healthy = False
            self._reply(200 if healthy else 503, {"status": "ok" if healthy else "unavailable"})

        def _forward(self) -> None:
            if route.kind == "inference" and self.command == "GET" and self.path == "/healthz":
                self._healthz()
                return
            try:
                allowed = token.accepts(self.headers.get("Authorization"))
            except GatewayError as exc:
                self.log_message("%s", exc)
                self._reply(503, {"code": 503, "type": "GatewayMisconfigured", "message": "no token configured"})
                return
            if not allowed:
                self.close_connection = True
                self._reply(401, {"code": 401, "type": "Unauthorized",
                                  "message": f"send Authorization: Bearer <{route.kind} token of Secret "
                                             f"fer-torchserve-token>"})
                return
            body = self._read_body()
            if body is None:
                return
            headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
            if route.kind == "inference":
                headers = raw_body_headers(headers)
            try:
                headers["Authorization"] = f"Bearer {keys.key(route.kind)}"
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


def build_servers(routes: list[Route], tokens: dict[str, ClientToken], keys: TorchServeKeys,
                  max_body: int) -> list[ThreadingHTTPServer]:
    """One listener per route, each checking its own kind's token (inference or management)."""
    servers = []
    for route in routes:
        if route.kind not in tokens:
            raise GatewayError(f"no token configured for the {route.kind} route")
        token = tokens[route.kind]
        if route.kind == "management" and "inference" in tokens:
            token = DistinctToken(token, tokens["inference"])
        server = ThreadingHTTPServer(route.listen, make_handler(route, token, keys, max_body))
        server.daemon_threads = True
        servers.append(server)
    return servers


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise GatewayError(f"environment variable {name} is not set")
    return value


def main() -> int:
    try:
        tokens = {"inference": ClientToken(Path(_env("FER_GATEWAY_TOKEN_FILE"))),
                  "management": ClientToken(Path(_env("FER_GATEWAY_MANAGEMENT_TOKEN_FILE")))}
        DistinctToken(tokens["management"], tokens["inference"]).current()  # refuse to start when equal
        keys = TorchServeKeys(Path(_env("FER_GATEWAY_KEY_FILE")))
        routes = [parse_route("inference", _env("FER_GATEWAY_INFERENCE")),
                  parse_route("management", _env("FER_GATEWAY_MANAGEMENT"))]
        max_body = int(os.environ.get("FER_GATEWAY_MAX_BODY", "10485760"))
        servers = build_servers(routes, tokens, keys, max_body)
    except (GatewayError, OSError, ValueError) as exc:
        print(f"fer-gateway: error: {exc}", file=sys.stderr)
        return 2
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("fer-gateway: " + ", ".join(f"{s.server_address} -> {r.upstream} ({r.kind})"
                                      for s, r in zip(servers, routes)), file=sys.stderr, flush=True)
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
