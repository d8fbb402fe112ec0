"""Dashboard users: the users file and `rigtel user add|passwd|remove|list`.

The users file is JSON, mode 0600, written atomically:

    {"version": 1, "users": {"NAME": {"role": "admin" | "viewer", "hash": "...", "changed_ms": N}}}

`hash` is werkzeug's salted slow hash (scrypt, ~100 ms to check here), so a stolen file
does not give the passwords away cheaply. Passwords are read from a prompt or a file,
never from the command line, where `ps` and shell history would show them.

Roles: `viewer` reads everything and may acknowledge alarms (the driller must be able
to); `admin` may also change thresholds, shelve alarms and restore. Users are managed
here, on the appliance, by whoever can write the users file.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from werkzeug.security import check_password_hash, generate_password_hash

from appliance.security.files import too_open, write_private

ROLES = ("viewer", "admin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_CHARS = 8
FILE_VERSION = 1


class UsersError(Exception):
    """A users file or request that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str
    changed_ms: int

    def check(self, password: str) -> bool:
        return check_password_hash(self.hash, password)


def hash_password(password: str) -> str:
    return generate_password_hash(password)  # werkzeug's default: scrypt with a 16-byte salt


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsersError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
                         "starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsersError(f"the password is too short: use at least {MIN_PASSWORD_CHARS} characters")
    if password != password.strip() or any(c in password for c in "\r\n\0"):
        raise UsersError("the password must not start or end with spaces or hold line breaks")
    return password


def load(path: str | Path) -> dict[str, User]:
    """Every user in the file; an empty dict when there is no file yet."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UsersError(f"users file {path} cannot be read ({e}); restore it from a backup or "
                         "recreate users with `rigtel user add`") from None
    if not isinstance(raw, dict) or raw.get("version") != FILE_VERSION or not isinstance(raw.get("users"), dict):
        raise UsersError(f"users file {path} is not a rigtel users file (version {FILE_VERSION})")
    users = {}
    for name, entry in raw["users"].items():
        try:
            role, hash_ = entry["role"], entry["hash"]
        except (TypeError, KeyError):
            raise UsersError(f"users file {path}: entry {name!r} lacks role or hash") from None
        if role not in ROLES or not isinstance(hash_, str):
            raise UsersError(f"users file {path}: entry {name!r} has an unknown role {role!r}")
        users[name] = User(name, role, hash_, int(entry.get("changed_ms", 0)))
    return users


def save(path: str | Path, users: dict[str, User], owner: str | None = None) -> None:
    data = {"version": FILE_VERSION,
            "users": {u.name: {"role": u.role, "hash": u.hash, "changed_ms": u.changed_ms}
                      for u in sorted(users.values(), key=lambda u: u.name)}}
    write_private(path, (json.dumps(data, indent=1) + "\n").encode(), owner=owner)


def set_user(path: str | Path, name: str, role: str, password: str, owner: str | None = None) -> User:
    """Add a user or replace one's role and password (what tests and `rigtel dev` call)."""
    check_name(name)
    if role not in ROLES:
        raise UsersError(f"role {role!r}: use one of {', '.join(ROLES)}")
    users = load(path)
    user = User(name, role, hash_password(check_password(password)), time.time_ns() // 1_000_000)
    users[name] = user
    save(path, users, owner)
    return user


# -- the command ------------------------------------------------------------------------


def read_password(password_file: str | None, confirm: bool = True) -> str:
    """From FILE (its first line; '-' is standard input), else a prompt on the terminal."""
    if password_file:
        try:
            text = sys.stdin.readline() if password_file == "-" else Path(password_file).read_text(encoding="utf-8")
        except OSError as e:
            raise UsersError(f"cannot read the password file {password_file}: {e.strerror}") from None
        return text.splitlines()[0] if text.splitlines() else ""
    if not sys.stdin.isatty():
        raise UsersError("no terminal to ask for the password on: pass --password-file FILE "
                         "(first line; '-' reads standard input)")
    first = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise UsersError("the two passwords differ; nothing changed")
    return first


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_options

    common = settings_options()
    parser = argparse.ArgumentParser(
        prog="rigtel user", description="Manage the dashboard's users (the users_file setting). "
        "Roles: viewer (read everything, acknowledge alarms) and admin (also thresholds, shelving, restore).")
    sub = parser.add_subparsers(dest="action", required=True)
    options = argparse.ArgumentParser(add_help=False, parents=[common])
    options.add_argument("--owner", metavar="USER", help="give the users file to USER (as root; the web "
                         "program's user must read it). Default: keep the current owner")
    add = sub.add_parser("add", parents=[options], help="add a user", allow_abbrev=False)
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-file", metavar="FILE", help="read the password from FILE's first line "
                     "('-': standard input) instead of prompting")
    passwd = sub.add_parser("passwd", parents=[options], allow_abbrev=False,
                            help="set a user's password (and optionally role)")
    passwd.add_argument("name")
    passwd.add_argument("--role", choices=ROLES)
    passwd.add_argument("--password-file", metavar="FILE")
    remove = sub.add_parser("remove", parents=[options], help="remove a user")
    remove.add_argument("name")
    sub.add_parser("list", parents=[common], help="list the users and their roles")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    path = Path(cfg.users_file)
    try:
        users = load(path)
        if args.action == "list":
            if not users:
                print(f"no users in {path}: add one with `rigtel user add NAME --role admin`")
            for u in sorted(users.values(), key=lambda u: u.name):
                changed = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(u.changed_ms / 1000))
                print(f"{u.name:<24} {u.role:<7} password set {changed}")
            if path.exists() and too_open(path):
                print(f"WARNING: {path} is readable by others; run chmod 600 {path}", file=sys.stderr)
            return 0
        name = check_name(args.name)
        if args.action == "add":
            if name in users:
                raise UsersError(f"user {name!r} exists already; change the password with `rigtel user passwd {name}`")
            set_user(path, name, args.role, read_password(args.password_file), args.owner)
            print(f"added {name} ({args.role}) to {path}")
        elif args.action == "passwd":
            if name not in users:
                raise UsersError(f"no user {name!r}; `rigtel user list` shows them")
            role = args.role or users[name].role
            set_user(path, name, role, read_password(args.password_file), args.owner)
            print(f"password of {name} changed ({role}); logins cached by the dashboard end within web_auth_cache_s")
        elif args.action == "remove":
            if name not in users:
                raise UsersError(f"no user {name!r}; `rigtel user list` shows them")
            if users[name].role == "admin" and sum(u.role == "admin" for u in users.values()) == 1:
                print(f"note: {name} was the last admin; add another with `rigtel user add NAME --role admin`",
                      file=sys.stderr)
            del users[name]
            save(path, users, args.owner)
            print(f"removed {name} from {path}")
    except UsersError as e:
        print(f"rigtel user: {e}", file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"rigtel user: {e.filename}: permission denied; run as the user owning it (or root)", file=sys.stderr)
        return 1
    return 0
