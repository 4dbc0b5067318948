"""`moq-relay auth serve`: a reference auth server (relay-0.17.md §1) answering the contract from
JWT keys and public rules, so a deployment can move authorisation out of its relays without
other tooling: run it beside them and point `[auth] url` at it.

It decides as a relay with `[auth] key` / `key_dir` / `public` decides by itself (the same
`Authorizer`: seed-era and 0.17 tokens, patterns, the dialed-path table), and answers with the
Grant that carries that scope. A token comes from the query's `jwt` or a moq-transport SETUP
token of kind 0; both present and different, or another kind, is refused. `--expires` bounds
grants that would not end (and a token's `exp` ends its grant); `--revalidate` asks the relays
to re-check at that cadence, which is when a key removed from `--key-dir` takes effect.

`GrantPolicy` is the decision with no I/O; `serve` runs it under hypercorn.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import sys
import time

import trio
from quart import Response, request
from quart_trio import QuartTrio

from relay.auth.authorizer import Authorizer
from relay.auth.contract import MAX_ANSWER
from relay.auth.keys import KeyError_
from relay.auth.scope import AuthError
from relay.auth.tokens import TokenVerifier

log = logging.getLogger("relay.auth.serve")


class GrantPolicy:
    def __init__(self, authorizer: Authorizer, *, expires: float | None = None, revalidate: float | None = None) -> None:
        if revalidate is not None and expires is None:
            raise ValueError("--revalidate needs --expires (a re-checked grant must still end)")
        self.authorizer = authorizer
        self.expires = expires
        self.revalidate = revalidate

    def answer(self, body: bytes, wall_now: float) -> tuple[int, dict]:
        """One Request's answer: (status, JSON body)."""
        try:
            req = json.loads(body)
            event, path = req["event"], req.get("path") or "/"
            if not isinstance(req, dict) or not isinstance(path, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return 400, {"error": f"not a Request: {exc}"}
        if event == "end":
            return 200, {}
        query = req.get("query") or ""
        try:
            target = f"{path}?{query}" if query else path
            scope = self.authorizer(target, setup_token=self._setup_token(req))
        except AuthError as exc:
            log.info("%s %s %s refused: %s", event, req.get("id", "?"), path, exc.reason)
            return (403 if exc.status == 403 else 401), {"error": exc.reason}
        grant: dict = {"publish": [p.text for p in scope.publish], "subscribe": [p.text for p in scope.subscribe],
                       "root": scope.root}
        ends = [e for e in (scope.expires, None if self.expires is None else wall_now + self.expires) if e is not None]
        if ends:
            grant["expires"] = int(min(ends))
            if grant["expires"] <= wall_now:
                return 401, {"error": "the token has expired"}
            if self.revalidate is not None:
                grant["revalidate"] = max(1, int(self.revalidate))
        return 200, grant

    @staticmethod
    def _setup_token(req: dict) -> tuple[int, bytes] | None:
        """The Request's `token` (a moq-transport SETUP token) as (kind, bytes); the authorizer
        reads kind 0 as a JWT and checks it against any `?jwt=`."""
        setup = req.get("token")
        if setup is None:
            return None
        if not isinstance(setup, dict) or not isinstance(setup.get("kind"), int) or not isinstance(setup.get("value"), str):
            raise AuthError("the token field is not {kind, value}")
        value = setup["value"]
        try:
            return setup["kind"], base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError) as exc:
            raise AuthError(f"the SETUP token is not base64url: {exc}") from exc


def create_app(policy: GrantPolicy) -> QuartTrio:
    app = QuartTrio("moq-relay-auth")

    @app.post("/")
    @app.post("/<path:_any>")
    async def decide(_any: str = "") -> Response:
        body = await request.get_data()
        if len(body) > MAX_ANSWER:
            return Response(json.dumps({"error": "request too large"}), status=413, content_type="application/json")
        status, answer = policy.answer(body, time.time())
        return Response(json.dumps(answer), status=status, content_type="application/json")

    return app


def main(argv: list[str]) -> int:
    from relay.config.values import ConfigError, parse_addr, parse_duration
    from relay.log import setup_logging
    from relay.web.serve import HttpServer

    ap = argparse.ArgumentParser(prog="moq-relay auth serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9000", help="TCP address (loopback: relays post plain HTTP)")
    ap.add_argument("--key", help="JWK file verifying tokens")
    ap.add_argument("--key-dir", help="directory of <kid>.jwk files, read as they change")
    for name in ("public", "public-subscribe", "public-publish"):
        ap.add_argument(f"--{name}", action="append", default=[], help="path pattern open without a token (repeatable)")
    ap.add_argument("--expires", help="bound every grant to this long from each check (e.g. 1h)")
    ap.add_argument("--revalidate", help="ask relays to re-check this often (needs --expires)")
    ap.add_argument("--log-level", default="info")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    setup_logging(args.log_level, {}, "text")
    try:
        verifier = TokenVerifier(args.key, args.key_dir)
        subscribe = args.public + args.public_subscribe
        publish = args.public + args.public_publish
        if not verifier.enabled and not subscribe and not publish:
            raise ValueError("give --key, --key-dir or a --public rule: nothing could be granted")
        policy = GrantPolicy(Authorizer(verifier, subscribe or None, publish or None),
                             expires=parse_duration(args.expires, "--expires") if args.expires else None,
                             revalidate=parse_duration(args.revalidate, "--revalidate") if args.revalidate else None)
        listen = parse_addr(args.listen, "--listen")
    except (KeyError_, ValueError, ConfigError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1

    async def run() -> None:
        server = HttpServer(create_app(policy), [listen])
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(server.serve)
            log.info("auth server listening url=%s", ", ".join(urls))

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"Error: --listen {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
