"""A real docker-registry on 127.0.0.1 (plain or htpasswd) and images built by peer tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    """A docker-registry process this test session started (and will stop)."""

    host: str
    data: Path
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    user: str | None = None
    password: str | None = None

    def start(self) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)],
                                     stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as exc:
                # 401 means it is up. Close it now: left to the cyclic GC, its socket is
                # reported unclosed in whichever later test the collection happens.
                exc.close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def make_registry(base: Path, htpasswd: bool) -> Registry:
    port = _free_port()
    data = base / "data"
    data.mkdir(parents=True)
    auth = ""
    user = password = None
    if htpasswd:
        user, password = "cowfs", "s3cret-pass"
        r = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True,
                           text=True, check=True)
        (base / "htpasswd").write_text(r.stdout)
        auth = f"auth:\n  htpasswd:\n    realm: cowfs-test\n    path: {base}/htpasswd\n"
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {data}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    reg = Registry(f"127.0.0.1:{port}", data, config, base / "registry.log",
                   user=user, password=password)
    reg.start()
    return reg


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run skopeo in a private mount namespace with throwaway policy/registries files."""
    policy = Path(os.environ.get("TMPDIR", "/tmp")) / "cowfs-skopeo-policy.json"
    if not policy.exists():
        policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    cmd = ["unshare", "-m", "--propagation", "private", "skopeo", "--policy", str(policy),
           *args]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {r.stderr}")
    return r


def busybox_rootfs(dest: Path, marker: str = "base") -> Path:
    """A tiny real rootfs: busybox-static plus a few files."""
    (dest / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    for name in ("sh", "ls", "cat", "echo", "true"):
        os.symlink("busybox", dest / "bin" / name)
    (dest / "etc").mkdir()
    (dest / "etc" / "marker").write_text(marker + "\n")
    return dest


def umoci_layout(base: Path, tag: str = "latest", layers: int = 2) -> Path:
    """Build an OCI layout with umoci: a busybox layer plus ``layers-1`` small ones."""
    layout = base / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True, capture_output=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:{tag}"], check=True,
                   capture_output=True)
    bundle = base / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True)
    rootfs = bundle / "rootfs"
    busybox_rootfs(rootfs)
    subprocess.run(["umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{tag}",
                        str(bundle)], check=True,
                   capture_output=True)
    for i in range(1, layers):
        (rootfs / "etc" / f"layer{i}").write_text(f"layer {i}\n" * (i * 100))
        if i == 1:
            (rootfs / "etc" / "marker").unlink()
        subprocess.run(["umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{tag}",
                        str(bundle)],
                       check=True, capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:{tag}", "--config.cmd", "/bin/sh"],
                   check=True, capture_output=True)
    return layout


class TokenServer:
    """A bearer-token server for docker-registry's ``auth: token`` mode.

    Checks basic credentials and issues RS256 JWTs signed with a throwaway key (openssl),
    identified by the libtrust key ID of the certificate the registry trusts, granting
    exactly the scopes asked for.
    """

    def __init__(self, base: Path, user: str, password: str) -> None:
        import base64
        import hashlib
        import http.server
        import json
        import threading

        self.user, self.password = user, password
        self.key, self.cert = base / "token.key", base / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=cowfs-token", "-keyout", str(self.key), "-out",
                        str(self.cert)], check=True, capture_output=True)
        spki = subprocess.run(
            f"openssl x509 -in {self.cert} -pubkey -noout | openssl pkey -pubin -outform DER",
            shell=True, check=True, capture_output=True).stdout
        b32 = base64.b32encode(hashlib.sha256(spki).digest()[:30]).decode().rstrip("=")
        self.kid = ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))
        self.issued = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                import urllib.parse

                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.end_headers()
                    return
                token = server.sign(q.get("service", [""])[0], q.get("scope", []))
                body = json.dumps({"token": token, "access_token": token,
                                   "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, service: str, scopes: list[str]) -> str:
        import base64
        import json
        import secrets

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).decode().rstrip("=")

        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "cowfs-token-issuer", "sub": self.user, "aud": service,
                  "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        signing_input = f"{head}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), capture_output=True,
                             check=True).stdout
        self.issued += 1
        return f"{signing_input}.{b64(sig)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def make_token_registry(base: Path) -> tuple[Registry, TokenServer]:
    """docker-registry in ``auth: token`` mode backed by a `TokenServer`."""
    tokens = TokenServer(base, "cowfs", "t0ken-pass")
    port = _free_port()
    data = base / "data"
    data.mkdir(parents=True)
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {data}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: cowfs-registry\n"
        f"    issuer: cowfs-token-issuer\n    rootcertbundle: {tokens.cert}\n")
    reg = Registry(f"127.0.0.1:{port}", data, config, base / "registry.log",
                   user=tokens.user, password=tokens.password)
    try:
        reg.start()
    except BaseException:
        tokens.stop()
        raise
    return reg, tokens
