"""Fine-tunes as Kubernetes Jobs (ADAPTIVECLICK_TRAINING_RUNNER=kubernetes) against a recording HTTPS server on
loopback that speaks the two calls the backend makes (list a namespace's Jobs by label, create a Job), with a
service account's files as Kubernetes mounts them (token, CA, namespace) and the official client's in-cluster
configuration: Label Studio's START_TRAINING creates the Job from the shipped template, a second one while it runs
does not, /jobs reports it, and an API that refuses is reported, not hidden."""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import shlex
import ssl
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adaptiveclick.backend import cluster_jobs
from adaptiveclick.backend.app import create_app
from adaptiveclick.backend.settings import Settings
from adaptiveclick.model import GrabCutPredictor

from conftest import REPO
from quiet_http import QuietHandler

TEMPLATE = REPO / "deploy" / "kubernetes" / "overlays" / "gpu" / "finetune-job.yaml"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.service-account-token"
NAMESPACE = "adaptiveclick"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
FORBIDDEN = (
    'jobs.batch is forbidden: User "system:serviceaccount:adaptiveclick:adaptiveclick" cannot create resource '
    '"jobs" in API group "batch" in the namespace "adaptiveclick"'
)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as the cluster's CA would sign the API server's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "apiserver.crt", folder / "apiserver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class RecordingAPI:
    """The Jobs part of a Kubernetes API server: GET and POST on one namespace's jobs, recorded. ``refuse`` answers
    POSTs with 403 as RBAC would; ``finish(name, condition)`` ends a Job."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.calls: list[dict] = []
        self.jobs: dict[str, dict] = {}
        self.refuse = False
        api = self

        class Handler(QuietHandler):
            def authorized(self) -> bool:
                """A bearer token (the scheme is case-insensitive, as for the API server): the service account's."""
                scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
                return scheme.lower() == "bearer" and token == TOKEN

            def record(self, body=None) -> tuple[str, dict]:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                api.calls.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": query,
                        "auth": self.headers.get("Authorization"),
                        "body": body,
                    }  # fmt: skip
                )
                return url.path, query

            def status(self, code: int, reason: str, message: str) -> None:
                self.send_json(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": reason,
                        "code": code,
                    },  # fmt: skip
                )

            def do_GET(self):  # noqa: N802
                path, query = self.record()
                if not self.authorized():
                    return self.status(401, "Unauthorized", "Unauthorized")
                if path != JOBS_PATH:
                    return self.status(404, "NotFound", f"the server could not find the requested resource {path}")
                wanted = dict(item.split("=", 1) for item in query.get("labelSelector", "").split(",") if "=" in item)
                keys = {item for item in query.get("labelSelector", "").split(",") if item and "=" not in item}
                items = [
                    job
                    for job in api.jobs.values()
                    if wanted.items() <= job["metadata"]["labels"].items() and keys <= set(job["metadata"]["labels"])
                ]
                self.send_json(200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {"resourceVersion": "7"},
                                 "items": items})  # fmt: skip

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path, _ = self.record(body)
                if not self.authorized():
                    return self.status(401, "Unauthorized", "Unauthorized")
                if path != JOBS_PATH or body.get("kind") != "Job":
                    return self.status(400, "BadRequest", "not a Job for this namespace")
                if api.refuse:
                    return self.status(403, "Forbidden", FORBIDDEN)
                name = body["metadata"]["name"]
                if name in api.jobs:
                    return self.status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
                created = json.loads(json.dumps(body))
                created["metadata"].update(
                    uid=f"uid-{len(api.jobs)}", creationTimestamp=f"2026-01-01T00:00:{len(api.jobs):02d}Z"
                )
                created["status"] = {"active": created["spec"]["parallelism"]}
                api.jobs[name] = created
                self.send_json(201, created)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def finish(self, name: str, condition: str) -> None:
        job = self.jobs[name]
        job["status"] = {"succeeded" if condition == "Complete" else "failed": 2,
                         "conditions": [{"type": condition, "status": "True"}]}  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def api(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    server = RecordingAPI(cert, key)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "ca.crt").write_bytes(cert.read_bytes())
    (account / "namespace").write_text(NAMESPACE)
    monkeypatch.setattr(cluster_jobs, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    yield server
    server.close()


AUTH = ("label-studio", "connection-secret-0123456789")  # START_TRAINING needs the connection credential


def client_for(tmp_path, **settings):
    settings = Settings(
        model_dir=tmp_path / "models",
        basic_auth_user=AUTH[0],
        basic_auth_pass=AUTH[1],
        training_runner="kubernetes",
        training_job_template=TEMPLATE,
        predictor="s3://models/adaptiveclick_base448_sbd.pth#sha256=" + "ab" * 32,
        finetune_args="--steps 2000 --lr 3e-5",
        **settings,
    )
    client = create_app(settings, predictor=GrabCutPredictor()).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
    return client


def start_training(client, project: int) -> dict:
    """Label Studio connects the project (``/setup``: the backend then knows it), then "Start training"."""
    schema = (REPO / "labelstudio" / "label_config.xml").read_text()
    assert client.post("/setup", json={"project": f"{project}.1700000000", "schema": schema}).status_code == 200
    reply = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}})
    assert reply.status_code == 201, reply.json
    return reply.json["result"]


