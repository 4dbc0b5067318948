// The @moq/lite adapter for the browser page (bundled by run.mjs). Every adapter exports
// `publish(params)` and `subscribe(params)`; both connect over WebTransport only (the WebSocket
// fallback is disabled, so a WebTransport failure fails the test) and resolve to plain JSON.
//
// params: url (https://127.0.0.1:P/path), fingerprint (URL of the relay's certificate SHA-256,
// hex), broadcast, track, groups, timeout (s); to publish also frames (per group), size (the
// last frame of a group is padded to this many bytes), interval (ms between groups), linger (ms
// after the last group).
import * as Moq from "@moq/lite";
import { certificateHashes, hex, payload, sleep, withTimeout } from "./common.mjs";

export const library = "@moq/lite";

async function connect(p) {
	// A self-signed certificate valid <= 14 days is accepted when pinned by its SHA-256
	// (WebTransport's serverCertificateHashes); the relay serves the hash over HTTP with CORS.
	const conn = await Moq.Connection.connect(new URL(p.url), {
		websocket: { enabled: false },
		webtransport: { serverCertificateHashes: await certificateHashes(p.fingerprint) },
	});
	console.log(`connected: url=${conn.url} version=${conn.version}`);
	return conn;
}

export async function subscribe(p) {
	const conn = await withTimeout(connect(p), p.timeout, "connect");
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
		// @moq/lite subscribes with Max Latency 0 (lite-03/04): only the newest group is worth
		// delivering, so a group still in flight when a newer one arrives is reset (code Old),
		// as happens to the burst of cached groups that starts a subscription. Such groups are
		// reported as dropped; `groups` are the whole ones.
		const groups = [];
		const dropped = [];
		await withTimeout(
			(async () => {
				while (groups.length < p.groups) {
					const group = await track.nextGroupOrdered();
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
		return { version: conn.version, groups, dropped };
	} finally {
		conn.close();
	}
}

export async function publish(p) {
	const conn = await withTimeout(connect(p), p.timeout, "connect");
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
			console.log(`subscribed: track=${req.track.name}`);
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
				for (const payload of payloads) group.writeString(payload);
				group.close();
			}
			sent.push(payloads);
			await sleep(p.interval);
		}
		await sleep(p.linger);
		broadcast.close(); // announces the end before the session goes
		await sleep(100);
		return { version: conn.version, sent };
	} finally {
		broadcast.close();
		conn.close();
	}
}
