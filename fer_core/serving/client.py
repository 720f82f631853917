"""Talk to a running TorchServe: tokens, predictions, and the management API (deploy without downtime).

TorchServe 0.12 keeps token authorization on: it writes key_file.json (inference, management and API
keys) in its working directory, FER_HOME/torchserve here; `read_keys` reads it and every call sends
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

KEY_FILE = "key_file.json"


class ServeError(RuntimeError):
    """A TorchServe call that failed; carries the HTTP status and TorchServe's message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Keys:
    inference: str
    management: str
    api: str


def read_keys(key_file: str | Path) -> Keys:
    """The keys TorchServe wrote (key_file.json); a clear error when the server never wrote them."""
    key_file = Path(key_file)
    try:
        raw = json.loads(key_file.read_text(encoding="utf-8"))
        return Keys(raw["inference"]["key"], raw["management"]["key"], raw["API"]["key"])
    except FileNotFoundError:
        raise ServeError(f"{key_file}: no TorchServe key file; is the server running (fer serve start)?") from None
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ServeError(f"{key_file}: not a TorchServe key file ({exc!r})") from None


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return json.dumps(body)


@dataclass
class Answer:
    """One prediction call: the HTTP status and the JSON body (a prediction or an error)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status == 200


TOKEN_FAILED = "Token Authorization failed"


class TorchServeClient:
    """Inference + management calls with the bearer keys; one requests.Session (keep-alive).

    With `key_file` (a local TorchServe's key_file.json), a call refused for its token is retried once
    after renewing the key: re-read from the file when another client renewed it, else renewed through
    TorchServe's token API with the API key (keys expire after serve.token_expiration_min).
    """

    def __init__(self, inference_url: str, management_url: str, keys: Keys, timeout: float = 60.0,
                 key_file: str | Path | None = None) -> None:
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.keys = keys
        self.timeout = timeout
        self.key_file = Path(key_file) if key_file else None
        self.session = requests.Session()
        self._renewing = threading.Lock()

    def _auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _send(self, kind: str, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One call with the `kind` key ("inference" or "management"); renew and retry once if refused."""
        headers = kwargs.pop("headers", {})
        used = getattr(self.keys, kind)
        response = self.session.request(method, url, headers={**headers, **self._auth(used)}, **kwargs)
        if response.status_code == 400 and TOKEN_FAILED in response.text and self.key_file is not None:
            self.renew_key(kind, refused=used)
            response = self.session.request(method, url, headers={**headers, **self._auth(getattr(self.keys, kind))},
                                            **kwargs)
        return response

    def renew_key(self, kind: str, refused: str | None = None) -> None:
        """A fresh `kind` key: the key file's when it changed, else one from the token API.

        `refused` is the key a call was refused with: when another thread (or process, through the key
        file) renewed it meanwhile, that key is taken instead of renewing again (each renewal
        cancels the previous key)."""
        with self._renewing:
            current = refused if refused is not None else getattr(self.keys, kind)
            if getattr(self.keys, kind) != current:
                return
            self.keys = read_keys(self.key_file)
            if getattr(self.keys, kind) != current:
                return
            self._renew_through_api(kind)

    def _renew_through_api(self, kind: str) -> None:
        response = self.session.post(f"{self.management_url}/token", params={"type": kind},
                                     headers=self._auth(self.keys.api), timeout=self.timeout)
        if response.status_code != 200:
            raise ServeError(f"renewing the {kind} key answered {response.status_code}: {_message(response)}",
                             response.status_code)
        self.keys = read_keys(self.key_file)

    def ping(self) -> dict[str, Any]:
        response = self._send("inference", "GET", f"{self.inference_url}/ping", timeout=self.timeout)
        if response.status_code != 200:
            raise ServeError(f"/ping answered {response.status_code}: {_message(response)}", response.status_code)
        return response.json()

    def predict(self, model_name: str, image: bytes, version: str | None = None) -> Answer:
        path = f"/predictions/{model_name}" + (f"/{version}" if version else "")
        response = self._send("inference", "POST", f"{self.inference_url}{path}", data=image, timeout=self.timeout,
                              headers={"Content-Type": "application/octet-stream"})
        try:
            body = response.json()
        except ValueError:
            # TorchServe's Netty answers 413 (body over max_request_size) with no body at all
            body = {"code": response.status_code, "type": "NonJsonResponse",
                    "message": response.text.strip() or f"{response.status_code} {response.reason}"}
        return Answer(response.status_code, body)

    def _management(self, method: str, path: str, ok: tuple[int, ...] = (200,), **params: Any) -> Any:
        response = self._send("management", method, f"{self.management_url}{path}", params=params or None,
                              timeout=max(self.timeout, 300))
        if response.status_code not in ok:
            raise ServeError(f"{method} {path} answered {response.status_code}: {_message(response)}",
                             response.status_code)
        return response.json() if response.content else {}

    def list_versions(self, model_name: str) -> list[dict[str, Any]]:
        """Every registered version of a model (DescribeModel of /models/NAME/all); [] if none."""
        try:
            return self._management("GET", f"/models/{model_name}/all")
        except ServeError as exc:
            if exc.status == 404:
                return []
            raise

    def describe(self, model_name: str, version: str) -> dict[str, Any]:
        return self._management("GET", f"/models/{model_name}/{version}")[0]

    def register(self, mar_url: str, registration: "Registration") -> Any:
        """Register an archive with this environment's workers and batching (the .mar carries none)."""
        return self._management("POST", "/models", url=mar_url, initial_workers=registration.workers,
                                batch_size=registration.batch_size, max_batch_delay=registration.max_batch_delay_ms,
                                synchronous="true")

    def set_default(self, model_name: str, version: str) -> Any:
        return self._management("PUT", f"/models/{model_name}/{version}/set-default")

    def unregister(self, model_name: str, version: str) -> Any:
        return self._management("DELETE", f"/models/{model_name}/{version}")

    def wait_ready(self, model_name: str, version: str, workers: int, timeout: float = 180.0) -> int:
        """Block until `workers` workers of a version are READY; returns how many are."""
        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            ready = sum(w.get("status") == "READY" for w in self.describe(model_name, version).get("workers", []))
            if ready >= workers:
                return ready
            time.sleep(0.5)
        raise ServeError(f"{model_name} version {version}: {ready}/{workers} workers READY after {timeout:.0f}s")

    def wait_drained(self, model_name: str, version: str, grace: float, timeout: float = 300.0) -> None:
        """Block until a (no longer default) version has no pending requests, then `grace` seconds more."""
        deadline = time.monotonic() + timeout
        empty_reads = 0
        while empty_reads < 2:
            if time.monotonic() > deadline:
                raise ServeError(f"{model_name} version {version}: queue not drained after {timeout:.0f}s")
            queue = self.describe(model_name, version).get("jobQueueStatus") or {}
            empty_reads = empty_reads + 1 if int(queue.get("pendingRequests", 0)) == 0 else 0
            time.sleep(0.25)
        time.sleep(grace)


@dataclass(frozen=True)
class Registration:
    """How a model version runs on a server, set when it is registered (per environment: serve.* of the
    config), never frozen into the .mar: workers, batch size, max batch delay. (The response timeout is
    the archive's: TorchServe 0.12 lets a model-config.yaml's value override the registration's.)"""

    workers: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 100

    @classmethod
    def from_serve(cls, serve: Any) -> "Registration":
        return cls(workers=int(serve.workers), batch_size=int(serve.batch_size),
                   max_batch_delay_ms=int(serve.max_batch_delay_ms))


def deploy_model(mar_path: str | Path, management_url: str, token: str, model_name: str, *,
                 registration: Registration = Registration(), timeout: float = 300.0, drain_grace_s: float = 3.0,
                 key_file: str | Path | None = None) -> dict[str, Any]:
    """Register a new .mar version next to the old one, wait for its workers, make it the default,
    then unregister the old versions: requests keep being answered throughout (no downtime).

    An old version is unregistered only once its queue is empty and `drain_grace_s` has passed for
    the batch its workers may still be running (TorchServe does not report a busy worker).

    `mar_path` is a .mar already in the server's model store (publish_mar) or an http(s) URL; the
    version comes from the archive's manifest. Deploying the version already served is a no-op apart
    from making it the default.

    `registration`: the version's workers and batching on this server (serve.* of the environment).
    `key_file` (a local server's key_file.json) instead of `token`: the management key is read from it
    and renewed like any client's when TorchServe refuses it (keys expire), so a deploy to a server
    that has run for hours works.
    """
    from fer_core.serving.package import read_mar_manifest

    mar_path_text = str(mar_path)
    is_url = mar_path_text.startswith(("http://", "https://"))
    if is_url:
        version = None
        mar_url = mar_path_text
    else:
        manifest = read_mar_manifest(mar_path)
        archived_name = manifest["model"]["modelName"]
        if archived_name != model_name:
            raise ServeError(f"{mar_path}: archive holds model {archived_name!r}, not {model_name!r}")
        version = str(manifest["model"]["modelVersion"])
        mar_url = Path(mar_path).name
    if key_file:
        client = TorchServeClient("", management_url, read_keys(key_file), timeout=timeout, key_file=key_file)
    else:
        client = TorchServeClient("", management_url, Keys("", token, ""), timeout=timeout)
    before = [str(entry["modelVersion"]) for entry in client.list_versions(model_name)]
    if version is None or version not in before:
        client.register(mar_url, registration)
        if version is None:  # a URL: the new version is the one that was not there before
            added = [str(e["modelVersion"]) for e in client.list_versions(model_name)
                     if str(e["modelVersion"]) not in before]
            if len(added) != 1:
                raise ServeError(f"{mar_url}: could not tell which version was registered ({added})")
            version = added[0]
    ready = client.wait_ready(model_name, version, registration.workers, timeout=timeout)
    client.set_default(model_name, version)
    removed = []
    for old in before:
        if old != version:
            # Requests routed to the old version before the switch are still queued or in a batch;
            # unregistering now would drop them unanswered (seen in tests), so let them finish first.
            client.wait_drained(model_name, old, grace=drain_grace_s, timeout=timeout)
            client.unregister(model_name, old)
            removed.append(old)
    return {"model_name": model_name, "model_version": version, "mar": mar_url, "workers_ready": ready,
            "previous_versions": before, "unregistered": removed}
