"""The dashboard's TLS certificate: `rigtel tls self-signed|install|show`.

`self-signed` makes an ECDSA P-256 key and a certificate naming this host: its host name,
fully qualified name, `localhost`, the loopback addresses, the addresses its names resolve
to and the address of its default route, plus any `--host NAME|ADDRESS` given (the name
the rig LAN uses for it). Browsers warn once about a self-signed certificate; a site that
has its own certificate authority installs its certificate with `install` instead.

Both write `tls_cert_file` (0644) and `tls_key_file` (0600) atomically; the web program
picks a new certificate up on its next connections, without a restart.

Certificates are made with `cryptography` (pyca): the standard, well-kept binding to
OpenSSL's X.509 code; the standard library can use a certificate but cannot make one.
Reading one (`info`, which the web program calls for its System view and expiry warning)
uses the standard library's decoder instead, the one `ssl` itself uses for peer
certificates, so that the dashboard does not carry cryptography (~10 MB resident) for it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from appliance.security.files import too_open, write_private

DEFAULT_DAYS = 825  # the longest validity browsers accept for a server certificate they are told to trust
WARN_DAYS = 30


@dataclass(frozen=True)
class CertInfo:
    """What the System view shows about the certificate in use."""

    path: str
    subject: str
    issuer: str
    self_signed: bool
    names: tuple[str, ...]
    not_after_ms: int
    days_left: float

    @property
    def expiring(self) -> bool:
        return self.days_left < WARN_DAYS

    def as_dict(self) -> dict:
        return {"path": self.path, "subject": self.subject, "issuer": self.issuer, "self_signed": self.self_signed,
                "names": list(self.names), "not_after_ms": self.not_after_ms,
                "days_left": round(self.days_left, 1), "expiring": self.expiring,
                "warning": (f"the dashboard's TLS certificate expires in {self.days_left:.0f} days: renew it "
                            "(`rigtel tls self-signed --force` or `rigtel tls install`)") if self.expiring else None}


def host_names_and_addresses(extra: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses this host answers to (no network traffic is sent); the
    first name (the first --host name, else the host name) becomes the subject's CN."""
    names = {"localhost"}
    addresses = {"127.0.0.1", "::1"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name)
            try:
                for info in socket.getaddrinfo(name, None):
                    addresses.add(info[4][0].split("%")[0])
            except OSError:
                pass
    try:  # the address of the default route; connecting a UDP socket sends nothing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            addresses.add(s.getsockname()[0])
    except OSError:
        pass
    for item in extra:
        try:
            addresses.add(str(ipaddress.ip_address(item)))
        except ValueError:
            names.add(item)
    first = [n for n in extra if n in names] or [socket.gethostname() or "localhost"]
    return first[:1] + sorted(names - set(first[:1])), sorted(addresses, key=lambda a: (":" in a, a))


