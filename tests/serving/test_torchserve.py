"""A real TorchServe (Java) on free loopback ports: one start for the whole module, always stopped."""

from __future__ import annotations

import os
import random
import threading
import time
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from click.testing import CliRunner
from PIL import Image

from fer_cli.main import cli
from fer_core.config import ServeConfig
from fer_core.serving.client import Registration, TorchServeClient, deploy_model, read_keys
from fer_core.serving.inference import LocalPredictor
from fer_core.serving.package import build_mar, publish_mar, resolve_run
from fer_core.serving.server import ServerSettings, server_status, start_server, stop_server
from tests.conftest import free_port
from tests.docs import doc_block
from tests.serving.conftest import BAD_REASONS

pytestmark = pytest.mark.integration

PIXEL_LIMIT = 1_000_000
SERVE = ServeConfig(batch_size=8, max_batch_delay_ms=20, workers=1, max_image_pixels=PIXEL_LIMIT,
                    max_request_bytes=2_000_000)


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    """TorchServe serving run_dir's model; stopped at the end whatever happens."""
    home = tmp_path_factory.mktemp("ts_home")
    settings = ServerSettings.from_config(SERVE, home=home / "torchserve", model_store=home / "model_store",
                                          inference_port=free_port(), management_port=free_port(),
                                          metrics_port=free_port(), grpc_inference_port=free_port(),
                                          grpc_management_port=free_port())
    source = resolve_run(run_dir)
    mar = build_mar(source, settings.model_store, SERVE)
    try:
        start_server(settings, [mar.name], timeout=240)
        yield settings, source.model_version, home
    finally:
        stop_server(settings)


@pytest.fixture(scope="module")
def client(server):
    settings, _, _ = server
    return TorchServeClient(settings.inference_url, settings.management_url, read_keys(settings.key_file),
                            key_file=settings.key_file)


def test_rest_equals_in_process(server, client, run_dir, good_images):
    _, version, _ = server
    local = LocalPredictor(run_dir, model_name="fer", model_version=version, max_image_pixels=PIXEL_LIMIT)
    for name, data in good_images.items():
        answer = client.predict("fer", data)
        [expected] = local.predict([data])
        assert answer.status == 200, (name, answer.body)
        assert answer.body["label"] == expected["label"], name
        assert answer.body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5), name
        assert answer.body["uncertainty"] == pytest.approx(expected["uncertainty"], rel=1e-4), name
        assert answer.body["model_version"] == version


def test_token_is_required(server, client, good_images):
    settings, _, _ = server
    image = good_images["rgb_png"]
    url = f"{settings.inference_url}/predictions/fer"
    missing = requests.post(url, data=image, timeout=30)
    wrong = requests.post(url, data=image, headers={"Authorization": "Bearer not-the-key"}, timeout=30)
    with_management_key = requests.post(url, data=image, timeout=30,
                                        headers={"Authorization": f"Bearer {client.keys.management}"})
    for response in (missing, wrong, with_management_key):
        assert 400 <= response.status_code < 500
        assert "Token Authorization failed" in response.json()["message"]
    assert requests.get(f"{settings.management_url}/models", timeout=30).status_code in (400, 401, 403)
    # TorchServe 0.12 guards even /ping with the inference key.
    assert requests.get(f"{settings.inference_url}/ping", timeout=30).status_code == 400
    assert client.ping()["status"] == "Healthy"


def test_bad_inputs_get_4xx_and_server_keeps_serving(client, bad_images, good_images):
    for kind, data in bad_images.items():
        answer = client.predict("fer", data)
        assert 400 <= answer.status < 500, (kind, answer.status, answer.body)
        assert BAD_REASONS[kind] in answer.body["message"].lower(), (kind, answer.body)
        assert client.predict("fer", good_images["rgb_jpeg"]).status == 200, f"after {kind}"


def test_text_json_and_oversized_bodies(server, client, good_images):
    settings, _, _ = server
    headers = {"Authorization": f"Bearer {client.keys.inference}"}
    url = f"{settings.inference_url}/predictions/fer"
    text = requests.post(url, data="hello", headers={**headers, "Content-Type": "text/plain"}, timeout=30)
    as_json = requests.post(url, json={"image": "x"}, headers=headers, timeout=30)
    oversized = requests.post(url, data=os.urandom(SERVE.max_request_bytes + 1000), headers=headers, timeout=30)
    assert text.status_code == 400 and "text" in text.json()["message"]
    assert as_json.status_code == 400 and "json" in as_json.json()["message"].lower()
    # TorchServe's max_request_size (serve.max_request_bytes): Netty answers 413, with no body
    assert oversized.status_code == 413, (oversized.status_code, oversized.text)
    assert client.predict("fer", good_images["rgb_png"]).status == 200


