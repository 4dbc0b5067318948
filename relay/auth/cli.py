"""`moq-relay token generate | sign | verify` (relay spec §6.2 "Token CLI")."""

from __future__ import annotations

import argparse
import json
import os
import sys

from relay.auth.keys import ALGORITHMS, KeyError_, generate_key, load_key
from relay.auth.scope import AuthError
from relay.auth.tokens import TokenVerifier, sign_token


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _prefixes(values: list[str]) -> list[str]:
    return [v for v in values if "*" not in v]


def _patterns(values: list[str]) -> list[str]:
    return [v for v in values if "*" in v]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="moq-relay token", description="Keys and tokens for moq-relay.")
    ap.add_argument("--key", help="JWK file (seed spelling: before the subcommand)")
    sub = ap.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="create a key (JWK, base64url JSON)")
    gen.add_argument("--algorithm", default="HS256", choices=sorted(ALGORITHMS))
    gen.add_argument("--id", help="kid (default: 16 random hex characters)")
    gen.add_argument("--out", default="-", help="private key file (mode 0600), or - for stdout")
    gen.add_argument("--public", help="also write the public half here (asymmetric keys)")
    sign = sub.add_parser("sign", help="print a token signed with --key")
    sign.add_argument("--key", dest="sub_key")
    sign.add_argument("--root", default="")
    sign.add_argument("--publish", action="append", default=[],
                      help="publish pattern; without a wildcard, a prefix (repeatable)")
    sign.add_argument("--subscribe", action="append", default=[],
                      help="subscribe pattern; without a wildcard, a prefix (repeatable)")
    sign.add_argument("--expires", type=int, help="unix seconds")
    sign.add_argument("--issued", type=int, help="unix seconds")
    sign.add_argument("--cluster", action="store_true", help="seed compatibility: adds cluster:true")
    ver = sub.add_parser("verify", help="check a token against --key and print its claims")
    ver.add_argument("--key", dest="sub_key")
    ver.add_argument("--in", dest="infile", default="-", help="token file, or - for stdin")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    try:
        if args.command == "generate":
            key = generate_key(args.algorithm, args.id)
            from relay.auth.keys import b64url_encode

            text = b64url_encode(json.dumps(key.jwk, separators=(",", ":")).encode()) + "\n"
            if args.out == "-":
                sys.stdout.write(text)
            else:
                _write_private(args.out, text)
                print(f"wrote {args.algorithm} key {key.kid} to {args.out}", file=sys.stderr)
            if key.alg not in ("HS256", "HS384", "HS512"):
                public = json.dumps(key.public_jwk(), separators=(",", ":"))
                if args.public:
                    with open(args.public, "w") as fh:
                        fh.write(b64url_encode(public.encode()) + "\n")
                print(f"public key: {public}", file=sys.stderr)
            return 0
        key_path = getattr(args, "sub_key", None) or args.key
        if not key_path:
            print("error: --key FILE is required", file=sys.stderr)
            return 2
        if args.command == "sign":
            key = load_key(key_path)
            # As the public rules read (relay.auth.scope.public_rule): `cam` is the prefix, `cam/*` a pattern.
            print(sign_token(key, args.root, _prefixes(args.publish), _prefixes(args.subscribe), args.expires,
                             args.issued, args.cluster, publish=_patterns(args.publish),
                             subscribe=_patterns(args.subscribe)))
            return 0
        token = (sys.stdin.read() if args.infile == "-" else open(args.infile).read()).strip()
        claims = TokenVerifier(key_path=key_path).verify(token)
        print(json.dumps({"root": claims.root, "publish": [p.text for p in claims.publish],
                          "subscribe": [p.text for p in claims.subscribe], "exp": claims.exp}))
        return 0
    except (KeyError_, AuthError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
