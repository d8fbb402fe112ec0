"""`make bundle`: the offline installation bundle, dist/rigtel-<version>-<target>.tar.gz.

    .venv/bin/python installer/bundle.py [--python 3.11] [--glibc 2.28] [--arch x86_64]

Inside, under one top folder rigtel-<version>-<target>/:

    install.sh, uninstall.sh     run these on the rig server (no network needed)
    DEPLOYMENT.md                the technician's guide
    wheels/                      every dependency for the target, the project's wheel, pip
    requirements.txt             each wheel pinned with its SHA-256 (pip --require-hashes)
    etc/  webroot/               configuration templates, the dashboard
    VERSION                      version, target, build time and commit
    MANIFEST.sha256              SHA-256 of every other file (sha256sum -c format)

Only this build needs the package registry: dependencies are downloaded as binary wheels
for the target (CPython version, manylinux glibc and machine), checked against the hashes
in requirements.lock, and kept in a cache keyed by the lock files and target, so a rebuild
is offline and quick. The project's own wheel is built from the checkout without network.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import NamedTuple, Sequence

REPO = Path(__file__).resolve().parents[1]
LOCKS = (REPO / "requirements.lock", REPO / "installer/pip.lock")
TOP_FILES = ("install.sh", "uninstall.sh")


class Target(NamedTuple):
    python: str  # "3.11"
    glibc: str  # "2.28": the oldest glibc the target runs
    arch: str  # "x86_64"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def name(self) -> str:
        return f"{self.abi}-manylinux_{self.glibc.replace('.', '_')}_{self.arch}"

    def platforms(self) -> list[str]:
        """Every manylinux tag a glibc of this version runs: 2_17 (manylinux2014) up to it."""
        major, minor = (int(x) for x in self.glibc.split("."))
        if major != 2 or minor < 17:
            raise SystemExit(f"bundle: --glibc {self.glibc}: expected 2.17 or newer (manylinux2014 is 2.17)")
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(17, minor + 1)]
        return tags + [f"manylinux2014_{self.arch}"]


def say(step: str) -> None:
    print(f"bundle: {step}", flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(target: Target) -> str:
    h = hashlib.sha256(target.name.encode())
    for lock in LOCKS:
        h.update(lock.read_bytes())
    return h.hexdigest()[:16]


def download(target: Target, cache: Path, pip: Sequence[str]) -> Path:
    """Dependency wheels for the target, from the cache or the registry (hash-checked)."""
    folder = cache / f"{target.name}-{cache_key(target)}"
    if (folder / ".complete").exists():
        say(f"dependencies: cached in {folder}")
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    platform_args = [a for p in target.platforms() for a in ("--platform", p)]
    for lock in LOCKS:
        say(f"dependencies: downloading wheels for {target.name} listed in {lock.relative_to(REPO)} "
            "(needs the package registry)")
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--python-version", target.python, "--implementation", "cp", "--abi", target.abi,
               "--abi", "abi3", "--abi", "none", *platform_args, "--progress-bar", "on",
               "-d", str(partial), "-r", str(lock)]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(
                f"bundle: downloading the wheels for {target.name} failed (above). If a package has no "
                f"wheel for this target, an older release may: glibc 2.17 targets need older pyzmq/numpy. "
                "Pin it in requirements.in, `make lock`, and try again.")
    partial.joinpath(".complete").write_text(target.name + "\n")
    partial.rename(folder)
    return folder


WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.*\.whl$")


def requirement_lines(wheels: Path) -> list[str]:
    lines = []
    for whl in sorted(wheels.glob("*.whl")):
        m = WHEEL_NAME.match(whl.name)
        if not m:
            raise SystemExit(f"bundle: cannot read the name and version of {whl.name}")
        name = m["name"].replace("_", "-").lower()
        lines.append(f"{name}=={m['version']} --hash=sha256:{sha256(whl)}")
    return lines


def build_project_wheel(out: Path, pip: Sequence[str]) -> Path:
    say("project: building the rigtel wheel from the checkout (offline)")
    work = REPO / "build" / "wheel"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)  # setuptools' leftovers could sneak in
    cmd = [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "-w", str(work), str(REPO)]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("bundle: building the project's wheel failed (above)")
    (wheel,) = work.glob("rigtel-*.whl")
    shutil.copy2(wheel, out / wheel.name)
    return out / wheel.name


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_manifest(top: Path) -> int:
    files = sorted(p for p in top.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256")
    lines = [f"{sha256(p)}  {p.relative_to(top).as_posix()}" for p in files]
    (top / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    return len(files)


def assemble(target: Target, deps: Path, out_dir: Path, pip: Sequence[str]) -> Path:
    from appliance import __version__

    name = f"rigtel-{__version__}-{target.name}"
    stage = REPO / "build" / "bundle" / name
    shutil.rmtree(stage, ignore_errors=True)
    wheels = stage / "wheels"
    wheels.mkdir(parents=True)
    say(f"assembling {name}")
    for whl in deps.glob("*.whl"):
        shutil.copy2(whl, wheels / whl.name)
    build_project_wheel(wheels, pip)
    (stage / "requirements.txt").write_text(
        "# Every wheel in wheels/, pinned with its SHA-256: pip install --no-index --require-hashes\n"
        + "\n".join(requirement_lines(wheels)) + "\n")
    for f in TOP_FILES:
        shutil.copy2(REPO / "installer" / f, stage / f)
        os.chmod(stage / f, 0o755)
    shutil.copy2(REPO / "docs/DEPLOYMENT.md", stage / "DEPLOYMENT.md")
    shutil.copytree(REPO / "etc", stage / "etc")
    shutil.copytree(REPO / "webroot", stage / "webroot",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (stage / "VERSION").write_text(
        f"version={__version__}\ntarget={target.name}\npython={target.python}\nglibc={target.glibc}\n"
        f"arch={target.arch}\nbuilt={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        f"commit={git_commit()}\n")
    count = write_manifest(stage)
    say(f"manifest: SHA-256 of {count} files")
    out_dir.mkdir(parents=True, exist_ok=True)
    tarball = out_dir / f"{name}.tar.gz"
    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(stage, arcname=name)
    partial.rename(tarball)
    say(f"written {tarball} ({tarball.stat().st_size / 1e6:.1f} MB)")
    return tarball


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="installer/bundle.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=os.environ.get("BUNDLE_PYTHON", "3.11"),
                        help="CPython version of the target, e.g. 3.11 (default $BUNDLE_PYTHON or 3.11)")
    parser.add_argument("--glibc", default=os.environ.get("BUNDLE_GLIBC", "2.28"),
                        help="oldest glibc the bundle must run on (2.17 = manylinux2014; "
                             "default $BUNDLE_GLIBC or 2.28)")
    parser.add_argument("--arch", default=os.environ.get("BUNDLE_ARCH", "x86_64"),
                        help="machine, e.g. x86_64 or aarch64 (default $BUNDLE_ARCH or x86_64)")
    parser.add_argument("--cache", default=str(REPO / "var/cache/wheels"),
                        help="folder keeping downloaded wheels, keyed by the lock files and target")
    parser.add_argument("--out", default=str(REPO / "dist"), help="where the tarball goes (default dist/)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python {args.python}: expected a CPython version such as 3.11")
    if not re.fullmatch(r"\d+\.\d+", args.glibc):
        parser.error(f"--glibc {args.glibc}: expected a version such as 2.28")
    target = Target(args.python, args.glibc, args.arch)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    started = time.monotonic()
    deps = download(target, Path(args.cache), pip)
    tarball = assemble(target, deps, Path(args.out), pip)
    say(f"done in {time.monotonic() - started:.0f} s: copy {tarball.name} to the rig server, then\n"
        f"  tar xzf {tarball.name} && sudo ./{tarball.name.removesuffix('.tar.gz')}/install.sh")
    print(tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
