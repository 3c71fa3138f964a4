"""nginx from Debian in front of backend replicas on loopback, configured by the shipped ``deploy/nginx`` files.

The shipped ``adaptiveclick.conf`` is used as it is, but for two lines a test cannot keep (the port it listens on
and the access log's path), each replaced exactly once; ``adaptiveclick-replicas.conf`` lists the test's replicas.
A missing nginx fails the test with the command that installs it (``make nginx`` does, as CI does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from conftest import REPO, free_port, wait_for_port

NGINX_DIR = REPO / "deploy" / "nginx"
SITE = "adaptiveclick.conf"
REPLICAS = "adaptiveclick-replicas.conf"
INSTALL_HINT = "nginx is not installed: `make nginx` (apt-get install -y nginx-light) installs it"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"), Path("/usr/local/sbin/nginx")) if p.exists()), None
    )


def replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"{SITE} should hold {old!r} exactly once")
    return text.replace(old, new)


class NginxProxy:
    """nginx on a free loopback port, over ``backends`` (``host:port``); its access log is JSON lines."""

    def __init__(self, folder: Path, backends: list[str]) -> None:
        binary = nginx_binary()
        if binary is None:
            raise AssertionError(INSTALL_HINT)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = folder / "access.log"
        site = (NGINX_DIR / SITE).read_text()
        site = replace_once(site, "listen 9090;", f"listen 127.0.0.1:{self.port};")
        site = replace_once(site, "/var/log/nginx/adaptiveclick.log", str(self.access_log))
        (folder / SITE).write_text(site)
        shipped = [line for line in (NGINX_DIR / REPLICAS).read_text().splitlines() if line.startswith("server ")]
        options = shipped[0].split(None, 2)[2]  # what follows the address in the shipped lines (max_fails=...)
        (folder / REPLICAS).write_text("".join(f"server {backend} {options}\n" for backend in backends))
        temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (folder / "nginx.conf").write_text(
            "daemon off;\nworker_processes 1;\n"
            f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} notice;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
            f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
            f"  scgi_temp_path {temp['scgi']};\n"
            f"  include {SITE};\n"
            "}\n"
        )
        command = [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise AssertionError(f"nginx -t refused the configuration: {checked.stderr}")
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.close()
            raise AssertionError(f"nginx did not listen: {self.error_log()[-2000:]}") from None

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_lines(self) -> list[dict]:
        """The access log's JSON lines so far."""
        time.sleep(0.2)  # nginx writes a request's line once its response has gone
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