def test_start_training_creates_the_job_through_the_kubernetes_api(api, tmp_path):
    client = client_for(tmp_path)
    started = start_training(client, 3)
    assert started["status"] == "started" and started["job"].startswith(f"{NAMESPACE}/adaptiveclick-finetune-p3-")
    listed, created = api.calls
    assert (listed["method"], listed["path"]) == ("GET", JOBS_PATH)
    assert listed["query"]["labelSelector"] == "app.kubernetes.io/component=finetune,adaptiveclick.io/project=3"
    assert (created["method"], created["path"]) == ("POST", JOBS_PATH)
    # the service account's token, over TLS verified with the mounted CA
    assert listed["auth"] == created["auth"] and listed["auth"].lower() == f"bearer {TOKEN}".lower()
    job = created["body"]
    assert job["metadata"]["name"] == started["job"].split("/")[1] and "generateName" not in job["metadata"]
    assert len(job["metadata"]["name"]) + len("-9") <= 63  # pod host names <job>-<index> are DNS labels
    assert job["metadata"]["labels"]["adaptiveclick.io/project"] == "3"
    assert job["metadata"]["annotations"]["adaptiveclick.io/reason"] == "START_TRAINING"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert shlex.split(env["ADAPTIVECLICK_FINETUNE_ARGS"]) == [
        "--ls-project", "3", "--init", "s3://models/adaptiveclick_base448_sbd.pth#sha256=" + "ab" * 32,
        "--steps", "2000", "--lr", "3e-5",
    ]  # fmt: skip
    assert env["NODES"] == "2" and container["image"].endswith(":cuda")  # the rest is the template's
    kubernetes_validate.validate(job, "1.32", strict=True)  # what it creates is a valid Job

    # while it runs, another START_TRAINING creates nothing; /jobs shows it
    assert start_training(client, 3)["status"] == "already running"
    assert [call["method"] for call in api.calls] == ["GET", "POST", "GET"]
    status = client.get("/jobs/3").json
    assert status["state"] == "running" and status["cluster_job"] == started["job"] and status["kind"] == "finetune"
    assert [j["project"] for j in client.get("/jobs").json["jobs"]] == [3]

    # another project's runs beside it; once the first ends, the project may train again
    assert start_training(client, 4)["status"] == "started"
    api.finish(job["metadata"]["name"], "Complete")
    assert client.get("/jobs/3").json["state"] == "succeeded"
    assert sorted(j["project"] for j in client.get("/jobs").json["jobs"]) == [3, 4]
    again = start_training(client, 3)
    assert again["status"] == "started" and again["job"] != started["job"]
    assert [c["method"] for c in api.calls].count("POST") == 3


def test_a_refusal_of_the_api_is_reported(api, tmp_path, caplog):
    client = client_for(tmp_path)
    api.refuse = True
    result = start_training(client, 5)
    assert result["status"] == "not started"
    assert "403 Forbidden" in result["message"] and "cannot create resource" in result["message"]
    assert any(r.getMessage() == "fine-tune not started" and "Forbidden" in r.error for r in caplog.records)
    assert client.get("/jobs/5").json["state"] == "none"


def test_without_a_service_account_the_backend_does_not_start(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_jobs, "SERVICE_ACCOUNT", tmp_path / "nothing-mounted")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(cluster_jobs.ClusterJobError, match="needs the pod's service account"):
        client_for(tmp_path)
    bad = tmp_path / "not-a-job.yaml"
    bad.write_text("kind: ConfigMap\n")
    with pytest.raises(cluster_jobs.ClusterJobError, match="is not a Job"):
        cluster_jobs.KubernetesJobs(bad, api=None, namespace=NAMESPACE)