def test_curl_forms_oversized_bodies_and_missing_tokens(server, client, good_images, tmp_path):
    """TorchServe itself at the door: the request forms of TorchServe's own docs reach the handler, a 40 MB
    body gets 413 (also when curl asks first with Expect: 100-continue), a request without the key a 400;
    curl's bare --data-binary labels the image a form, which TorchServe decodes as form fields (its own
    500, documented as a client mistake); and the server keeps serving through all of it."""
    import shutil
    import subprocess

    settings, _, _ = server
    url = f"{settings.inference_url}/predictions/fer"
    auth = ["-H", f"Authorization: Bearer {client.keys.inference}"]
    face, big = tmp_path / "face.jpg", tmp_path / "big.bin"
    face.write_bytes(good_images["rgb_jpeg"])
    big.write_bytes(os.urandom(40 << 20))
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test"

    def send(*args: str) -> tuple[str, str]:
        done = subprocess.run([curl, "-s", "-w", "\n%{http_code}", *args, url], capture_output=True, text=True,
                              timeout=120)
        body, status = done.stdout.rsplit("\n", 1)
        return status, body

    for name, args in {"-T": ["-T", str(face)],
                       "octet-stream": ["-H", "Content-Type: application/octet-stream", "--data-binary", f"@{face}"],
                       "image/jpeg": ["-H", "Content-Type: image/jpeg", "--data-binary", f"@{face}"],
                       "-F data=@": ["-F", f"data=@{face}"]}.items():
        status, body = send(*auth, *args)
        assert status == "200", (name, status, body)
        assert json.loads(body)["label"] in json.loads(body)["probabilities"], name
    for args in (["-T", str(big)], ["-H", "Content-Type: application/octet-stream", "--data-binary", f"@{big}"]):
        assert send(*auth, *args)[0] == "413"
    status, body = send("-T", str(face))
    assert status == "400" and json.loads(body)["type"] == "InvalidKeyException"
    status, body = send(*auth, "--data-binary", f"@{face}")  # the client mistake
    assert status == "500" and json.loads(body)["type"] == "ErrorDataDecoderException"
    assert send(*auth, "-T", str(face))[0] == "200"


def _hammer(settings, keys, bodies: list[bytes], concurrency: int) -> list[tuple[int, dict]]:
    local = threading.local()

    def one(body: bytes):
        if not hasattr(local, "client"):
            local.client = TorchServeClient(settings.inference_url, settings.management_url, keys, timeout=120)
        answer = local.client.predict("fer", body)
        return answer.status, answer.body

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, bodies))


def test_500_requests_at_concurrency_16(server, client, good_images, bad_images):
    settings, _, _ = server
    rng = random.Random(0)
    goods, bads = list(good_images.values()), list(bad_images.values())
    bodies = [rng.choice(bads) if i % 10 == 0 else rng.choice(goods) for i in range(500)]
    results = _hammer(settings, client.keys, bodies, 16)
    assert len(results) == 500
    statuses = [status for status, _ in results]
    assert not [s for s in statuses if s >= 500]
    for i, (status, body) in enumerate(results):
        if i % 10 == 0:
            assert status == 400 and body["type"] == "InvalidImage"
        else:
            assert status == 200 and "label" in body


