"""CURVE encryption and authentication for every socket streamlab opens (pyzmq's `zmq.auth`).

The side that binds is the CURVE server: it holds a key pair and a directory of the public keys
it lets in (`CurveServer`). The side that connects is the client: it holds its own key pair and
the server's public key (`CurveClient`). A client whose key is not listed never completes the
handshake, so it receives nothing and can send nothing; each refusal is logged on the
`streamlab.security` logger with the key and the endpoint. Key pairs are the files
`zmq.auth.create_certificates` writes (`NAME.key` public, `NAME.key_secret` secret); `streamlab
keys new NAME` makes them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from streamlab.errors import ConfigError

log = logging.getLogger("streamlab.security")

_HOW = "make key pairs with `streamlab keys new NAME --dir DIR`"


@dataclass(frozen=True)
class CurveServer:
    """The binding side: its own secret key file and the directory of allowed public keys."""

    secret_key: str | Path
    allow_dir: str | Path


@dataclass(frozen=True)
class CurveClient:
    """The connecting side: its own secret key file and the server's public key file."""

    secret_key: str | Path
    server_key: str | Path


def new_keys(name: str, directory: str | Path) -> tuple[Path, Path]:
    """Write a new key pair `NAME.key` (public: give it to the peers) and `NAME.key_secret`
    (keep it private) into `directory`; returns (public, secret) paths."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r} must be a plain file name, e.g. rig1")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise ConfigError(f"{public} or {secret} exists already; pick another name or delete them")
    made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
    Path(made_secret).chmod(0o600)
    return Path(made_public), Path(made_secret)


def _key_pair(path: str | Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a CURVE key pair from {path}: {exc}; {_HOW}") from exc
    if secret is None:
        raise ConfigError(f"{path} holds only a public key; give the .key_secret file ({_HOW})")
    return public, secret


def _public_key(path: str | Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a CURVE public key from {path}: {exc}; {_HOW}") from exc
    return public


def _allowed_keys(directory: str | Path) -> set[bytes]:
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"CURVE allow directory {folder} does not exist; {_HOW}")
    keys = {_public_key(path) for path in sorted(folder.glob("*.key"))}
    if not keys:
        raise ConfigError(f"{folder} holds no public keys (*.key): nobody could connect; {_HOW}")
    return keys


class _AllowList:
    """ZAP credentials provider for one server socket: listed keys in, the rest refused and
    logged."""

    def __init__(self, keys: set[bytes], endpoint: str, directory: str | Path) -> None:
        self.keys, self.endpoint, self.directory = keys, endpoint, str(directory)
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.refused += 1
        log.warning(
            "refused a client with CURVE key %s on %s: not in %s",
            key.decode("ascii", "replace"),
            self.endpoint,
            self.directory,
        )
        return False


_authenticators: dict[int, ThreadAuthenticator] = {}
_domains = itertools.count()
_lock = threading.Lock()


def _authenticator(context: zmq.Context) -> ThreadAuthenticator:
    """One ZAP handler per context, started on first use and stopped at interpreter exit."""
    with _lock:
        auth = _authenticators.get(id(context))
        if auth is None:
            auth = ThreadAuthenticator(context, log=logging.getLogger("streamlab.security.zap"))
            auth.start()
            _authenticators[id(context)] = auth
        return auth


def secure_server(sock: zmq.Socket, server: CurveServer, endpoint: str) -> _AllowList:
    """Make `sock` (not yet bound) a CURVE server that lets in only the keys in the allow
    directory; returns the allow list (its `refused` counts refusals)."""
    public, secret = _key_pair(server.secret_key)
    allow = _AllowList(_allowed_keys(server.allow_dir), endpoint, server.allow_dir)
    domain = f"streamlab-{next(_domains)}"
    _authenticator(sock.context).configure_curve_callback(domain, credentials_provider=allow)
    sock.zap_domain = domain.encode()
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True
    return allow


def secure_client(sock: zmq.Socket, client: CurveClient) -> None:
    """Make `sock` (not yet connected) a CURVE client of the server whose public key is given."""
    public, secret = _key_pair(client.secret_key)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = _public_key(client.server_key)
