"""CurveZMQ for publishers on other hosts: key pairs, the allow-list, ZAP authentication.

The broker's local ports stay on loopback. With `bus_remote_host` set it also binds
`bus_remote_host:bus_remote_port` on the same XSUB socket as a CurveZMQ server: traffic
is encrypted and a publisher gets in only if its public key is in the allow-list, the
`*.key` files in `bus_keys_dir/clients/`. Keys are checked by a ZAP handler (pyzmq's
`zmq.auth`) in the broker; a refused key is logged with the peer's address and published
as an `audit` event (at most once a minute per address and key, so a publisher retrying
in a loop cannot flood the log).

Key files are pyzmq's (ZPL text): `NAME.key` holds the public key, `NAME.key_secret`
the secret one too and is mode 0600. `rigtel keys`:

    rigtel keys broker              the broker's own pair (made once; --force replaces it)
    rigtel keys new NAME [--out D]  a pair for a remote publisher, to copy to its host
    rigtel keys allow FILE.key      put a publisher's public key on the allow-list
    rigtel keys revoke NAME         take it off
    rigtel keys list                the broker's public key and every allowed publisher
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import zmq
import zmq.auth

from appliance.security.files import too_open, write_private

log = logging.getLogger("rigtel.bus.curve")

ZAP_DOMAIN = "rigtel"
BROKER = "broker"
CLIENTS = "clients"
REPORT_EVERY_S = 60.0


class CurveKeyError(Exception):
    """A key file that is missing or unusable; the message says what to run."""


def broker_keys(keys_dir: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) of the broker; CurveKeyError with instructions when missing."""
    path = Path(keys_dir) / f"{BROKER}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"no usable broker key pair at {path} ({e}): make one with `rigtel keys broker`") from None
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key: make the pair again with `rigtel keys broker --force`")
    if too_open(path):
        log.warning("%s is readable by other users: run chmod 600 %s", path, path)
    return public, secret


def client_keys(secret_file: str | Path, server_public_file: str | Path) -> tuple[bytes, bytes, bytes]:
    """(public, secret, server public) for a publisher connecting from another host."""
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
        server_public, _ = zmq.auth.load_certificate(server_public_file)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"CurveZMQ key files {secret_file} / {server_public_file}: {e}") from None
    if not secret:
        raise CurveKeyError(f"{secret_file} holds no secret key: give the NAME.key_secret file from `rigtel keys new`")
    return public, secret, server_public


def write_pair(folder: str | Path, name: str, owner: str | None = None) -> tuple[Path, Path]:
    """A new key pair as NAME.key (0644) and NAME.key_secret (0600) in `folder`."""
    import tempfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # mkdtemp: 0700, so the secret is never exposed
        public_tmp, secret_tmp = zmq.auth.create_certificates(tmp, name)
        public_path, secret_path = folder / f"{name}.key", folder / f"{name}.key_secret"
        write_private(secret_path, Path(secret_tmp).read_bytes(), owner=owner)
        write_private(public_path, Path(public_tmp).read_bytes(), owner=owner, mode=0o644)
    return public_path, secret_path


