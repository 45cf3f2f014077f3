"""Deploy keys and host keys of ssh build sources.

A deploy key is made by the store (Ed25519) or pasted by the owner (an unencrypted OpenSSH
or PEM private key); either way only its public half is ever shown again, and the private
half is sealed at rest (:func:`store.builds.service.seal`) and written only into the
workspace of a running build.

Host keys: the owner may pin the server's keys (``known_hosts`` lines, e.g. the output of
``ssh-keyscan``). When none are pinned, the first ssh fetch accepts the server's key and the
store records it (trust on first use); every later fetch requires that same key, so a
changed key fails the build until the owner pins the new one or clears the recorded one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from store.errors import ValidationFailed

MAX_KEY = 20_000
MAX_KNOWN_HOSTS = 20_000
_KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
_SCP_HOST = re.compile(r"^[A-Za-z0-9._-]+@([A-Za-z0-9.-]+):")


def generate(comment: str) -> tuple[str, str]:
    """A new Ed25519 key pair: (private key in OpenSSH format, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    return private, _public_line(key, comment)


def _public_line(key: object, comment: str) -> str:
    if not isinstance(
        key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)
    ):
        raise ValidationFailed(
            "A deploy key is an Ed25519, ECDSA or RSA key",
            code="bad_deploy_key",
            field="deploy_key",
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{public.decode()} {comment}".strip()


def parse_private(value: str, comment: str) -> tuple[str, str]:
    """A pasted private key, checked: (the key as it will be written, its public key line)."""
    text = value.strip().replace("\r\n", "\n")
    first = text.splitlines()[0] if text else ""
    if not (first.startswith("-----BEGIN ") and first.endswith("PRIVATE KEY-----")):
        raise ValidationFailed(
            "A deploy key is an SSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)",
            code="bad_deploy_key",
            field="deploy_key",
        )
    if len(text) > MAX_KEY:
        raise ValidationFailed(
            "The deploy key is too long", code="bad_deploy_key", field="deploy_key"
        )
    data = text.encode() + b"\n"
    try:
        if "OPENSSH" in first:
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise ValidationFailed(
            "The deploy key must have no passphrase", code="bad_deploy_key", field="deploy_key"
        ) from exc
    except (ValueError, binascii.Error) as exc:
        raise ValidationFailed(
            "The deploy key could not be read: paste the whole private key file",
            code="bad_deploy_key",
            field="deploy_key",
        ) from exc
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and the like
        raise ValidationFailed(
            f"The deploy key is not a key the store can use ({type(exc).__name__})",
            code="bad_deploy_key",
            field="deploy_key",
        ) from exc
    return text + "\n", _public_line(key, comment)


def _blob(line: str) -> tuple[str, bytes] | None:
    """(key type, key blob) of a known_hosts line, or None when it is not one."""
    parts = line.split()
    if parts and parts[0].startswith("@"):  # @cert-authority / @revoked markers
        parts = parts[1:]
    if len(parts) < 3 or parts[1] not in _KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        return None
    name = parts[1].encode()
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4 : 4 + len(name)] != name:
        return None
    return parts[1], blob


def parse_known_hosts(value: str) -> str:
    """Owner-pinned host keys, checked line by line; comments and blank lines dropped."""
    text = value.strip().replace("\r\n", "\n")
    if len(text) > MAX_KNOWN_HOSTS:
        raise ValidationFailed(
            "The known hosts are too long", code="bad_known_hosts", field="known_hosts"
        )
    kept = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _blob(line) is None:
            raise ValidationFailed(
                f"Line {number} of the known hosts is not 'HOST KEYTYPE BASE64KEY' "
                "(as ssh-keyscan prints it)",
                code="bad_known_hosts",
                field="known_hosts",
            )
        kept.append(line)
    if not kept:
        raise ValidationFailed(
            "The known hosts have no host key line", code="bad_known_hosts", field="known_hosts"
        )
    return "\n".join(kept) + "\n"


def fingerprints(known_hosts: str) -> list[str]:
    """``ssh-ed25519 SHA256:…`` for each key, as ``ssh-keygen -l`` prints it."""
    found = []
    for line in known_hosts.splitlines():
        parsed = _blob(line)
        if parsed is not None:
            digest = base64.b64encode(hashlib.sha256(parsed[1]).digest()).decode().rstrip("=")
            found.append(f"{parsed[0]} SHA256:{digest}")
    return found


def host(url: str) -> str | None:
    """The ssh server of a Git URL (``host`` or ``host:port``); None when not ssh."""
    parts = urlsplit(url)
    if parts.scheme == "ssh":
        if parts.hostname is None:
            return None
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    if not parts.scheme and (match := _SCP_HOST.match(url)):
        return match.group(1)
    return None
