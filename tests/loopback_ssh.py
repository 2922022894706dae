"""A real OpenSSH server on 127.0.0.1 and a 'device' Python (numpy<2, tflite-runtime 2.14) for the remote tests.

The server uses throwaway host and user keys, listens on a free loopback port, and is stopped when
the test session ends; the client side is an ssh config file that pins that host key.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
DEVICE_PACKAGES = ("numpy<2", "tflite-runtime==2.14.0")
ALIAS = "edgecnn-loopback"


@dataclass
class LoopbackSsh:
    alias: str
    config: Path
    port: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> str:
    for old in (path, path.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@contextmanager
def loopback_ssh(folder: Path) -> Iterator[LoopbackSsh]:
    if not SSHD.exists():
        raise RuntimeError("openssh-server is missing: `make test` installs it (apt-get install openssh-server)")
    folder.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(folder / "host_key")
    user_key = _keygen(folder / "user_key")
    (folder / "authorized_keys").write_text(user_key + "\n")
    port = free_port()
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
    )
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    config = folder / "ssh_config"
    config.write_text(
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {folder / 'user_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
    )
    log = (folder / "sshd.log").open("w")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")], stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()}") from None
                time.sleep(0.1)
        yield LoopbackSsh(ALIAS, config, port)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def device_python(folder: Path) -> Path:
    """A separate virtual environment like an old Pi OS stack: numpy<2 and tflite-runtime, nothing else."""
    python = folder / "bin" / "python"
    if not (folder / ".installed").exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *DEVICE_PACKAGES], check=True)
        (folder / ".installed").touch()
    return python
