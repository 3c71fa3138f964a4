"""Which hosts the service may fetch task images from: the URL policy, enforced where the socket connects.

A task names any URL it likes, so by default the backend refuses addresses on its own network: loopback, private
(RFC 1918, unique-local), shared (CGNAT), link-local (cloud metadata at 169.254.169.254), multicast, reserved and
unspecified addresses, in every spelling (``127.1``, ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``, ...: the
check is made on the address the name resolves to, IPv4-mapped and embedded IPv6 forms included) and names such as
``localhost`` and ``metadata.google.internal``. The check runs on the very address the connection is made to (no
window for DNS rebinding between a check and the connect) and again at every redirect hop, and a refused address
gets one message whatever the state of its port, so the backend cannot be used to scan its network.

Always allowed: ``LABEL_STUDIO_URL``'s origin and the configured S3 endpoint's (``AWS_ENDPOINT_URL``; host and port:
another port of those hosts is not Label Studio). More with
``ADAPTIVECLICK_ALLOWED_HOSTS``: host names (``images.internal``, ``*.corp.example``) and networks (``10.0.0.0/8``,
``fd00::/8``) for internal image servers and compose networks.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from .errors import ImageError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AddrInfo = tuple[int, int, int, str, tuple]
#: names that mean "this host" or a cloud's metadata service whatever they resolve to
BLOCKED_NAMES = ("localhost", "localhost.localdomain", "metadata", "metadata.google.internal", "instance-data")
BLOCKED_SUFFIXES = (".localhost", ".internal", ".local")
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
ALLOW_SETTING = "ADAPTIVECLICK_ALLOWED_HOSTS"


class BlockedAddress(ImageError):
    """The image URL points at the backend's own network (403); the message names the setting that allows it."""

    status_code = 403


def embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def internal_reason(address: IpAddress) -> str | None:
    """Why ``address`` is on the backend's own network (None for a public address)."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return internal_reason(inner)
    for reason, test in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if test:
            return reason
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (CGNAT)"
    if not address.is_global:
        return "not globally routable"
    return None


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class AddressPolicy:
    """Which hosts images may come from.

    Args:
        allowed: entries of ``ADAPTIVECLICK_ALLOWED_HOSTS``: host names (``*.`` prefix for a domain) and networks.
        trusted: ``(host, port)`` origins always allowed whatever they resolve to (Label Studio's, the S3
            endpoint's).
    """

    allowed: tuple[str, ...] = ()
    trusted: tuple[tuple[str, int], ...] = ()
    _networks: tuple[IpNetwork, ...] = field(default=(), init=False, repr=False)
    _names: tuple[str, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        networks, names = [], []
        for entry in (e.strip() for e in self.allowed if e.strip()):
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not all(part.isalnum() or part in "-_*" for part in entry.replace(".", "")):
                    raise ValueError(f"{ALLOW_SETTING}: {entry!r} is neither a host name nor a network") from None
                names.append(_normal_host(entry))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_names", tuple(names))
        object.__setattr__(self, "trusted", tuple((_normal_host(h), int(p)) for h, p in self.trusted))

    @classmethod
    def for_urls(cls, allowed: tuple[str, ...], *trusted_urls: str | None) -> AddressPolicy:
        """The policy with the origins of ``trusted_urls`` (Label Studio's, the S3 endpoint's) always allowed."""
        origins = []
        for url in filter(None, trusted_urls):
            parsed = urlparse(url)
            if parsed.hostname:
                origins.append((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)))
        return cls(allowed, tuple(origins))

    def _name_allowed(self, host: str) -> bool:
        return any(host == name or (name.startswith("*.") and host.endswith(name[1:])) for name in self._names)

    def _address_allowed(self, address: IpAddress) -> bool:
        return any(address in network for network in self._networks if network.version == address.version)

    def refusal(self, host: str, port: int, address: IpAddress | None = None) -> str | None:
        """Why connecting to ``host:port`` (at ``address``, once resolved) is refused, None when it is allowed."""
        name = _normal_host(host)
        if (name, port) in self.trusted or self._name_allowed(name):
            return None
        if address is None:
            if name in BLOCKED_NAMES or name.endswith(BLOCKED_SUFFIXES):
                return "a name of the backend's own host or network"
            return None
        reason = internal_reason(address)
        if reason is None or self._address_allowed(address):
            return None
        return f"a {reason} address"

    def addresses(self, host: str, port: int) -> list[AddrInfo]:
        """The resolved addresses of ``host`` the policy allows, for the connect; :class:`BlockedAddress` when there
        are none (one message whatever the port's state: nothing is connected to first)."""
        name = _normal_host(host)
        why = self.refusal(name, port)
        if why:
            raise self.blocked(host, why)
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ImageError(f"cannot resolve image host {host!r}: {exc}", 422) from None
        allowed: list[AddrInfo] = []
        refused = None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            why = self.refusal(name, port, address)
            if why is None:
                allowed.append(info)
            else:
                refused = refused or why
        if not allowed:
            raise self.blocked(host, refused or "no address")
        return allowed

    @staticmethod
    def blocked(host: str, why: str) -> BlockedAddress:
        return BlockedAddress(
            f"image URL host {host!r} is refused: it is {why}, on the backend's own network. Images from internal "
            f"hosts need {ALLOW_SETTING} (host names or networks), or serve them through Label Studio"
        )


def policy_session(policy: AddressPolicy) -> requests.Session:
    """A requests session whose every connection goes only to addresses ``policy`` allows (checked at the connect
    itself). Environment proxies are not used: the check must see the address the image comes from."""
    session = requests.Session()
    session.trust_env = False
    adapter = _PolicyAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _connect(policy: AddressPolicy, connection: HTTPConnection) -> socket.socket:
    """What urllib3's ``create_connection`` does, over the policy's addresses only."""
    error: OSError | None = None
    for family, kind, proto, _, address in policy.addresses(connection.host, connection.port):
        sock = socket.socket(family, kind, proto)
        try:
            for option in connection.socket_options or ():
                sock.setsockopt(*option)
            if isinstance(connection.timeout, (int, float)):
                sock.settimeout(connection.timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise NewConnectionError(connection, f"Failed to establish a new connection: {error}")


def _connection_classes(policy: AddressPolicy) -> tuple[type[HTTPConnection], type[HTTPSConnection]]:
    class PolicyHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(policy, self)

    class PolicyHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(policy, self)

    return PolicyHTTPConnection, PolicyHTTPSConnection


class _PolicyAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http, https = _connection_classes(self.policy)

        class HTTPPool(HTTPConnectionPool):
            ConnectionCls = http

        class HTTPSPool(HTTPSConnectionPool):
            ConnectionCls = https

        self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
