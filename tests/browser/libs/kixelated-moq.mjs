// The @kixelated/moq 0.9.4 adapter for the browser page (bundled by run.mjs): the seed-era client,
// same contract as libs/moq-lite.mjs (`publish(params)` and `subscribe(params)`, WebTransport
// only, resolving to plain JSON with the negotiated `version`).
//
// This client offers no WebTransport subprotocols: it opens a bidirectional stream and sends the
// legacy in-band CLIENT_SETUP (0x20, versions moq-lite-01 and draft-14), and the server's choice
// decides the Connection class it returns. It has no `version` getter, so the adapter names the
// version from that class and the library's own version constants. Two of its files import
// "../stream" without an extension; esbuild resolves that itself (it tries ".js"), so unlike
// Node (tests/node/seed-resolve.mjs) the bundle needs no resolver.
//
// params: as for libs/moq-lite.mjs.
import * as Moq from "@kixelated/moq";
import { certificateHashes, hex, payload, sleep, withTimeout } from "./common.mjs";

export const library = "@kixelated/moq";

function versionOf(conn) {
	if (conn instanceof Moq.Lite.Connection) {
		const lite = Moq.Lite.CURRENT_VERSION; // 0xff0dad01: moq-lite-01
		return `moq-lite-${(lite & 0xff).toString().padStart(2, "0")}`;
	}
	if (conn instanceof Moq.Ietf.Connection) return `moq-transport-${Moq.Ietf.CURRENT_VERSION & 0xff}`;
	return "unknown";
}

async function connect(p) {
	// An https:// URL skips the library's own fingerprint fetch (it does that for http:// only);
	// the hash is pinned here instead. The WebSocket fallback is off: it would otherwise race
	// WebTransport (after a 200 ms head start) and could win.
	let conn;
	try {
		conn = await Moq.Connection.connect(new URL(p.url), {
			websocket: { enabled: false },
			webtransport: { serverCertificateHashes: await certificateHashes(p.fingerprint) },
		});
	} catch (err) {
		// It races its transports with Promise.any: with one of them, unwrap that one's error.
		if (err instanceof AggregateError) throw new Error(`connect: ${err.errors.map(String).join("; ")}`);
		throw err;
	}
	const version = versionOf(conn);
	console.log(`connected: url=${conn.url} version=${version}`);
	return { conn, version };
}

export async function subscribe(p) {
	const { conn, version } = await withTimeout(connect(p), p.timeout, "connect");
	try {
		const name = Moq.Path.from(p.broadcast);
		const announced = conn.announced(Moq.Path.empty());
		await withTimeout(
			(async () => {
				for (;;) {
					const entry = await announced.next();
					if (!entry) throw new Error("announcements ended before the broadcast appeared");
					console.log(`announced: ${entry.path} active=${entry.active}`);
					if (entry.path === name && entry.active) return;
				}
			})(),
			p.timeout,
			`announcement of ${name}`,
		);
		const track = conn.consume(name).subscribe(p.track, 1);
		// lite-01 has no Max Latency on the wire; the relay reads it as 0 (only the newest group
		// is worth delivering), so a group still in flight when a newer one starts would be reset.
		// Such groups are reported as dropped; `groups` are the whole ones. The library's Track
		// hands groups out in increasing order and discards any that arrive behind a newer one.
		const groups = [];
		const dropped = [];
		await withTimeout(
			(async () => {
				while (groups.length < p.groups) {
					const group = await track.nextGroup();
					if (!group) throw new Error("track ended");
					const frames = [];
					try {
						for (;;) {
							const frame = await group.readFrame();
							if (!frame) break;
							frames.push(hex(frame));
						}
					} catch (err) {
						console.log(`group ${group.sequence} dropped after ${frames.length} frame(s): ${err}`);
						dropped.push({ sequence: group.sequence, error: String(err) });
						continue;
					}
					console.log(`group ${group.sequence}: ${frames.length} frame(s)`);
					groups.push({ sequence: group.sequence, frames });
				}
			})(),
			p.timeout,
			`${p.groups} groups of ${name}/${p.track}`,
		);
		return { version, groups, dropped };
	} finally {
		conn.close();
	}
}

export async function publish(p) {
	const { conn, version } = await withTimeout(connect(p), p.timeout, "connect");
	const broadcast = new Moq.Broadcast();
	conn.publish(Moq.Path.from(p.broadcast), broadcast);
	console.log(`published ${p.broadcast}`);

	// Each subscription (the relay makes one per track) arrives as a request; keep the live ones.
	const tracks = new Set();
	let subscribed;
	const first = new Promise((r) => {
		subscribed = r;
	});
	(async () => {
		for (;;) {
			const req = await broadcast.requested();
			if (!req) break;
			if (req.track.name !== p.track) {
				req.track.close(new Error("not found"));
				continue;
			}
			console.log(`subscribed: track=${req.track.name} priority=${req.priority}`);
			tracks.add(req.track);
			req.track.closed.finally(() => tracks.delete(req.track));
			subscribed();
		}
	})();

	try {
		await withTimeout(first, p.timeout, `a subscription to ${p.track}`);
		const sent = [];
		for (let g = 0; g < p.groups; g++) {
			const payloads = [];
			for (let f = 0; f < p.frames; f++) payloads.push(payload(p, g, f));
			for (const track of tracks) {
				const group = new Moq.Group(g); // the same sequence number for every subscriber
				track.writeGroup(group);
				for (const text of payloads) group.writeString(text);
				group.close();
			}
			sent.push(payloads);
			await sleep(p.interval);
		}
		await sleep(p.linger);
		broadcast.close(); // announces the end before the session goes
		await sleep(100);
		return { version, sent };
	} finally {
		broadcast.close();
		conn.close();
	}
}
