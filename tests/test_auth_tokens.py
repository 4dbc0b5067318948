"""Keys, tokens and the authorizer: the rules of relay spec §6, including the bad inputs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import jwt
import pytest

from relay.auth.authorizer import Authorizer
from relay.auth.keys import KeyError_, b64url_encode, generate_key, parse_jwk
from relay.auth.scope import AuthError
from relay.auth.tokens import TokenVerifier, sign_token


def texts(patterns) -> tuple[str, ...]:
    return tuple(p.text for p in patterns)


def write_key(path, key, public: bool = False) -> str:
    data = key.public_jwk() if public else key.jwk
    path.write_text(b64url_encode(json.dumps(data).encode()))
    return str(path)


@pytest.fixture
def hs(tmp_path):
    key = generate_key("HS256", "k1")
    return key, TokenVerifier(key_path=write_key(tmp_path / "k1.jwk", key))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "ES256", "ES384", "RS256", "PS256", "EdDSA"])
def test_every_algorithm_round_trips(tmp_path, alg) -> None:
    key = generate_key(alg)
    token = sign_token(key, root="room", put=["alice"], get=[""], expires=int(time.time()) + 60)
    # Asymmetric keys verify with the public half only.
    verifier = TokenVerifier(key_path=write_key(tmp_path / "k.jwk", key, public=alg not in ("HS256", "HS384", "HS512")))
    claims = verifier.verify(token)
    assert (claims.root, texts(claims.publish), texts(claims.subscribe)) == ("room", ("alice/**",), ("**",))


def test_raw_json_and_seed_keys() -> None:
    secret = b"s" * 16  # seed keys may be short: accepted with a warning
    seed = {"alg": "HS256", "k": b64url_encode(secret)}  # no kty (seed)
    assert parse_jwk(json.dumps(seed)).alg == "HS256"
    assert parse_jwk(base64.urlsafe_b64encode(json.dumps(seed).encode()).decode().rstrip("=")).alg == "HS256"
    for bad in ("", "{}", '{"alg":"none"}', '{"alg":"ES256","kty":"EC","crv":"P-384","x":"AA","y":"AA"}',
                "not base64 !!", '{"alg":"HS256","kid":"bad kid!","k":"AA"}'):
        with pytest.raises(KeyError_):
            parse_jwk(bad)


def test_claim_rules(hs) -> None:
    key, verifier = hs
    now = int(time.time())

    def token(payload, alg="HS256", k=None, headers=None):
        return jwt.encode(payload, k or key.sign_key, algorithm=alg, headers=headers)

    assert texts(verifier.verify(token({"root": "a", "get": "x"})).subscribe) == ("x/**",)
    bad = {
        "expired": token({"get": "", "exp": now - 1}),
        "not_yet_valid": token({"get": "", "nbf": now + 60}),
        "useless": token({"root": "a"}),
        "only_sub_string": token({"sub": "user-1"}),  # the JWT subject is never a grant
        "aud": token({"get": "", "aud": "x"}),
        "wrong_key": token({"get": ""}, k=b"x" * 32),
        "garbage": "not.a.token",
        "none_alg": jwt.encode({"get": ""}, None, algorithm="none"),
        "other_alg": token({"get": ""}, alg="HS512"),
        "oversized": token({"get": "", "pad": "x" * 9000}),
        "traversal_root": token({"root": "a/../b", "get": ""}),
        "encoded_root": token({"root": "a%2f..", "get": ""}),
        "bad_exp": token({"get": "", "exp": "tomorrow"}),
    }
    for name, tok in bad.items():
        with pytest.raises(AuthError):
            verifier.verify(tok)
        assert name
    # Seed names: pub/sub lists are accepted where put/get are absent.
    claims = verifier.verify(token({"pub": ["cam"], "sub": ["room"]}))
    assert texts(claims.publish) == ("cam/**",) and texts(claims.subscribe) == ("room/**",)


def raw_token(key, payload_json: str) -> str:
    """An HS256 token over payload bytes exactly as given (pyjwt would re-serialise them)."""
    head = b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = b64url_encode(payload_json.encode())
    mac = hmac.new(key.sign_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url_encode(mac)}"


# Validly signed, but the time claim is no integer number of seconds. Python's JSON reader
# turns Infinity/NaN/1e400 into floats that compare false to everything (NaN) or overflow
# int() (OverflowError, ValueError): each used to escape as a 500 or pass as valid.
BAD_TIME_CLAIMS = ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", "1.5", "true", "false", '"1700000000"',
                   "[1]", "{}", "-1", str(2**63), "1" + "0" * 40]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", BAD_TIME_CLAIMS)
def test_malformed_time_claims_are_refused(hs, claim: str, value: str) -> None:
    key, verifier = hs
    with pytest.raises(AuthError, match=f"claim {claim} "):
        verifier.verify(raw_token(key, f'{{"get": "", "{claim}": {value}}}'))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_integral_time_claims_are_accepted(hs, claim: str) -> None:
    key, verifier = hs
    # A JSON float that is a whole number (as some signers write them) and null (= absent).
    when = {"exp": int(time.time()) + 3600, "nbf": int(time.time()) - 60, "iat": int(time.time())}[claim]
    for text in (str(when), f"{when}.0", f"{when}e0", f"{when * 10}e-1", "null"):
        claims = verifier.verify(raw_token(key, f'{{"get": "", "{claim}": {text}}}'))
        assert texts(claims.subscribe) == ("**",)
        assert claims.exp == (when if claim == "exp" and text != "null" else None)
        if claims.exp is not None:
            assert type(claims.exp) is int


def test_hmac_public_key_confusion(tmp_path) -> None:
    key = generate_key("ES256")
    verifier = TokenVerifier(key_path=write_key(tmp_path / "p.jwk", key, public=True))
    # The classic forgery: HS256 "signed" with the public key's bytes (built by hand, since
    # pyjwt refuses to do it).
    public_bytes = json.dumps(key.public_jwk()).encode()
    head = b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url_encode(json.dumps({"get": ""}).encode())
    mac = hmac.new(public_bytes, f"{head}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{head}.{body}.{b64url_encode(mac)}"
    with pytest.raises(AuthError):
        verifier.verify(forged)


def test_key_dir_and_rotation(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    a = generate_key("HS256", "a")
    write_key(keys / "a.jwk", a)
    verifier = TokenVerifier(key_dir=str(keys))
    assert texts(verifier.verify(sign_token(a, get=[""])).subscribe) == ("**",)
    b = generate_key("HS256", "b")
    with pytest.raises(AuthError):
        verifier.verify(sign_token(b, get=[""]))  # not there yet
    write_key(keys / "b.jwk", b)  # rotation: a new kid appears
    assert texts(verifier.verify(sign_token(b, get=[""])).subscribe) == ("**",)
    (keys / "a.jwk").unlink()  # and the old one is retired
    with pytest.raises(AuthError):
        verifier.verify(sign_token(a, get=[""]))
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode({"get": ""}, a.sign_key, algorithm="HS256"))  # no kid


def test_key_scope_caps_tokens(tmp_path) -> None:
    key = generate_key("HS256", "s")
    key.jwk["scope"] = {"root": "org", "put": ["cams"], "get": [""]}
    verifier = TokenVerifier(key_path=write_key(tmp_path / "s.jwk", key))
    signer = parse_jwk(json.dumps(key.jwk))
    assert texts(verifier.verify(sign_token(signer, root="org", put=["cams/1"], get=["x"])).publish) == ("cams/1/**",)
    with pytest.raises(AuthError):
        verifier.verify(sign_token(signer, root="org", put=["other"]))


def test_authorizer_rules(hs) -> None:
    key, verifier = hs
    auth = Authorizer(verifier, ["anon"], ["anon"])
    tok = sign_token(key, root="room/123", put=["alice"], get=[""])
    s = auth(f"/room/123?jwt={tok}")
    assert (s.root, texts(s.publish), texts(s.subscribe)) == ("room/123", ("alice/**",), ("**",))
    assert texts(auth(f"/room?jwt=&jwt={tok}").subscribe) == ("123/**",)  # last non-empty jwt wins
    assert texts(auth("/anon/x?jwt=").publish) == ("**",)  # empty jwt = no token = public rules
    for target in ("/secret", f"/secret?jwt={tok}", f"/anon?jwt={tok}x", "/anon/../secret", "/anon/%2e%2e/x"):
        with pytest.raises(AuthError):
            auth(target)
    expiring = sign_token(key, get=[""], expires=int(time.time()) + 30)
    assert auth(f"/?jwt={expiring}").expires is not None
    # Refusals are counted by reason, in a table peers cannot grow without bound (paths and
    # header values appear in reasons).
    for i in range(500):
        with pytest.raises(AuthError):
            auth(f"/secret{i}")
    assert len(auth.rejections) <= 65 and auth.rejections["other"] > 400
    no_keys = Authorizer(TokenVerifier(), ["anon"], ["anon"])
    with pytest.raises(AuthError, match="disabled"):
        no_keys(f"/anon?jwt={tok}")  # a token is never softened into public access


def test_token_command_round_trip(tmp_path) -> None:
    key_file = tmp_path / "root.jwk"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "relay", "token", *args], input=stdin,
                              capture_output=True, text=True, timeout=30)

    assert run("generate", "--algorithm", "EdDSA", "--out", str(key_file), "--public",
               str(tmp_path / "root.pub")).returncode == 0
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    signed = run("sign", "--key", str(key_file), "--root", "demo", "--publish", "cam", "--subscribe", "")
    assert signed.returncode == 0
    verified = run("verify", "--key", str(tmp_path / "root.pub"), stdin=signed.stdout)
    assert verified.returncode == 0
    assert json.loads(verified.stdout) == {"root": "demo", "publish": ["cam/**"], "subscribe": ["**"], "exp": None}
    assert run("verify", "--key", str(tmp_path / "root.pub"), stdin="garbage").returncode == 1
    # The seed's spelling: --key before the subcommand.
    seed = subprocess.run([sys.executable, "-m", "relay", "--key", str(key_file), "sign", "--subscribe", "x"],
                          capture_output=True, text=True, timeout=30)
    assert seed.returncode == 0 and seed.stdout.count(".") == 2


async def test_a_moq_transport_setup_token_is_read_as_the_jwt(tmp_path, hs) -> None:
    """A SETUP AUTHORIZATION TOKEN of kind 0 carries a JWT (as `auth serve` reads it): the same
    one in `?jwt=` too is one token; a different one, or another kind, is refused."""
    from relay.auth.contract import SessionFacts

    key, verifier = hs
    authorize = Authorizer(verifier, None, None)
    token = sign_token(key, "room", ["alice"], [""])
    other = sign_token(key, "room", ["bob"], [""])

    def facts(kind: int, value: str) -> SessionFacts:
        return SessionFacts(id="1", node="n", transport="quic", path="/room", token=(kind, value.encode()))

    scope = await authorize.decide("/room", facts(0, token))
    assert texts(scope.publish) == ("alice/**",)
    assert texts((await authorize.decide(f"/room?jwt={token}", facts(0, token))).publish) == ("alice/**",)
    for target, given in ((f"/room?jwt={other}", facts(0, token)), ("/room", facts(1, token))):
        with pytest.raises(AuthError):
            await authorize.decide(target, given)
    with pytest.raises(AuthError):  # no token anywhere, and no public rules
        await authorize.decide("/room", None)