def make_self_signed(names: Sequence[str], addresses: Sequence[str], days: int = DEFAULT_DAYS) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for these names and addresses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "rigtel"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rigtel appliance (self-signed)")])
    now = dt.datetime.now(dt.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ValueError unless the key belongs to the certificate and both load as a server would."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        c, k = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        c.write_bytes(cert_pem)
        k.write_bytes(key_pem)
        k.chmod(0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(str(c), str(k))
        except ssl.SSLError as e:
            raise ValueError(f"the key does not match the certificate, or one of them is not PEM ({e.reason})") from None


def write_pair(cert_path: str | Path, key_path: str | Path, cert_pem: bytes, key_pem: bytes,
               owner: str | None = None) -> None:
    check_pair(cert_pem, key_pem)
    write_private(key_path, key_pem, owner=owner)  # the key first: a new cert never meets an old key for long
    write_private(cert_path, cert_pem, owner=owner, mode=0o644)


def info(cert_path: str | Path) -> CertInfo:
    """Subject, names and expiry of the first certificate in a PEM file; OSError/ValueError if unusable."""
    path = Path(cert_path)
    if not path.is_file():
        raise FileNotFoundError(f"no certificate file at {path}")
    # stdlib, the decoder behind SSLSocket.getpeercert(); private, so a Python without it
    # falls back to cryptography (which costs the dashboard ~10 MB resident)
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        return _info_cryptography(path)
    try:
        cert = decode(str(path))
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.timezone.utc)
    except (ssl.SSLError, KeyError) as e:
        raise ValueError(f"{path} is not a PEM certificate ({e})") from None
    names = tuple([*(v for k, v in cert.get("subjectAltName", ()) if k == "DNS"),
                   *(str(ipaddress.ip_address(v.strip())) for k, v in cert.get("subjectAltName", ())
                     if k == "IP Address")])
    left = (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    subject, issuer = _rfc4514(cert.get("subject", ())), _rfc4514(cert.get("issuer", ()))
    return CertInfo(str(cert_path), subject, issuer, cert.get("subject") == cert.get("issuer"), names,
                    int(not_after.timestamp() * 1000), left)


def _info_cryptography(path: Path) -> CertInfo:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path} is not a PEM certificate ({e})") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple([*san.get_values_for_type(x509.DNSName),
                       *(str(a) for a in san.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        names = ()
    not_after = cert.not_valid_after_utc
    left = (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    return CertInfo(str(path), cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                    cert.subject == cert.issuer, names, int(not_after.timestamp() * 1000), left)


# attribute names as ssl decodes them -> RFC 4514 short names (others keep ssl's name)
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST", "streetAddress": "STREET",
          "domainComponent": "DC", "userId": "UID"}


def _rfc4514(name: tuple) -> str:
    """A distinguished name as `ssl` decodes it, written as RFC 4514 does (last RDN first)."""
    def escape(value: str) -> str:
        out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
        if out[:1] in ("#", " "):
            out = "\\" + out
        return out[:-1] + "\\ " if out.endswith(" ") else out

    return ",".join("+".join(f"{_SHORT.get(k, k)}={escape(v)}" for k, v in rdn) for rdn in reversed(name))


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_options

    common = settings_options()
    parser = argparse.ArgumentParser(
        prog="rigtel tls", description="The dashboard's HTTPS certificate, written to the tls_cert_file and "
        "tls_key_file settings' paths (key mode 0600). The web program uses a new one without a restart.")
    sub = parser.add_subparsers(dest="action", required=True)
    own = argparse.ArgumentParser(add_help=False, parents=[common])
    own.add_argument("--owner", metavar="USER", help="give the files to USER (as root: the web program's user "
                     "must read the key). Default: keep the current owner")
    signed = sub.add_parser("self-signed", parents=[own], help="make a self-signed certificate for this host")
    signed.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="another DNS name or IP address the certificate must name; repeatable")
    signed.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
    signed.add_argument("--force", action="store_true", help="replace an existing certificate")
    install = sub.add_parser("install", parents=[own], help="install the site's certificate and key (PEM)")
    install.add_argument("--cert", required=True, metavar="FILE",
                         help="certificate, followed by any intermediate certificates")
    install.add_argument("--key", required=True, metavar="FILE", help="its private key, unencrypted PEM")
    sub.add_parser("show", parents=[common], help="show the certificate in use and when it expires")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    cert_path, key_path = Path(cfg.tls_cert_file), Path(cfg.tls_key_file)
    try:
        if args.action == "self-signed":
            if cert_path.exists() and not args.force:
                shown = info(cert_path)
                print(f"{cert_path} exists already ({shown.subject}, {shown.days_left:.0f} days left); "
                      "--force replaces it")
                return 0
            if not 1 <= args.days <= 3650:
                print("rigtel tls: --days must be from 1 to 3650", file=sys.stderr)
                return 2
            names, addresses = host_names_and_addresses(args.host)
            cert_pem, key_pem = make_self_signed(names, addresses, args.days)
            write_pair(cert_path, key_path, cert_pem, key_pem, args.owner)
            print(f"wrote {cert_path} and {key_path} (0600): self-signed for {', '.join(names + addresses)}, "
                  f"valid {args.days} days")
        elif args.action == "install":
            cert_pem, key_pem = Path(args.cert).read_bytes(), Path(args.key).read_bytes()
            write_pair(cert_path, key_path, cert_pem, key_pem, args.owner)
            shown = info(cert_path)
            print(f"installed {shown.subject} (issuer {shown.issuer}) for {', '.join(shown.names) or 'no names'}, "
                  f"{shown.days_left:.0f} days left, into {cert_path} and {key_path} (0600)")
        else:
            shown = info(cert_path)
            print(f"certificate {cert_path}\n  subject   {shown.subject}\n  issuer    {shown.issuer}"
                  f"{' (self-signed)' if shown.self_signed else ''}\n  names     {', '.join(shown.names)}\n"
                  f"  expires   {dt.datetime.fromtimestamp(shown.not_after_ms / 1000, dt.timezone.utc):%Y-%m-%d %H:%M UTC}"
                  f" ({shown.days_left:.0f} days)")
            if shown.expiring:
                print(f"WARNING: expires within {WARN_DAYS} days; renew it", file=sys.stderr)
            if key_path.exists() and too_open(key_path):
                print(f"WARNING: {key_path} is readable by others; run chmod 600 {key_path}", file=sys.stderr)
    except (OSError, ValueError) as e:
        print(f"rigtel tls: {e}", file=sys.stderr)
        return 1
    return 0
