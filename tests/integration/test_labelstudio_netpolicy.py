"""The URL policy: image URLs on the backend's own network are refused in every spelling, at the connect itself and
at every redirect hop, with one message whatever the port's state; allow-listed and trusted origins pass."""

from __future__ import annotations

import http.server
import io
import ipaddress
import socket
import threading
from urllib.parse import unquote

import pytest
from PIL import Image

from adaptiveclick.labelstudio.errors import ImageError
from adaptiveclick.labelstudio.media import ImageFetcher
from adaptiveclick.labelstudio.netpolicy import AddressPolicy, BlockedAddress, internal_reason
from adaptiveclick.labelstudio.settings import LabelStudioSettings, SettingsError

from conftest import free_port
from quiet_http import QuietHandler


def png_1x1() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG_1X1 = png_1x1()

# spellings of the backend's own network; each resolves (getaddrinfo, no DNS needed) or is refused by name
INTERNAL_HOSTS = [
    "127.0.0.1",
    "localhost",
    "0.0.0.0",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "[::]",
    "169.254.169.254",
    "metadata.google.internal",
    "metadata",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "[fd00::1]",
    "[fe80::1]",
    "224.0.0.1",
    "[ff02::1]",
    "255.255.255.255",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "[::ffff:169.254.169.254]",
    "foo.localhost",
    "db.internal",
]


class ImageHandler(QuietHandler):
    """Serves a 1x1 PNG at /ok.png and redirects /to?u=URL (for the redirect checks)."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        ImageHandler.hits.append(self.path)
        if self.path.startswith("/to?u="):
            return self.send_body(302, headers={"Location": unquote(self.path[len("/to?u=") :])})
        self.send_body(200, PNG_1X1, {"Content-Type": "image/png"})


@pytest.fixture()
def image_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ImageHandler.hits = []
    yield server.server_address[1]
    server.shutdown()


def refusal(fetcher: ImageFetcher, url: str) -> tuple[int, str]:
    with pytest.raises(ImageError) as info:
        fetcher.fetch(url)
    return info.value.status_code, str(info.value)


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
def test_every_spelling_of_the_own_network_is_refused(host):
    status, message = refusal(ImageFetcher(), f"http://{host}:8080/image.png")
    assert status == 403 and "ADAPTIVECLICK_ALLOWED_HOSTS" in message and "own network" in message


def test_addresses_are_classified_with_embedded_ipv4():
    for text in ("127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a9fe:a9fe::", "100.64.1.1"):
        assert internal_reason(ipaddress.ip_address(text)) is not None, text
    for text in ("8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"):
        assert internal_reason(ipaddress.ip_address(text)) is None, text


def test_open_and_closed_ports_answer_alike(image_server):
    """Nothing is connected to before the check, so a refused host cannot be scanned."""
    closed = free_port()
    open_answer = refusal(ImageFetcher(), f"http://127.0.0.1:{image_server}/ok.png")
    closed_answer = refusal(ImageFetcher(), f"http://127.0.0.1:{closed}/ok.png")
    assert open_answer[0] == closed_answer[0] == 403
    assert open_answer[1].replace(str(image_server), "P") == closed_answer[1].replace(str(closed), "P")
    assert ImageHandler.hits == []  # the open port never saw a request


@pytest.mark.parametrize(
    "allowed, host",
    [("127.0.0.0/8", "127.0.0.1"), ("localhost", "localhost"), ("*.localdomain", "localhost.localdomain")],
)
def test_allow_list_by_network_and_by_name(image_server, allowed, host):
    if host == "localhost.localdomain":  # a name check only: the name need not resolve here
        assert AddressPolicy((allowed,)).refusal(host, 80) is None
        assert AddressPolicy().refusal(host, 80) is not None
        return
    fetcher = ImageFetcher(policy=AddressPolicy((allowed,)))
    assert fetcher.fetch(f"http://{host}:{image_server}/ok.png").shape == (1, 1, 3)


def test_trusted_origin_is_host_and_port(image_server):
    """Label Studio's origin is always allowed; another port of its host is not Label Studio."""
    policy = AddressPolicy.for_urls((), f"http://127.0.0.1:{image_server}")
    fetcher = ImageFetcher(policy=policy)
    assert fetcher.fetch(f"http://127.0.0.1:{image_server}/ok.png").shape == (1, 1, 3)
    assert refusal(fetcher, f"http://127.0.0.1:{free_port()}/ok.png")[0] == 403


def test_every_redirect_hop_is_checked(image_server):
    """An allowed host that redirects to the own network is refused at that hop."""
    fetcher = ImageFetcher(policy=AddressPolicy.for_urls((), f"http://127.0.0.1:{image_server}"))
    status, message = refusal(fetcher, f"http://127.0.0.1:{image_server}/to?u=http://169.254.169.254/latest/meta-data")
    assert status == 403 and "169.254.169.254" in message
    status, _ = refusal(fetcher, f"http://127.0.0.1:{image_server}/to?u=http://[::1]:{image_server}/ok.png")
    assert status == 403
    # redirects within the allowed origin are followed
    assert fetcher.fetch(f"http://127.0.0.1:{image_server}/to?u=/ok.png").shape == (1, 1, 3)


def test_the_connect_uses_the_checked_address(monkeypatch, image_server):
    """A name that resolves to a public and a private address: only the allowed one is connected to (the check and
    the connect see the same resolution, so DNS rebinding has no window)."""
    calls = []
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        calls.append(host)
        if host == "rebind.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    status, message = refusal(ImageFetcher(), f"http://rebind.example:{image_server}/ok.png")
    assert status == 403 and "private" in message and calls.count("rebind.example") == 1
    allowed = ImageFetcher(policy=AddressPolicy(("127.0.0.0/8",)))
    assert allowed.fetch(f"http://rebind.example:{image_server}/ok.png").shape == (1, 1, 3)


def test_settings_build_the_policy():
    settings = LabelStudioSettings.from_env(
        {
            "ADAPTIVECLICK_ALLOWED_HOSTS": "10.0.0.0/8, images.corp",
            "LABEL_STUDIO_URL": "http://label-studio:8080",
            "AWS_ENDPOINT_URL": "http://minio:9000",
        }
    )
    policy = settings.address_policy()
    assert policy.trusted == (("label-studio", 8080), ("minio", 9000))
    assert policy.refusal("10.2.3.4", 80, ipaddress.ip_address("10.2.3.4")) is None
    assert policy.refusal("images.corp", 80, ipaddress.ip_address("192.168.0.9")) is None
    assert policy.refusal("other.corp", 80, ipaddress.ip_address("192.168.0.9")) == "a private address"
    with pytest.raises(SettingsError, match="ADAPTIVECLICK_ALLOWED_HOSTS"):
        LabelStudioSettings(allowed_hosts=("not a host!",))


def test_blocked_address_is_an_image_error_403():
    assert issubclass(BlockedAddress, ImageError) and BlockedAddress("x").status_code == 403
