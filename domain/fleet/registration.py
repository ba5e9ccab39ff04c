"""What an admin gives to register a node, checked before anything is stored or contacted."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from domain.errors import Conflict, Problem, ProblemCollector
from domain.fleet.nodes import NodeAuth, NodeErrorCode

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")  # fmt: skip
# What useradd accepts by default; the name ends up in commands, so nothing else gets through.
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_REGION = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._:/ -]{0,128}$")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|"
                       r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
                       r" [A-Za-z0-9+/]+={0,2}$")  # fmt: skip
MAX_LABELS = 32
MAX_PRIVATE_KEY = 16 * 1024


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A validated registration. `private_key` is held only until it is sealed."""

    name: str
    host: str
    port: int
    ssh_user: str
    auth: NodeAuth
    private_key: str | None
    host_key: str | None
    region: str
    labels: Mapping[str, str]

    def __repr__(self) -> str:  # never print the key, not even in a traceback
        return f"NodeSpec(name={self.name!r}, host={self.host!r}, port={self.port})"

    @classmethod
    def create(
        cls, *, name: str, host: str, port: int, ssh_user: str, private_key: str | None,
        use_ca: bool, host_key: str | None, region: str, labels: Mapping[str, str],
    ) -> NodeSpec:  # fmt: skip
        """Check every value and report all problems at once (raises `InvalidInput`). Whether
        the private key parses is the key codec's call, made by the service."""
        p = ProblemCollector()
        name, host, ssh_user, region = name.strip(), host.strip(), ssh_user.strip(), region.strip()
        if not _NAME.match(name):
            p.add(NodeErrorCode.INVALID_NAME,
                  "Name must be 1-63 lowercase letters, digits or '-', starting with a letter "
                  "or digit.", "name")  # fmt: skip
        if not _valid_host(host):
            p.add(NodeErrorCode.INVALID_HOST, "Host must be a DNS name or an IP address.", "host")
        if isinstance(port, bool) or not 1 <= port <= 65535:
            p.add(NodeErrorCode.INVALID_PORT, "Port must be from 1 to 65535.", "port")
        if not _SSH_USER.match(ssh_user):
            p.add(NodeErrorCode.INVALID_SSH_USER,
                  "SSH user must be a Linux user name (lowercase letters, digits, '_' or '-').",
                  "sshUser")  # fmt: skip
        key = private_key.strip() if private_key else None
        if (key is None) == (not use_ca):
            p.add(NodeErrorCode.CREDENTIAL_REQUIRED,
                  "Give exactly one of a private key or useCa.", "privateKey")  # fmt: skip
        elif key is not None and len(key) > MAX_PRIVATE_KEY:
            p.add(NodeErrorCode.INVALID_PRIVATE_KEY, "The private key is too long.", "privateKey")
        pinned = " ".join(host_key.split()[:2]) if host_key and host_key.strip() else None
        if pinned is not None and not _HOST_KEY.match(pinned):
            p.add(NodeErrorCode.INVALID_HOST_KEY,
                  "Host key must be an OpenSSH public key line, e.g. 'ssh-ed25519 AAAA...'.",
                  "hostKey")  # fmt: skip
        if not _REGION.match(region):
            p.add(NodeErrorCode.INVALID_REGION,
                  "Region must be 2-32 lowercase letters, digits or '-', starting with a letter.",
                  "region")  # fmt: skip
        _check_labels(p, labels)
        p.raise_if_any()
        return cls(name=name, host=host.lower(), port=port, ssh_user=ssh_user,
                   auth=NodeAuth.CA if use_ca else NodeAuth.KEY,
                   private_key=key + "\n" if key else None, host_key=pinned, region=region,
                   labels=dict(labels))  # fmt: skip


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host)) and not host.replace(".", "").isdigit()


def _check_labels(p: ProblemCollector, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        p.add(NodeErrorCode.INVALID_LABELS, f"At most {MAX_LABELS} labels.", "labels")
        return
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            p.add(NodeErrorCode.INVALID_LABELS,
                  f"Label {key[:64]!r}: keys are lowercase letters, digits, '.', '_', '/' or '-' "
                  "(up to 63); values up to 128 plain characters.", "labels")  # fmt: skip


def name_taken(name: str) -> Conflict:
    return Conflict(Problem(NodeErrorCode.NAME_TAKEN, f"A node named {name!r} exists.", "name"))


def address_taken(host: str, port: int) -> Conflict:
    return Conflict(Problem(NodeErrorCode.ADDRESS_TAKEN,
                            f"A node at {host}:{port} is registered already.", "host"))  # fmt: skip
