"""Publish a clock through a MoQ relay with the real Rust client (moq-rs).

    python examples/clock_publish.py                      # moql://localhost:4443/anon
    python examples/clock_publish.py --url https://localhost:4443/anon --insecure

Broadcast `clock`, track `seconds`: one group per minute, one frame per second, each frame the
current time as text (the layout of upstream's clock demo).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime

import moq


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="moql://localhost:4443/anon")
    ap.add_argument("--broadcast", default="clock")
    ap.add_argument("--fingerprint", help="pin the relay certificate (hex SHA-256, from /certificate.sha256)")
    ap.add_argument("--insecure", action="store_true", help="skip certificate verification (dev relays)")
    args = ap.parse_args()

    tls = {"tls_fingerprints": [args.fingerprint]} if args.fingerprint else {"tls_verify": not args.insecure}
    if args.url.startswith("moql://") and not args.fingerprint:
        tls = {"tls_verify": False}  # the dev relay's certificate is self-signed
    async with moq.Client(args.url, websocket_enabled=False, **tls) as client:
        broadcast = client.create_broadcast(args.broadcast)
        track = broadcast.publish_track("seconds", moq.TrackInfo(priority=1, max_age_us=60_000_000, timescale=1000))
        broadcast.announce()
        print(f"publishing {args.broadcast}/seconds on {args.url}")
        group = None
        minute = None
        while True:
            now = datetime.datetime.now()
            if now.minute != minute or group is None:
                if group is not None:
                    group.finish()
                group = track.append_group()
                minute = now.minute
            group.write_frame(now.strftime("%Y-%m-%d %H:%M:%S").encode(), int(now.timestamp() * 1_000_000))
            await asyncio.sleep(1 - now.microsecond / 1_000_000)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
