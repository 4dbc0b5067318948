"""Watch the clock published by clock_publish.py, through a MoQ relay (moq-rs client).

    python examples/clock_subscribe.py                    # moql://localhost:4443/anon
    python examples/clock_subscribe.py --url https://localhost:4443/anon --insecure
"""

from __future__ import annotations

import argparse
import asyncio

import moq


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="moql://localhost:4443/anon")
    ap.add_argument("--broadcast", default="clock")
    ap.add_argument("--fingerprint", help="pin the relay certificate (hex SHA-256, from /certificate.sha256)")
    ap.add_argument("--insecure", action="store_true", help="skip certificate verification (dev relays)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many frames (0 = forever)")
    args = ap.parse_args()

    tls = {"tls_fingerprints": [args.fingerprint]} if args.fingerprint else {"tls_verify": not args.insecure}
    if args.url.startswith("moql://") and not args.fingerprint:
        tls = {"tls_verify": False}
    async with moq.Client(args.url, websocket_enabled=False, **tls) as client:
        print(f"waiting for {args.broadcast} on {args.url}")
        consumer = await client.announced_broadcast(args.broadcast)
        track = await consumer.subscribe_track("seconds", moq.Subscription(priority=1, max_age_us=5_000_000))
        seen = 0
        while True:
            group = await track.next_group()
            if group is None:
                print("the clock stopped")
                return
            async for frame in group:
                print(frame.payload.decode(errors="replace"), flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    return


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