def test_cli_against_running_server(server, good_images, bad_images, tmp_path, monkeypatch):
    settings, version, home = server
    monkeypatch.setenv("FER_HOME", str(home))
    # a client command takes the address and the two API ports; only `start` takes every port
    ports = ["--inference-port", str(settings.inference_port), "--management-port", str(settings.management_port)]
    good, bad = tmp_path / "face.jpg", tmp_path / "broken.jpg"
    good.write_bytes(good_images["rgb_jpeg"])
    bad.write_bytes(bad_images["truncated"])
    runner = CliRunner()
    ok = runner.invoke(cli, ["serve", "predict", str(good), *ports])
    assert ok.exit_code == 0, ok.output
    assert f'"model_version": "{version}"' in ok.output
    # --draw: the answer drawn on the photo, the photo's size, one face box
    from tests import photos as P

    photo, drawn = tmp_path / "portrait.jpg", tmp_path / "answer.png"
    photo.write_bytes(P.jpeg(P.portrait()))
    shown = runner.invoke(cli, ["serve", "predict", str(photo), "--draw", str(drawn), *ports])
    assert shown.exit_code == 0, shown.output
    assert f"drew 1 face(s) on {drawn}" in shown.output
    original = Image.open(photo).convert("RGB")
    with Image.open(drawn) as picture:
        assert picture.format == "PNG" and picture.size == (512, 600)
        assert picture.getpixel((10, 590)) == original.getpixel((10, 590))  # the photo, drawn on near the face only
        assert picture.getpixel((182, 250)) != original.getpixel((182, 250))  # the box's left edge
    mixed = runner.invoke(cli, ["serve", "predict", str(good), str(bad), *ports])
    assert mixed.exit_code == 1
    assert "broken.jpg: HTTP 400: truncated or corrupt" in mixed.output
    again = runner.invoke(cli, ["serve", "start", *ports, "--metrics-port", str(settings.metrics_port)])
    assert again.exit_code == 0 and "already running" in again.output
    status = runner.invoke(cli, ["serve", "status", *ports])
    assert status.exit_code == 0 and '"health": "Healthy"' in status.output
    # the metrics URL is the running server's, though `status` was not told its port
    assert f'"metrics_url": "{settings.metrics_url}"' in status.output
    # Deploying the version already served only (re)makes it the default.
    redeploy = runner.invoke(cli, ["serve", "deploy", str(settings.model_store / f"fer-{version}.mar"), *ports,
                                   "--model-store", str(settings.model_store)])
    assert runner.invoke(cli, ["serve", "predict", str(good), "--grpc-inference-port", "1"]).exit_code == 2
    assert redeploy.exit_code == 0, redeploy.output
    assert '"unregistered": []' in redeploy.output and f'"model_version": "{version}"' in redeploy.output


def test_prometheus_metrics(server):
    settings, _, _ = server
    response = requests.get(f"{settings.metrics_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert "ts_inference_requests_total" in response.text


def test_swap_version_under_load(server, client, run_dir_b, good_images):
    """deploy_model registers the new version, makes it default and drops the old: no failed request."""
    settings, old_version, _ = server
    new_mar = build_mar(resolve_run(run_dir_b), settings.model_store.parent / "build", SERVE)
    stored = publish_mar(new_mar, settings.model_store)
    results: list[tuple[int, dict]] = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            results.extend(_hammer(settings, client.keys, [good_images["rgb_png"]] * 8, 4))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1.0)
        report = deploy_model(stored, settings.management_url, client.keys.management, "fer",
                              registration=Registration.from_serve(SERVE))
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join(timeout=300)
    new_version = report["model_version"]
    assert new_version != old_version and report["unregistered"] == [old_version]
    assert results and all(status == 200 for status, _ in results), {s for s, _ in results}
    versions = [body["model_version"] for _, body in results]
    assert versions[0] == old_version and versions[-1] == new_version
    assert client.predict("fer", good_images["rgb_png"]).body["model_version"] == new_version
    models = server_status(settings)["models"]["fer"]
    assert [entry["version"] for entry in models] == [new_version]


def test_the_docs_curl_runs_as_written(server, tmp_path, run_dir):
    """docs/serving.md's curl block, typed as a user would (only the port differs), answers a label; so
    does its Python (requests) example."""
    import json
    import re
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from tests.serving.conftest import encode, face_array

    settings, _, _ = server
    block = doc_block("docs/serving.md", "curl:")
    assert [shlex.split(line)[4] for line in block.splitlines() if line.startswith("curl")] == ["-T", "-H", "-F"]
    port = settings.inference_url.rsplit(":", 1)[1]
    script = block.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    (tmp_path / ".fer" / "torchserve").mkdir(parents=True)
    shutil.copyfile(settings.key_file, tmp_path / ".fer" / "torchserve" / "key_file.json")
    (tmp_path / "face.jpg").write_bytes(encode(Image.fromarray(face_array()), "JPEG"))
    shell_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=shell_env)
    assert done.returncode == 0, done.stderr
    decoder, answers, text, position = json.JSONDecoder(), [], done.stdout, 0
    while text[position:].strip():  # TorchServe's answers follow each other without a newline
        position += len(text[position:]) - len(text[position:].lstrip())
        answer, position = decoder.raw_decode(text, position)
        answers.append(answer)
    assert len(answers) == 3  # one answer per curl form
    answer = answers[0]
    assert all(other == answer for other in answers) and answer["label"] in answer["probabilities"]
    # the Python (requests) example beside it, in the same folder
    snippet = doc_block("docs/serving.md", r"Python \(requests\):", "python").replace("127.0.0.1:8080",
                                                                                     f"127.0.0.1:{port}")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    label, probability, uncertainty = done.stdout.split()
    assert label in answer["probabilities"] and 0 < float(probability) <= 1 and float(uncertainty) > 0


