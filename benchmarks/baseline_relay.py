"""The baseline relay: the Rust stack's own server (moq-rs `Server`) with one shared origin as
both its publish and subscribe origin, so every session's broadcasts reach every other session.

    python benchmarks/baseline_relay.py 127.0.0.1:4500
"""

from __future__ import annotations

import asyncio
import sys

import moq


async def main(bind: str) -> None:
    origin = moq.OriginProducer()
    async with moq.Server(bind, tls_generate=["localhost", "127.0.0.1"], publish=origin, subscribe=origin) as server:
        print(f"baseline listening {server.local_addr}", flush=True)
        await server.serve()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:4500"))
    except KeyboardInterrupt:
        pass
