"""Image fetching: every URL kind, EXIF orientation, size limits, typed errors, and where the API key goes.

A small fake Label Studio (threaded HTTP server on loopback) checks credentials like the real one (legacy
``Token``, or a PAT exchanged at ``/api/token/refresh/`` for a short-lived ``Bearer`` access token) and records
every request's headers, so the tests can assert the key never reaches another host.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import struct
import threading
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from adaptiveclick.labelstudio.auth import LabelStudioAuth, jwt_claims, same_origin
from adaptiveclick.labelstudio.decode import decode_image
from adaptiveclick.labelstudio.errors import ImageError
from adaptiveclick.labelstudio.media import ImageFetcher, MediaScope, load_image
from adaptiveclick.labelstudio.netpolicy import AddressPolicy
from adaptiveclick.labelstudio.settings import ImageLimits, LabelStudioSettings

from quiet_http import QuietHandler

LEGACY = "legacy-token-123"


def make_jwt(claims: dict) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


PAT = make_jwt({"token_type": "refresh", "exp": 9_999_999_999, "user_id": "1"})


def png_bytes(width=6, height=4, color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


class FakeServer:
    """Serves ``files`` (path with query -> bytes or (status, headers, bytes)); checks auth when ``auth=True``."""

    def __init__(self, auth: bool = False) -> None:
        self.files: dict[str, object] = {}
        self.requests: list[tuple[str, dict]] = []
        self.auth = auth
        self.access_tokens: set[str] = set()
        self.refreshes = 0
        self.expire_next_access = False
        outer = self

        class Handler(QuietHandler):
            def do_POST(self):
                outer.requests.append((self.path, dict(self.headers)))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/token/refresh/" and body.get("refresh") == PAT:
                    outer.refreshes += 1
                    exp = time.time() + (-10 if outer.expire_next_access else 300)
                    outer.expire_next_access = False
                    access = make_jwt({"token_type": "access", "exp": exp, "n": outer.refreshes})
                    outer.access_tokens = {access}  # a refresh invalidates the older access tokens
                    return self.send_body(200, json.dumps({"access": access}).encode())
                return self.send_body(401, b'{"detail": "Token is invalid"}')

            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                if outer.auth:
                    header = self.headers.get("Authorization", "")
                    ok = header == f"Token {LEGACY}" or (
                        header.startswith("Bearer ") and header[7:] in outer.access_tokens
                    )
                    if not ok:
                        return self.send_body(401, b'{"detail": "Invalid token."}')
                entry = outer.files.get(self.path)
                if entry is None:
                    return self.send_body(404, b"not found")
                if isinstance(entry, tuple):
                    status, headers, body = entry
                    return self.send_body(status, body, headers)
                return self.send_body(200, entry, {"Content-Type": "image/png"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers_seen(self) -> list[str]:
        return [h.get("Authorization", "") for _, h in self.requests]


@pytest.fixture()
def label_studio():
    server = FakeServer(auth=True)
    yield server
    server.server.shutdown()


@pytest.fixture()
def elsewhere():
    server = FakeServer(auth=False)
    yield server
    server.server.shutdown()


LOOPBACK = AddressPolicy(("127.0.0.1",))  # the fake servers listen on loopback (the URL policy has its own tests)


def fetcher_for(ls: FakeServer | None, key: str = LEGACY, **kwargs) -> ImageFetcher:
    kwargs.setdefault("policy", LOOPBACK)
    return ImageFetcher(LabelStudioAuth(ls.url, key) if ls else None, **kwargs)


@pytest.mark.parametrize("key", [LEGACY, PAT])
def test_upload_with_either_key(label_studio, key):
    label_studio.files["/data/upload/1/a.png"] = png_bytes(6, 4)
    fetcher = fetcher_for(label_studio, key)
    image = fetcher.fetch("/data/upload/1/a.png")
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8 and tuple(image[0, 0]) == (10, 200, 30)
    # the raw upload key form that exports use
    assert fetcher.fetch("upload/1/a.png").shape == (4, 6, 3)
    if key == PAT:
        assert label_studio.refreshes == 1  # one access token, reused for the second image
        assert all(h.startswith("Bearer ") for h in label_studio.headers_seen()[1:])


def test_pat_refreshes_when_the_access_token_is_rejected(label_studio):
    label_studio.files["/data/upload/1/a.png"] = png_bytes()
    fetcher = fetcher_for(label_studio, PAT)
    fetcher.fetch("/data/upload/1/a.png")
    label_studio.access_tokens = set()  # the server forgets the access token: next use answers 401
    fetcher.fetch("/data/upload/1/a.png")
    assert label_studio.refreshes == 2
    label_studio.expire_next_access = True  # an access token that is already expired is refreshed before use
    fetcher.label_studio.headers(force_refresh=True)
    fetcher.fetch("/data/upload/1/a.png")
    assert label_studio.refreshes == 4


def test_wrong_keys_are_403(label_studio):
    label_studio.files["/data/upload/1/a.png"] = png_bytes()
    with pytest.raises(ImageError, match="LABEL_STUDIO_API_KEY") as info:
        fetcher_for(label_studio, "wrong").fetch("/data/upload/1/a.png")
    assert info.value.status_code == 403
    bad_pat = make_jwt({"token_type": "refresh", "exp": 9_999_999_999})
    with pytest.raises(ImageError, match="refused") as info:
        fetcher_for(label_studio, bad_pat).fetch("/data/upload/1/a.png")
    assert info.value.status_code == 403


def test_upload_falls_back_to_storage_proxy(label_studio):
    label_studio.files["/storage-data/uploaded/?filepath=upload/2/b.png"] = png_bytes(3, 3)
    assert fetcher_for(label_studio).fetch("/data/upload/2/b.png").shape == (3, 3, 3)


def test_local_files_from_document_root_or_label_studio(label_studio, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "c.png").write_bytes(png_bytes(5, 2))
    direct = fetcher_for(None, local_files_root=tmp_path)
    assert direct.fetch("/data/local-files/?d=dir/c.png").shape == (2, 5, 3)
    with pytest.raises(ImageError) as info:
        direct.fetch("/data/local-files/?d=../../etc/passwd")
    assert info.value.status_code in (403, 404)
    with pytest.raises(ImageError) as info:
        direct.fetch("/data/local-files/?d=dir/missing.png")
    assert info.value.status_code == 404
    label_studio.files["/data/local-files/?d=dir/c.png"] = png_bytes(5, 2)
    assert fetcher_for(label_studio).fetch("/data/local-files/?d=dir/c.png").shape == (2, 5, 3)


def test_presigned_cloud_url_never_forwards_the_key(label_studio, elsewhere):
    elsewhere.files["/bucket/d.png?X-Signature=abc"] = png_bytes(7, 7)
    uri = "gs://bucket/d.png"
    fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
    label_studio.files[f"/tasks/5/presign/?fileuri={fileuri}"] = (
        303,
        {"Location": f"{elsewhere.url}/bucket/d.png?X-Signature=abc"},
        b"",
    )
    assert fetcher_for(label_studio).fetch(uri, task_id=5).shape == (7, 7, 3)
    assert elsewhere.headers_seen() == [""]
    with pytest.raises(ImageError, match="presign"):
        fetcher_for(None).fetch(uri, task_id=5)


def test_plain_http_gets_no_key(label_studio, elsewhere):
    elsewhere.files["/e.png"] = png_bytes(2, 2)
    label_studio.files["/data/upload/1/abs.png"] = png_bytes(2, 2)
    fetcher = fetcher_for(label_studio)
    assert fetcher.fetch(f"{elsewhere.url}/e.png").shape == (2, 2, 3)
    # LS's own absolute URL of a media path: with the key
    assert fetcher.fetch(f"{label_studio.url}/data/upload/1/abs.png").shape == (2, 2, 3)
    assert elsewhere.headers_seen() == [""]
    assert label_studio.headers_seen() == [f"Token {LEGACY}"]
    with pytest.raises(ValueError, match="refusing"):
        fetcher.label_studio.get(f"{elsewhere.url}/e.png")


def test_s3_via_boto3_only_for_the_buckets_allowed(s3_bucket):
    import boto3

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="img/f.png", Body=png_bytes(4, 4))
    fetcher = fetcher_for(None, s3_buckets=(s3_bucket,))
    assert fetcher.fetch(f"s3://{s3_bucket}/img/f.png").shape == (4, 4, 3)
    with pytest.raises(ImageError) as info:
        fetcher.fetch(f"s3://{s3_bucket}/img/missing.png")
    assert info.value.status_code == 404
    # any other bucket: one 403 before any call, whether the object (or the bucket) exists or not
    answers = set()
    for uri in (f"s3://{s3_bucket}/img/f.png", f"s3://{s3_bucket}/img/missing.png", "s3://no-such-bucket-x/a.png"):
        with pytest.raises(ImageError, match="ADAPTIVECLICK_S3_BUCKETS") as info:
            fetcher_for(None, s3_buckets=("another-bucket",)).fetch(uri)
        answers.add((info.value.status_code, info.value.message.split("/...")[1]))
    assert len(answers) == 1 and next(iter(answers))[0] == 403


def test_exif_orientation_is_applied():
    buf = io.BytesIO()
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 5, 10))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(buf, format="JPEG", exif=exif, quality=95)
    rgb = decode_image(buf.getvalue())
    assert rgb.shape == (30, 10, 3)  # displayed upright: 10 wide, 30 high
    assert rgb[2, 5, 0] > 200 and rgb[-3, 5, 0] < 60  # the left strip is now on top


def test_limits_and_unreadable(elsewhere):
    elsewhere.files["/big.png"] = png_bytes(100, 100)
    elsewhere.files["/text.png"] = b"this is not an image"
    elsewhere.files["/broken.png"] = png_bytes(50, 50)[:60]
    elsewhere.files["/error"] = (500, {}, b"boom")
    fetcher = fetcher_for(None, limits=ImageLimits(max_bytes=200))
    with pytest.raises(ImageError, match="larger than") as info:
        fetcher.fetch(f"{elsewhere.url}/big.png")
    assert info.value.status_code == 413
    with pytest.raises(ImageError, match="pixels") as info:
        fetcher_for(None, limits=ImageLimits(max_pixels=99)).fetch(f"{elsewhere.url}/big.png")
    assert info.value.status_code == 413
    for path in ("/text.png", "/broken.png"):
        with pytest.raises(ImageError, match="not a readable image") as info:
            fetcher_for(None).fetch(f"{elsewhere.url}{path}")
        assert info.value.status_code == 422
    with pytest.raises(ImageError) as info:
        fetcher_for(None).fetch(f"{elsewhere.url}/missing.png")
    assert info.value.status_code == 404
    with pytest.raises(ImageError) as info:
        fetcher_for(None).fetch(f"{elsewhere.url}/error")
    assert info.value.status_code == 502
    with pytest.raises(ImageError) as info:
        fetcher_for(None, timeout=2).fetch("http://127.0.0.1:9/nothing-listens-here.png")
    assert info.value.status_code == 502


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "no image URL"),
        ("ftp://host/a.png", "unsupported"),
        ("relative/a.png", "unsupported"),
        ("/data/upload/1/a.png", "set LABEL_STUDIO_URL"),
    ],
)
def test_unusable_urls_are_422(url, message):
    with pytest.raises(ImageError, match=message) as info:
        fetcher_for(None).fetch(url)
    assert info.value.status_code == 422


@pytest.mark.parametrize(
    "url, status, message",
    [
        ("data:image/png,rawbytes", 400, "base64"),
        ("data:image/png;base64," + base64.b64encode(b"x" * 30).decode() + "!!junk!!" * 1000, 400, "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"x" * 30).decode() + "\nAAAA", 400, "not valid base64"),
        ("data:image/png;base64,QUJD=QUJD", 400, "not valid base64"),
        ("http://127.0.0.1/" + "a" * 20_000, 414, "more than the 16384"),
        ("/data/local-files/?d=plain.jpg%00.png", 400, "control character"),
        ("/data/upload/1/a%2500.png", 400, "control character"),
        ("http://127.0.0.1/a%0d%0aX-Injected: 1", 400, "control character"),
    ],
)
def test_strict_data_uris_long_urls_and_encoded_control_characters_are_4xx(url, status, message):
    with pytest.raises(ImageError, match=message) as info:
        fetcher_for(None).fetch(url)
    assert info.value.status_code == status


def test_gzip_and_deflate_bodies_are_inflated_within_the_size_cap(elsewhere):
    import gzip
    import zlib

    picture = png_bytes(20, 10)
    elsewhere.files["/g.png"] = (200, {"Content-Encoding": "gzip", "Content-Type": "image/png"}, gzip.compress(picture))
    elsewhere.files["/d.png"] = (200, {"Content-Encoding": "deflate"}, zlib.compress(picture))
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MiB of zeros in ~50 KB
    elsewhere.files["/bomb.png"] = (200, {"Content-Encoding": "gzip"}, bomb)
    elsewhere.files["/br.png"] = (200, {"Content-Encoding": "br"}, picture)
    elsewhere.files["/bad.png"] = (200, {"Content-Encoding": "gzip"}, b"not gzip at all")
    fetcher = fetcher_for(None, limits=ImageLimits(max_bytes=1 << 20))
    assert fetcher.fetch(f"{elsewhere.url}/g.png").shape == (10, 20, 3)
    assert fetcher.fetch(f"{elsewhere.url}/d.png").shape == (10, 20, 3)
    assert "gzip" in elsewhere.requests[0][1].get("Accept-Encoding", "")
    with pytest.raises(ImageError, match="larger than 1 MiB") as info:
        fetcher.fetch(f"{elsewhere.url}/bomb.png")
    assert info.value.status_code == 413
    for path, message in (("/br.png", "only gzip and deflate"), ("/bad.png", "broken Content-Encoding")):
        with pytest.raises(ImageError, match=message) as info:
            fetcher.fetch(f"{elsewhere.url}{path}")
        assert info.value.status_code == 422


def test_the_key_serves_only_the_project_and_task_that_asked(label_studio):
    """Uploads of another project and another task's presign call get no key (one 403, nothing sent); an
    anonymous scope gets no credential at all."""
    label_studio.files["/data/upload/1/a.png"] = png_bytes(2, 2)
    label_studio.files["/data/upload/2/x.png"] = png_bytes(2, 2)
    fetcher = fetcher_for(label_studio)
    project_1 = MediaScope(project=1)
    assert fetcher.fetch("/data/upload/1/a.png", 7, project_1).shape == (2, 2, 3)
    label_studio.requests.clear()
    refusals = set()
    for url, task, scope in (
        ("/data/upload/2/x.png", 7, project_1),  # exists, another project
        ("/data/upload/2/missing.png", 7, project_1),  # does not exist: the same answer
        (f"{label_studio.url}/data/upload/2/x.png", 7, project_1),
        ("/storage-data/uploaded/?filepath=upload/2/x.png", 7, project_1),
        ("/data/upload/1/a.png", 7, MediaScope()),  # the request names no project
        ("/data/upload/x/a.png", 7, project_1),
        ("/tasks/8/presign/?fileuri=czM6Ly9iL2s=", 7, project_1),  # another task's presign
    ):
        with pytest.raises(ImageError) as info:
            fetcher.fetch(url, task, scope)
        assert info.value.status_code == 403, url
        refusals.add(info.value.message.split("'", 2)[-1])
    assert len(refusals) == 2  # one message per reason (another project, another task), whatever the object
    assert label_studio.requests == []
    presign = "/tasks/7/presign/?fileuri=" + base64.urlsafe_b64encode(b"s3://b/k.png").decode()
    label_studio.files[presign] = png_bytes(2, 2)
    assert fetcher.fetch("s3://b/k.png", 7, project_1).shape == (2, 2, 3)  # its own task: presigned
    assert [path for path, _ in label_studio.requests] == [presign]
    # a redirect from an upload of the project to another project's upload goes without the key
    label_studio.files["/data/upload/1/r.png"] = (302, {"Location": "/data/upload/2/x.png"}, b"")
    label_studio.requests.clear()
    with pytest.raises(ImageError):
        fetcher.fetch("/data/upload/1/r.png", 7, project_1)
    assert [h.get("Authorization", "") for _, h in label_studio.requests] == [f"Token {LEGACY}", ""]
    # anonymous: no credential for anything that needs one, before anything is sent
    anonymous = MediaScope(project=1, refusal="anonymous: no credential")
    label_studio.requests.clear()
    for url in ("/data/upload/1/a.png", "/data/local-files/?d=a.png", "s3://bucket/k.png", "gs://b/k.png"):
        with pytest.raises(ImageError, match="anonymous: no credential") as info:
            fetcher_for(label_studio, s3_buckets=("bucket",)).fetch(url, 7, anonymous)
        assert info.value.status_code == 403
    assert label_studio.requests == []


def test_data_uri_and_load_image(elsewhere):
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(3, 2)).decode()
    assert fetcher_for(None).fetch(uri).shape == (2, 3, 3)
    elsewhere.files["/g.png"] = png_bytes(8, 3)
    assert load_image(f"{elsewhere.url}/g.png", LabelStudioSettings(allowed_hosts=("127.0.0.1",))).shape == (3, 8, 3)


def test_auth_helpers():
    assert jwt_claims(PAT)["token_type"] == "refresh" and jwt_claims(LEGACY) is None
    assert jwt_claims("a.b.c") is None
    assert LabelStudioAuth("http://x", PAT).kind == "pat"
    assert LabelStudioAuth("http://x", LEGACY).kind == "legacy"
    access = make_jwt({"token_type": "access", "exp": 9_999_999_999})
    assert LabelStudioAuth("http://x", access).headers() == {"Authorization": f"Bearer {access}"}
    assert same_origin("http://ls:8080/data/x", "http://ls:8080")
    assert same_origin("https://LS/x", "https://ls:443")
    assert not same_origin("http://ls:8081/x", "http://ls:8080")
    assert not same_origin("https://ls:8080/x", "http://ls:8080")
    assert not same_origin("http://ls.evil.com/x", "http://ls")
    parsed = urlparse("http://a/?d=1")
    assert parse_qs(parsed.query) == {"d": ["1"]}


# -- the API key goes only to Label Studio's media paths -----------------------------------------------------------

KEY_SCOPE_ESCAPES = [
    "/data/upload/../../api/projects/",
    "/data/upload/%2e%2e/%2e%2e/api/projects/",
    "/data/upload/%2E%2E/%2e%2E/api/projects/",
    "/data/upload/%252e%252e/%252e%252e/api/projects/",
    "/data/upload/..%2f..%2fapi/projects/",
    "/data/upload/..\\..\\api/projects/",
    "/data/upload/./../api/projects/",
    "/data/upload//../api/projects/",
    "/data/local-files/../../api/projects/",
    "/data/local-files/?d=../../../api/projects/",
    "/api/projects/",
    "/api/token/refresh/",
    "/tasks/1/presign/../../../api/projects/",
    "/tasks/1%2f..%2f../presign/",
]


@pytest.mark.parametrize("path", KEY_SCOPE_ESCAPES)
def test_paths_off_the_media_are_refused_before_anything_is_sent(label_studio, path):
    for url in (path, f"{label_studio.url}{path}"):
        with pytest.raises(ImageError, match="not a Label Studio media path") as info:
            fetcher_for(label_studio).fetch(url)
        assert info.value.status_code == 403
    assert label_studio.requests == []  # not a single request, with or without the key


def test_presign_needs_an_integer_task_id(label_studio):
    for task_id in ("1/../../api", "1?x=1", -1, True, 1.5):
        with pytest.raises(ImageError, match="not an integer") as info:
            fetcher_for(label_studio).fetch("s3://bucket/a.png", task_id=task_id)
        assert info.value.status_code == 422
    assert label_studio.requests == []


def test_the_key_does_not_follow_a_redirect_off_the_media(label_studio):
    label_studio.files["/data/upload/1/r.png"] = (302, {"Location": "/api/projects/"}, b"")
    label_studio.files["/data/upload/1/s.png"] = (302, {"Location": "/data/upload/1/t.png"}, b"")
    label_studio.files["/data/upload/1/t.png"] = png_bytes(3, 3)
    with pytest.raises(ImageError) as info:
        fetcher_for(label_studio).fetch("/data/upload/1/r.png")
    assert info.value.status_code == 403  # the fake Label Studio refused the key-less /api request
    assert [(p, h.get("Authorization", "")) for p, h in label_studio.requests] == [
        ("/data/upload/1/r.png", f"Token {LEGACY}"),
        ("/api/projects/", ""),
    ]
    label_studio.requests.clear()
    assert fetcher_for(label_studio).fetch("/data/upload/1/s.png").shape == (3, 3, 3)  # media to media: with it
    assert [h.get("Authorization") for _, h in label_studio.requests] == [f"Token {LEGACY}"] * 2


def test_nul_bytes_and_control_characters_are_4xx(label_studio, tmp_path):
    for url in ("/data/local-files/?d=a\x00b.png", "/data/upload/1/a\x00.png", "http://x/a\x00.png"):
        with pytest.raises(ImageError) as info:
            fetcher_for(label_studio, local_files_root=tmp_path).fetch(url)
        assert 400 <= info.value.status_code < 500
    with pytest.raises(ImageError) as info:
        fetcher_for(label_studio).fetch("/data/upload/1/a%00.png")
    assert info.value.status_code == 400
    assert label_studio.requests == []
    for name in ("x" * 5000 + ".png", "a/" * 3000 + "b.png"):  # ENAMETOOLONG and friends: 4xx, never 500
        with pytest.raises(ImageError) as info:
            fetcher_for(label_studio, local_files_root=tmp_path).fetch(f"/data/local-files/?d={name}")
        assert 400 <= info.value.status_code < 500


# -- hosts that misbehave mid-download ------------------------------------------------------------------------------


class BadHost:
    """A raw TCP server on loopback: ``stall`` sends headers and a little body, then nothing; ``reset`` sends part of
    the body and resets the connection; ``trickle`` sends one byte every 0.1 s."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/image.png"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        body = png_bytes(200, 200)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body))
        if self.mode == "stall":
            conn.sendall(body[:10])
            self.stop.wait(30)
        elif self.mode == "reset":
            conn.sendall(body[:50])
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        else:
            for byte in body:
                if self.stop.wait(0.1):
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize(
    "mode, message", [("stall", "broke off"), ("reset", "broke off"), ("trickle", "did not arrive within")]
)
def test_a_host_that_stalls_resets_or_trickles_is_4xx_within_the_deadline(mode, message):
    host = BadHost(mode)
    try:
        start = time.monotonic()
        with pytest.raises(ImageError, match=message) as info:
            fetcher_for(None, timeout=1.5).fetch(host.url)
        assert 400 <= info.value.status_code < 500
        assert time.monotonic() - start < 4  # one deadline for the whole download, not one per read
    finally:
        host.close()