def test_explanations_get_a_clear_404_not_a_503(server, client, good_images):
    settings, _, _ = server
    answer = requests.post(f"{settings.inference_url}/explanations/fer", data=good_images["rgb_png"], timeout=60,
                           headers={"Authorization": f"Bearer {client.keys.inference}"})
    assert answer.status_code == 404, answer.text
    assert "/predictions/fer" in answer.json()["message"]
    assert client.predict("fer", good_images["rgb_png"]).status == 200


def test_the_docs_python_example_runs_as_written(server, tmp_path):
    """docs/serving.md's requests example, as written (only the port differs), prints a label."""
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from tests.serving.conftest import encode, face_array

    settings, _, _ = server
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text(encoding="utf-8")
    block = re.search(r"Python \(requests\):\s*```python\n(.*?)```", doc, re.S).group(1)
    port = settings.inference_url.rsplit(":", 1)[1]
    (tmp_path / ".fer" / "torchserve").mkdir(parents=True)
    shutil.copyfile(settings.key_file, tmp_path / ".fer" / "torchserve" / "key_file.json")
    (tmp_path / "face.jpg").write_bytes(encode(Image.fromarray(face_array()), "JPEG"))
    done = subprocess.run([sys.executable, "-c", block.replace("127.0.0.1:8080", f"127.0.0.1:{port}")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    label, probability, uncertainty = done.stdout.split()
    assert label in {"neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"}
    assert 0 < float(probability) <= 1 and float(uncertainty) > 0


def test_start_fails_loudly_when_no_worker_can_load_the_model(run_dir, tmp_path):
    """A model whose worker cannot load (weights that do not match meta.json's hash): `start_server`
    raises instead of reporting a server that answers nothing, and leaves no TorchServe behind."""
    import shutil

    from fer_core.serving.client import ServeError

    broken = tmp_path / "broken_run"
    shutil.copytree(run_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    settings = ServerSettings.from_config(SERVE, home=tmp_path / "torchserve", model_store=tmp_path / "store",
                                          inference_port=free_port(), management_port=free_port(),
                                          metrics_port=free_port(), grpc_inference_port=free_port(),
                                          grpc_management_port=free_port())
    mar = build_mar(resolve_run(broken), settings.model_store, SERVE)
    try:
        with pytest.raises(ServeError, match="no ready worker|exited"):
            start_server(settings, [mar.name], timeout=30)
        assert not server_status(settings)["running"]
    finally:
        stop_server(settings)


def test_a_client_keeps_serving_across_key_renewals(server, good_images):
    """Keys expire (serve.token_expiration_min) or get renewed by someone else: a client made by
    client_for renews through the key file or TorchServe's token API instead of failing with 400."""
    import json

    from fer_core.serving.server import client_for

    settings, _, _ = server
    patient = client_for(settings)
    assert patient.predict("fer", good_images["rgb_png"]).status == 200
    stale = patient.keys.inference
    # another client renews the inference key: ours is now refused by TorchServe
    other = client_for(settings)
    other.renew_key("inference")
    assert other.keys.inference != stale
    bare = requests.post(f"{settings.inference_url}/predictions/fer", data=good_images["rgb_png"], timeout=30,
                         headers={"Authorization": f"Bearer {stale}", "Content-Type": "application/octet-stream"})
    assert bare.status_code == 400
    assert patient.predict("fer", good_images["rgb_png"]).status == 200  # re-read from the key file
    # a key file left behind with a dead key (as after expiry): renewed through the token API
    saved = json.loads(settings.key_file.read_text())
    renewed = client_for(settings)
    renewed.renew_key("inference")
    saved_with_dead_key = {**saved, "inference": {**saved["inference"], "key": renewed.keys.inference}}
    renewed.renew_key("inference")  # the key in saved_with_dead_key is now dead
    settings.key_file.write_text(json.dumps(saved_with_dead_key))
    expired = client_for(settings)
    assert expired.predict("fer", good_images["rgb_png"]).status == 200
    assert expired.ping()["status"] == "Healthy"


def test_a_deploy_renews_an_expired_management_key(server):
    """The deploy path (`fer serve deploy`, the pipeline's and the demo's deploy) reads the key file and
    renews a refused management key, so deploying to a server that has run past token expiry works."""
    from fer_core.serving.package import read_mar_manifest
    from fer_core.serving.server import client_for

    settings, _, _ = server
    served = {v["version"] for v in server_status(settings)["models"]["fer"]}
    [mar] = [m for m in settings.model_store.glob("*.mar") if str(read_mar_manifest(m)["model"]["modelVersion"]) in served]
    saved = json.loads(settings.key_file.read_text())
    killer = client_for(settings)
    killer.renew_key("management")
    dead = killer.keys.management
    killer.renew_key("management")  # `dead` is refused from now on
    settings.key_file.write_text(json.dumps({**saved, "management": {**saved["management"], "key": dead}}))
    assert requests.get(f"{settings.management_url}/models", headers={"Authorization": f"Bearer {dead}"},
                        timeout=30).status_code == 400
    report = deploy_model(mar, settings.management_url, "", "fer", key_file=settings.key_file)
    assert report["model_version"] in served
    assert read_keys(settings.key_file).management not in (dead, "")


def test_real_photos_are_answered_face_by_face_and_the_server_keeps_serving(server, client, run_dir):
    """Real photos through a real TorchServe: the box lies on the face, faces come largest first, a photo
    without a face is classified whole (serve.faces=auto), and nothing a user sends stops the server."""
    from PIL import Image

    from tests import photos as P

    _, version, _ = server
    local = LocalPredictor(run_dir, model_name="fer", model_version=version, max_image_pixels=PIXEL_LIMIT)
    portrait = client.predict("fer", P.jpeg(P.portrait()))
    assert portrait.status == 200
    [face] = portrait.body["faces"]
    assert face["detected"] is True and P.overlap(face["box"], P.PORTRAIT_FACE) > 0.8
    # the same face step as in-process (the served version may have been swapped by now: boxes only)
    assert [face["box"] for face in local.predict([P.jpeg(P.portrait())])[0]["faces"]] == [face["box"]]
    group = P.group_photo()
    answer = client.predict("fer", P.jpeg(group.image)).body
    assert [P.overlap(face["box"], truth) > 0.7 for face, truth in zip(answer["faces"], group.faces)] == [True] * 3
    for name, photo in P.no_face_photos().items():
        answer = client.predict("fer", P.png(photo))
        assert answer.status == 200 and answer.body["faces"][0]["detected"] is False, name
    gray = client.predict("fer", P.png(P.portrait().convert("L")))
    assert gray.status == 200 and gray.body["faces"][0]["detected"] is True
    tiny = client.predict("fer", P.png(Image.new("RGB", (3, 3))))
    assert tiny.status == 200 and tiny.body["faces"][0]["box"] == [0, 0, 3, 3]
    huge = client.predict("fer", P.jpeg(P.portrait().resize((1200, 1000))))  # over this server's 1 Mpx
    assert huge.status == 400 and "too large" in huge.body["message"]
    assert client.predict("fer", P.jpeg(P.portrait())).status == 200


def test_workers_and_batching_are_the_environments_set_at_registration(server, client, run_dir, tmp_path):
    """The archive freezes no workers or batching: the server that registers it says them (the start's
    serve.* here, 8 / 20 ms / 1 worker; a deploy elsewhere with other serve.* gets those)."""
    from fer_core.serving.client import Registration

    settings, _, _ = server
    [default] = [entry for entry in client.list_versions("fer")]
    described = client.describe("fer", str(default["modelVersion"]))
    assert (described["batchSize"], described["maxBatchDelay"], described["minWorkers"]) == (
        SERVE.batch_size, SERVE.max_batch_delay_ms, SERVE.workers)
    # the same archive registered under another name with another environment's settings
    other = SERVE.__class__(model_name="fer-other", batch_size=3, max_batch_delay_ms=7, workers=1, response_timeout_s=30)
    mar = build_mar(resolve_run(run_dir), tmp_path / "build", other)
    stored = publish_mar(mar, settings.model_store)
    report = deploy_model(stored, settings.management_url, client.keys.management, "fer-other",
                          registration=Registration.from_serve(other))
    try:
        described = client.describe("fer-other", report["model_version"])
        assert (described["batchSize"], described["maxBatchDelay"], described["minWorkers"]) == (3, 7, 1)
        assert described["responseTimeout"] == 30  # the archive's (other.response_timeout_s)
    finally:
        client.unregister("fer-other", report["model_version"])
