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
import threading
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from labelstudio.auth import LabelStudioAuth, jwt_claims, same_origin
from labelstudio.errors import ImageError
from labelstudio.media import ImageFetcher, decode_image, load_image
from labelstudio.settings import ImageLimits, LabelStudioSettings

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

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                outer.requests.append((self.path, dict(self.headers)))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/token/refresh/" and body.get("refresh") == PAT:
                    outer.refreshes += 1
                    exp = time.time() + (-10 if outer.expire_next_access else 300)
                    outer.expire_next_access = False
                    access = make_jwt({"token_type": "access", "exp": exp, "n": outer.refreshes})
                    outer.access_tokens = {access}  # a refresh invalidates the older access tokens
                    return self._send(200, json.dumps({"access": access}).encode())
                return self._send(401, b'{"detail": "Token is invalid"}')

            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                if outer.auth:
                    header = self.headers.get("Authorization", "")
                    ok = header == f"Token {LEGACY}" or (
                        header.startswith("Bearer ") and header[7:] in outer.access_tokens
                    )
                    if not ok:
                        return self._send(401, b'{"detail": "Invalid token."}')
                entry = outer.files.get(self.path)
                if entry is None:
                    return self._send(404, b"not found")
                if isinstance(entry, tuple):
                    status, headers, body = entry
                    return self._send(status, body, headers)
                return self._send(200, entry, {"Content-Type": "image/png"})

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


def fetcher_for(ls: FakeServer | None, key: str = LEGACY, **kwargs) -> ImageFetcher:
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
    label_studio.files["/abs.png"] = png_bytes(2, 2)
    fetcher = fetcher_for(label_studio)
    assert fetcher.fetch(f"{elsewhere.url}/e.png").shape == (2, 2, 3)
    assert fetcher.fetch(f"{label_studio.url}/abs.png").shape == (2, 2, 3)  # LS's own absolute URL: with key
    assert elsewhere.headers_seen() == [""]
    assert label_studio.headers_seen() == [f"Token {LEGACY}"]
    with pytest.raises(ValueError, match="refusing"):
        fetcher.label_studio.get(f"{elsewhere.url}/e.png")


def test_s3_via_boto3(s3_bucket):
    import boto3

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="img/f.png", Body=png_bytes(4, 4))
    fetcher = fetcher_for(None)
    assert fetcher.fetch(f"s3://{s3_bucket}/img/f.png").shape == (4, 4, 3)
    with pytest.raises(ImageError) as info:
        fetcher.fetch(f"s3://{s3_bucket}/img/missing.png")
    assert info.value.status_code == 404


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
        ("data:image/png,rawbytes", "base64"),
    ],
)
def test_unusable_urls_are_422(url, message):
    with pytest.raises(ImageError, match=message) as info:
        fetcher_for(None).fetch(url)
    assert info.value.status_code == 422


def test_data_uri_and_load_image(elsewhere):
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(3, 2)).decode()
    assert fetcher_for(None).fetch(uri).shape == (2, 3, 3)
    elsewhere.files["/g.png"] = png_bytes(8, 3)
    assert load_image(f"{elsewhere.url}/g.png", LabelStudioSettings()).shape == (3, 8, 3)


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
