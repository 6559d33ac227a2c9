"""Who may do what on a dashboard others can open, and which folders a typed path may reach.

Served on this machine only (the default), whoever opens the dashboard is its owner. Shared on
the network (`python -m core share`, `make share`), the server holds two keys, in the spirit of
Jupyter's token: the **view key** (in the link given to the room) lets a visitor look at the
owner's dataset, runs, results and report and drop images on Predict; the **owner key** is
needed for everything that changes state or reaches a new server path. A visitor with neither
sees only "ask the presenter for the link". Keys are compared in constant time and never logged.

Folders typed into the dashboard must resolve (symbolic links followed) under the allowed
roots: `GRAFT_DATA_ROOTS` (os.pathsep-separated), else the user's home, the Graft cache (with
its samples) and the runs folder. The command line is the owner's own shell and is not confined.
"""
from __future__ import annotations

import errno
import hmac
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from core.base.errors import BadInput, Busy
from core.base.storage import cache_home, default_runs_root

VIEW_KEY_ENV, OWNER_KEY_ENV, ROOTS_ENV = "GRAFT_VIEW_KEY", "GRAFT_OWNER_KEY", "GRAFT_DATA_ROOTS"
KEY_PARAM = "key"  # the query parameter a link carries its key in

OWNER, VIEWER = "owner", "viewer"


@dataclass(frozen=True)
class Keys:
    view: str
    owner: str

    def __repr__(self) -> str:  # never printed by accident (logs, tracebacks)
        return "Keys(view=***, owner=***)"


def new_keys() -> Keys:
    """Two fresh random keys (128 bits each)."""
    return Keys(view=secrets.token_urlsafe(16), owner=secrets.token_urlsafe(16))


def sharing_keys(environ: dict | None = None) -> Keys | None:
    """The keys this server was started with, or None when it is not shared (local only).

    A key the environment leaves empty is replaced by a random one nobody knows, so setting only
    the owner key shares with nobody but the owner."""
    env = os.environ if environ is None else environ
    view, owner = env.get(VIEW_KEY_ENV, "").strip(), env.get(OWNER_KEY_ENV, "").strip()
    if not view and not owner:
        return None
    spare = new_keys()
    return Keys(view=view or spare.view, owner=owner or spare.owner)


def role_for(given: str | None, keys: Keys | None) -> str | None:
    """'owner', 'viewer' or None (no access) for a key a visitor presented."""
    if keys is None:
        return OWNER
    if not given:
        return None
    given_bytes = given.strip().encode()
    if hmac.compare_digest(given_bytes, keys.owner.encode()):
        return OWNER
    if hmac.compare_digest(given_bytes, keys.view.encode()):
        return VIEWER
    return None


def network_address() -> str:
    """This machine's address on the local network (no packet is sent), else its host name."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostname()


def check_listen(address: str, port: int) -> None:
    """Refuse, in one line, a port or address the dashboard could not listen on: a port outside
    1-65535, an address that is not one of this machine's, a port already taken."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadInput(f"port must be between 1 and 65535 (got {port!r})")
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except socket.gaierror:
        raise BadInput(f"address {address!r} is not a network address") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise Busy(f"port {port} is already in use on {address}: choose another with --port") from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise BadInput(f"address {address} is not an address of this machine "
                           "(0.0.0.0 listens on all of them)") from None
        if err.errno == errno.EACCES:
            raise BadInput(f"port {port} needs administrator rights here: choose one above 1023") from None
        raise BadInput(f"cannot listen on {address}:{port} ({err.strerror or err})") from None


def link(address: str, key: str) -> str:
    """The dashboard's address ('host:port') with a key in it."""
    return f"http://{address}/?{urlencode({KEY_PARAM: key})}"


def allowed_roots(environ: dict | None = None) -> list[Path]:
    """The folders typed paths may resolve under (real paths)."""
    env = os.environ if environ is None else environ
    configured = [p for p in env.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    roots = configured or [str(Path.home()), str(cache_home()), str(default_runs_root())]
    return list(dict.fromkeys(Path(os.path.realpath(os.path.expanduser(p))) for p in roots))


def confine(typed: str | os.PathLike, roots: list[Path] | None = None) -> Path:
    """The real path of a folder typed into the dashboard, or BadInput when it lies outside the
    allowed roots (after following links and '..')."""
    text = str(typed).strip()
    if not text:
        raise BadInput("no folder given")
    real = Path(os.path.realpath(os.path.expanduser(text)))
    roots = allowed_roots() if roots is None else roots
    if any(real == root or root in real.parents for root in roots):
        return real
    raise BadInput(f"{text}: outside the folders this dashboard may open ("
                   + ", ".join(str(r) for r in roots) + f"); the owner can add folders with {ROOTS_ENV}")
