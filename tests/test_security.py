"""The dashboard's perimeter through Flask's test client: every route asks for a login,
admin routes refuse viewers, cross-site changes are refused, failed logins are throttled
and audited, remembered logins end with a password change; the users and key files are
private and passwords never reach the command line."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time

import pytest
from flask import Flask

from appliance.security import users
from appliance.security.files import mode_of
from appliance.web import auth
from appliance.web.app import create_app
from tests.conftest import REPO, clean_env, settings_for
from tests.test_web_api import RecordingBus


def example_path(rule) -> str:
    """A concrete path for a URL rule: each variable gets a value its converter accepts."""
    def value(m: re.Match) -> str:
        converter, _, name = m.group(1).rpartition(":")
        if converter.startswith("any("):
            return converter[4:].split(",")[0].strip(" )'\"")
        if converter == "path":
            return "css/app.css"
        return "1" if converter in ("int", "float") else "x"
    return re.sub(r"<([^>]+)>", value, rule.rule)


@pytest.fixture
def app(tmp_path, web_login) -> Flask:
    cfg = settings_for(tmp_path, {"database_path": str(tmp_path / "missing.db"), **web_login.overrides(),
                                  "web_login_max_failures": "3", "web_login_window_s": "60"})
    a = create_app(cfg, hub=None, bus=RecordingBus())  # type: ignore[arg-type]
    a.testing = True
    return a


def every_route(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods):
            yield rule, method, example_path(rule)


def test_every_route_but_healthz_asks_for_a_login(app):
    anonymous = app.test_client()
    seen = 0
    for rule, method, path in every_route(app):
        r = anonymous.open(path, method=method)
        if rule.endpoint == "healthz":
            assert r.status_code == 200
            assert method != "GET" or set(r.json) == {"status", "version"}  # no data in it
            continue
        seen += 1
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="rigtel"'), path
        assert r.headers["Cache-Control"] == "no-store"
        assert b"DMEA" not in r.data and b"channels" not in r.data
    assert seen >= 20
    assert anonymous.get("/no/such/page").status_code == 401  # not even what exists is told


def test_wrong_or_unknown_users_are_refused_and_each_failure_audited(app, web_login):
    c = app.test_client()
    bad = "Basic " + base64.b64encode(b"admin:not-the-password").decode()
    assert c.get("/api/channels", headers={"Authorization": bad}).status_code == 401
    nobody = "Basic " + base64.b64encode(b"nobody:whatever-it-is").decode()
    assert c.get("/api/channels", headers={"Authorization": nobody}).status_code == 401
    sent = app.extensions["rigtel.bus"].sent
    assert [(t, e["event"], e["user"]) for t, e in sent] == [("audit", "login_failed", "admin"),
                                                             ("audit", "login_failed", "nobody")]
    assert "not-the-password" not in repr(sent) and "whatever-it-is" not in repr(sent)


def test_viewer_is_refused_on_every_admin_route(app, web_login):
    @app.post("/api/test-admin")
    @auth.admin_only
    def marked():
        return {"ok": True}

    viewer, admin = web_login.client(app, "viewer"), web_login.client(app, "admin")
    admin_routes = 0
    with app.test_request_context():
        pass
    for rule, method, path in every_route(app):
        if method in ("HEAD", "OPTIONS"):
            continue
        view = app.view_functions[rule.endpoint]
        if auth.required_role(rule.endpoint, view, method, path) != "admin":
            continue
        admin_routes += 1
        r = viewer.open(path, method=method, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "viewer" in r.json["error"] and "WWW-Authenticate" not in r.headers
    assert admin_routes >= 4  # /api/audit, shelving, threshold changes, and the one above
    assert admin.put("/api/thresholds/SPPA", json={"h": 1}).status_code == 503  # allowed; no database here
    assert admin.post("/api/test-admin").status_code == 200
    assert admin.get("/api/audit").status_code == 503  # allowed; there is no database in this test
    # shelving and restore are admin by declaration, whatever their views are called
    for method, path in (("POST", "/api/alerts/kick-1/shelve"), ("POST", "/api/restore")):
        assert auth.required_role(None, None, method, path) == "admin"
    # acknowledging stays a viewer's right: the driller must be able to
    assert auth.required_role("api.acknowledge", app.view_functions["api.acknowledge"], "POST",
                              "/api/alerts/kick-1/ack") is None
    events = [e for t, e in app.extensions["rigtel.bus"].sent if t == "audit"]
    assert {e["event"] for e in events} >= {"forbidden", "admin_action"}
    assert any(e["event"] == "admin_action" and e["path"] == "/api/thresholds/SPPA" and e["user"] == "admin"
               for e in events)
    assert not any(e["event"] == "admin_action" and e["user"] == "viewer" for e in events)  # refused: "forbidden"


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
])
def test_cross_site_changes_are_refused_even_with_valid_credentials(app, web_login, headers):
    admin = web_login.client(app, "admin")
    r = admin.post("/api/alerts/kick-1/ack", headers=headers)
    assert r.status_code == 403 and "cross-site" in r.json["error"]
    assert app.extensions["rigtel.bus"].sent[-1][1]["event"] == "cross_site_refused"


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://localhost"}, {}])
def test_same_origin_changes_pass_the_check(app, web_login, headers):
    r = web_login.client(app, "viewer").post("/api/alerts/kick-1/ack", headers=headers)
    assert r.status_code == 503  # past the check and the login: the test app has no database


def test_failed_logins_are_throttled_per_client_with_retry_after(app, web_login):
    c = app.test_client()
    stale = {"Authorization": "Basic " + base64.b64encode(b"admin:an-old-password").decode()}
    other = {"REMOTE_ADDR": "192.0.2.7"}
    # a browser repeating one stale password (every poll, every reconnect) counts once
    assert [c.get("/api/me", headers=stale, environ_base=other).status_code for _ in range(6)] == [401] * 6
    statuses = [c.get("/api/me", environ_base=other, headers={
        "Authorization": "Basic " + base64.b64encode(f"admin:wrong-password-{i}".encode()).decode()}).status_code
        for i in range(3)]
    assert statuses == [401, 429, 429]  # web_login_max_failures = 3: the stale one and two guesses
    r = c.get("/api/me", headers={"Authorization": web_login.header("admin")}, environ_base=other)
    assert r.status_code == 429 and 55 <= int(r.headers["Retry-After"]) <= 61  # the right password too
    ok = web_login.client(app, "admin").get("/api/me", environ_base={"REMOTE_ADDR": "192.0.2.8"})
    assert ok.json == {"user": "admin", "role": "admin"}  # another client is not affected
    events = [e for t, e in app.extensions["rigtel.bus"].sent if t == "audit"]
    assert [e["event"] for e in events] == ["login_failed"] * 3 + ["login_locked"]
    assert {e["client"] for e in events} == {"192.0.2.7"}
    assert "wrong-password" not in repr(events) and "an-old-password" not in repr(events)


def test_a_changed_password_ends_a_remembered_login(app, web_login):
    c = web_login.client(app, "viewer")
    assert c.get("/api/me").status_code == 200
    assert c.get("/api/me").status_code == 200  # remembered
    users.set_user(web_login.users_file, "viewer", "viewer", "a-new-password-1")
    deadline = time.monotonic() + 10  # the users file is re-read at most once a second
    while c.get("/api/me").status_code == 200:
        assert time.monotonic() < deadline, "the old password still works"
        time.sleep(0.2)
    c.environ_base["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(b"viewer:a-new-password-1").decode()
    assert c.get("/api/me").json == {"user": "viewer", "role": "viewer"}
    assert any(e["event"] == "users_changed" and e["changed"] == ["viewer"]
               for t, e in app.extensions["rigtel.bus"].sent if t == "audit")


def test_logout_accepts_only_the_placeholder_and_forgets_the_login(app, web_login):
    c = web_login.client(app, "admin")
    assert c.get("/api/me").status_code == 200
    r = c.get("/logout")
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert app.extensions["rigtel.bus"].sent[-1][1]["event"] == "logout"
    placeholder = "Basic " + base64.b64encode(f"{auth.LOGOUT_USER}:x1".encode()).decode()
    assert c.get("/logout", headers={"Authorization": placeholder}).status_code == 200
    assert c.get("/api/me", headers={"Authorization": placeholder}).status_code == 401
    assert not any(e["event"] == "login_failed" for t, e in app.extensions["rigtel.bus"].sent)


def test_security_headers(app, web_login):
    c = web_login.client(app, "viewer")
    for path in ("/live", "/api/me"):
        r = c.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
    assert b"<script>" not in c.get("/live").data  # no inline script in any page
    assert "Strict-Transport-Security" not in c.get("/api/me").headers  # only over HTTPS
    assert c.get("/api/me", base_url="https://localhost").headers["Strict-Transport-Security"] == "max-age=31536000"


def test_users_file_is_private_and_passwords_never_on_the_command_line(tmp_path):
    env = clean_env(tmp_path)
    path = tmp_path / "etc/users.json"
    (tmp_path / "pw").write_text("correct horse battery\n")

    def rigtel(*args, stdin=None):
        return subprocess.run([sys.executable, "-m", "appliance", "user", *args, "--set", f"users_file={path}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, input=stdin, timeout=60)

    assert rigtel("add", "driller", "--role", "viewer", "--password-file", str(tmp_path / "pw")).returncode == 0
    assert mode_of(path) == 0o600
    assert "correct horse" not in path.read_text()
    assert users.load(path)["driller"].check("correct horse battery")
    assert rigtel("add", "x", "--role", "admin", "--password", "secret-on-argv").returncode == 2
    r = rigtel("add", "tool.pusher", "--role", "admin", "--password-file", "-", stdin="short\n")
    assert r.returncode == 1 and "at least 8" in r.stderr
    r = rigtel("add", "tool.pusher", "--role", "admin")  # no terminal to prompt on
    assert r.returncode == 1 and "--password-file" in r.stderr
    assert rigtel("passwd", "driller", "--role", "admin", "--password-file", "-", stdin="new password 2\n").returncode == 0
    listing = rigtel("list").stdout
    assert re.search(r"^driller\s+admin", listing, re.M) and "scrypt" not in listing
    assert rigtel("remove", "driller").returncode == 0 and users.load(path) == {}
    assert mode_of(path) == 0o600


def test_tls_key_is_private(tmp_path):
    env = clean_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "appliance", "tls", "self-signed", "--host", "rig-7.local",
                        "--host", "10.20.30.40", "--set", f"tls_cert_file={tmp_path}/tls/cert.pem",
                        "--set", f"tls_key_file={tmp_path}/tls/key.pem"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert mode_of(tmp_path / "tls/key.pem") == 0o600
    from appliance.security import certs
    shown = certs.info(tmp_path / "tls/cert.pem")
    assert {"rig-7.local", "10.20.30.40", "localhost", "127.0.0.1"} <= set(shown.names)
    assert shown.subject.endswith("CN=rig-7.local") and 824 < shown.days_left <= 825 and not shown.expiring
    assert REPO.exists()


def test_client_address_comes_from_the_front_and_a_trusted_proxy_only():
    from appliance.web.front import ClientAddress, PeerMap

    seen = {}

    def app(environ, start_response):
        seen["addr"] = environ["REMOTE_ADDR"]
        return []

    peers = PeerMap()
    peers.add(40001, ("10.0.0.5", 51515))
    peers.add(40002, ("10.0.0.1", 40000))  # the site's reverse proxy
    plain, proxied = ClientAddress(app, peers), ClientAddress(app, peers, trusted_proxy="10.0.0.1")
    env = lambda port, **h: {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": str(port), **h}  # noqa: E731
    plain(env(40001), None)
    assert seen["addr"] == "10.0.0.5"
    plain(env(40002, HTTP_X_FORWARDED_FOR="192.0.2.9"), None)
    assert seen["addr"] == "10.0.0.1"  # no proxy configured: the header is not believed
    proxied(env(40002, HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.9"), None)
    assert seen["addr"] == "192.0.2.9"  # the address the proxy itself appended
    proxied(env(40001, HTTP_X_FORWARDED_FOR="192.0.2.9"), None)
    assert seen["addr"] == "10.0.0.5"  # from anyone else, ignored
    proxied(env(40002, HTTP_X_FORWARDED_FOR="not-an-address"), None)
    assert seen["addr"] == "10.0.0.1"
    plain({"REMOTE_ADDR": "10.9.9.9", "REMOTE_PORT": "40001"}, None)
    assert seen["addr"] == "10.9.9.9"  # only connections from loopback are the front's


def test_the_redirect_keeps_path_and_query_and_refuses_a_bad_host():
    from appliance.web.front import redirect_app

    app = redirect_app(8443)
    out = {}

    def start_response(status, headers):
        out["status"], out["headers"] = status, dict(headers)

    app({"HTTP_HOST": "rig7.local:8080", "PATH_INFO": "/api/series", "QUERY_STRING": "a=1&b=%20",
         "REQUEST_METHOD": "GET"}, start_response)
    assert out["status"].startswith("301") and out["headers"]["Location"] == "https://rig7.local:8443/api/series?a=1&b=%20"
    app({"HTTP_HOST": "[::1]:8080", "PATH_INFO": "/", "REQUEST_METHOD": "POST"}, start_response)
    assert out["status"].startswith("308") and out["headers"]["Location"] == "https://[::1]:8443/"
    app({"HTTP_HOST": "evil.example\r\nSet-Cookie: x", "PATH_INFO": "/", "REQUEST_METHOD": "GET"}, start_response)
    assert out["status"].startswith("400")


def test_certificate_info_reads_what_cryptography_reads_without_importing_it(tmp_path):
    """certs.info uses the stdlib decoder (the web program must not carry cryptography):
    subject and issuer in RFC 4514 with escapes, names, expiry, self-signed, all as pyca says."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    from appliance.security import certs

    def name(*pairs):
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name((NameOID.COUNTRY_NAME, "NO"), (NameOID.ORGANIZATION_NAME, "Rig, Inc+1 <\"drill\">"),
                   (NameOID.ORGANIZATIONAL_UNIT_NAME, " Drilling "), (NameOID.COMMON_NAME, "#site CA"))
    now = dt.datetime.now(dt.timezone.utc)
    leaf = (x509.CertificateBuilder().subject_name(name((NameOID.COMMON_NAME, "rig-7.local")))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(7)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=12, hours=3))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("rig-7.local"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("fd00::1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    pem, _ = certs.make_self_signed(["localhost"], ["127.0.0.1", "::1"])
    (tmp_path / "self.pem").write_bytes(pem)
    for path in (tmp_path / "leaf.pem", tmp_path / "self.pem"):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        shown = certs.info(path)
        assert shown.subject == cert.subject.rfc4514_string() and shown.issuer == cert.issuer.rfc4514_string()
        assert shown.self_signed == (cert.subject == cert.issuer)
        assert shown.names == (*san.get_values_for_type(x509.DNSName),
                               *(str(a) for a in san.get_values_for_type(x509.IPAddress)))
        assert shown.not_after_ms == int(cert.not_valid_after_utc.timestamp() * 1000)
        # the fallback for a Python without the private stdlib decoder reads the same
        fallback = certs._info_cryptography(path)
        assert (fallback.subject, fallback.issuer, fallback.self_signed, fallback.names, fallback.not_after_ms) \
            == (shown.subject, shown.issuer, shown.self_signed, shown.names, shown.not_after_ms)
    assert not certs.info(tmp_path / "leaf.pem").self_signed and certs.info(tmp_path / "self.pem").self_signed
    assert 12 < certs.info(tmp_path / "leaf.pem").days_left < 12.2
    with pytest.raises(OSError):
        certs.info(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        certs.info(tmp_path / "junk.pem")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        certs._info_cryptography(tmp_path / "junk.pem")