class AllowList:
    """The public keys in a folder of `*.key` files, re-read when the folder changes."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.lock = threading.Lock()
        self.keys: dict[bytes, str] = {}  # z85 public key -> file name
        self.stamp: tuple | None = None
        self.checked = 0.0
        self.checked_once = False

    def _load(self) -> None:
        try:
            st = self.folder.stat()
            stamp = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp == self.stamp and self.checked_once:
            return
        keys = {}
        if stamp is not None:
            for path in sorted(self.folder.glob("*.key")):
                try:
                    public, _ = zmq.auth.load_certificate(path)
                    keys[public] = path.stem
                except (OSError, ValueError) as e:
                    log.error("allow-list file %s is not a CurveZMQ public key file (%s); ignored", path, e)
        self.keys, self.stamp, self.checked_once = keys, stamp, True
        log.info("%d remote publisher key(s) allowed (%s)", len(keys), self.folder)

    def name_of(self, z85_key: bytes) -> str | None:
        with self.lock:
            now = time.monotonic()
            if now - self.checked >= 1.0 or not self.checked_once:
                self.checked = now
                self._load()
            return self.keys.get(z85_key)


# -- the command --------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_options

    common = settings_options()
    parser = argparse.ArgumentParser(
        prog="rigtel keys", description="CurveZMQ key pairs for publishers on other hosts (bus_remote_host). "
        "Key files live in bus_keys_dir; secret key files are mode 0600.")
    sub = parser.add_subparsers(dest="action", required=True)
    own = argparse.ArgumentParser(add_help=False, parents=[common])
    own.add_argument("--owner", metavar="USER", help="give the files to USER (as root; the broker's user must "
                     "read its secret key)")
    broker = sub.add_parser("broker", parents=[own], help="make the broker's key pair (once)")
    broker.add_argument("--force", action="store_true", help="replace it: every remote publisher then needs "
                        "the new broker.key")
    new = sub.add_parser("new", parents=[own], help="make a key pair for a remote publisher")
    new.add_argument("name")
    new.add_argument("--out", metavar="DIR", help="where to write NAME.key and NAME.key_secret "
                     "(default: the current folder); copy both to the publisher's host")
    new.add_argument("--allow", action="store_true", help="also put its public key on the allow-list")
    allow = sub.add_parser("allow", parents=[own], help="allow a remote publisher's public key (NAME.key)")
    allow.add_argument("file")
    revoke = sub.add_parser("revoke", parents=[common], help="take a publisher off the allow-list")
    revoke.add_argument("name")
    sub.add_parser("list", parents=[common], help="the broker's public key and the allowed publishers")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    keys_dir = Path(cfg.bus_keys_dir)
    clients = keys_dir / CLIENTS
    try:
        if args.action == "broker":
            if (keys_dir / f"{BROKER}.key_secret").exists() and not args.force:
                public, _ = broker_keys(keys_dir)
                print(f"the broker's key pair exists already in {keys_dir} (public key {public.decode()}); "
                      "--force replaces it")
                return 0
            public_path, secret_path = write_pair(keys_dir, BROKER, args.owner)
            print(f"wrote {secret_path} (0600) and {public_path}: give {public_path} to each remote publisher")
        elif args.action == "new":
            if not _good_name(args.name):
                print("rigtel keys: NAME: use letters, digits, '.', '_' or '-'", file=sys.stderr)
                return 2
            out = Path(args.out or ".")
            if (out / f"{args.name}.key_secret").exists():
                print(f"rigtel keys: {out / args.name}.key_secret exists already; choose another name or folder",
                      file=sys.stderr)
                return 1
            public_path, secret_path = write_pair(out, args.name, args.owner)
            print(f"wrote {secret_path} (0600) and {public_path}")
            if args.allow:
                _allow(public_path, clients, args.owner)
        elif args.action == "allow":
            _allow(Path(args.file), clients, args.owner)
        elif args.action == "revoke":
            path = clients / f"{args.name}.key"
            if not path.exists():
                print(f"rigtel keys: {args.name} is not on the allow-list ({clients})", file=sys.stderr)
                return 1
            path.unlink()
            print(f"revoked {args.name}: the broker refuses its next connection (already connected publishers "
                  "keep their session until they reconnect; restart the broker to end it now)")
        else:
            try:
                public, _ = broker_keys(keys_dir)
                print(f"broker   {public.decode()}   ({keys_dir / (BROKER + '.key')})")
            except CurveKeyError as e:
                print(f"broker   none: {e}")
            allowed = AllowList(clients)
            allowed.name_of(b"")
            if not allowed.keys:
                print(f"no remote publishers allowed ({clients})")
            for key, name in sorted(allowed.keys.items(), key=lambda kv: kv[1]):
                print(f"allowed  {key.decode()}   {name}")
            print(f"remote publishers: {'port ' + str(cfg.bus_remote_port) + ' on ' + cfg.bus_remote_host if cfg.bus_remote_host else 'off (bus_remote_host is empty)'}")
    except CurveKeyError as e:
        print(f"rigtel keys: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"rigtel keys: {e}", file=sys.stderr)
        return 1
    return 0


def _good_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._-" for c in name) and not name.startswith(".")


def _allow(public_file: Path, clients: Path, owner: str | None) -> None:
    public, secret = zmq.auth.load_certificate(public_file)  # raises ValueError on a bad file
    if secret:
        raise CurveKeyError(f"{public_file} holds a secret key: allow the public NAME.key file, and keep the "
                        "secret one on the publisher's host only")
    name = public_file.name[:-len(".key")] if public_file.name.endswith(".key") else public_file.stem
    if not _good_name(name):
        raise CurveKeyError(f"{public_file}: name the file NAME.key with letters, digits, '.', '_' or '-'")
    clients.mkdir(parents=True, exist_ok=True)
    write_private(clients / f"{name}.key", public_file.read_bytes(), owner=owner, mode=0o644)
    print(f"allowed {name} ({public.decode()}); the broker accepts it from its next connection")
