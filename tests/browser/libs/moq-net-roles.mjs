// The publish and subscribe roles for @moq/net 0.3, written once for both runtimes: the browser
// adapter (libs/moq-net.mjs, WebTransport) and the Node.js driver (tests/node/moq_net.mjs,
// WebSocket) each pass their own `Moq` module and connect options. No bare imports here, so each
// side resolves @moq/net from its own node_modules.
//
// params as for every adapter (see libs/moq-lite.mjs): url, broadcast, track, groups, timeout (s);
// to publish also frames, size, interval (ms), linger (ms).
import { hex, payload, sleep, withTimeout } from "./common.mjs";

export function roles(Moq, connectOptions) {
	async function connect(p) {
		const conn = await Moq.Connection.connect(new URL(p.url), await connectOptions(p));
		console.log(`connected: url=${conn.url} version=${conn.version}`);
		return conn;
	}

	async function subscribe(p) {
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
			const track = conn.consume(name).subscribe(p.track, { priority: 1 });
			// nextGroup(): each group newer than the last one returned (an older one arriving
			// late is skipped; on moqt-15/16 the relay forwards the burst of cached groups a
			// subscription starts with newest first, and recvGroup() would hand those out too).
			// Whole groups, and those reset by the relay (a newer group superseding one in
			// flight) as dropped.
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
								frames.push(hex(frame.payload));
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
			track.close();
			return { version: conn.version, groups, dropped };
		} finally {
			conn.close();
		}
	}

	async function publish(p) {
		const conn = await withTimeout(connect(p), p.timeout, "connect");
		const broadcast = new Moq.Broadcast.Producer();
		conn.publish(Moq.Path.from(p.broadcast), broadcast);
		console.log(`published ${p.broadcast}`);

		// A track the library serves itself: every subscription the relay makes (and its track
		// info request, lite-05) reads from this one producer.
		const track = broadcast.createTrack(p.track, { priority: 1 });
		const first = (async () => {
			while (!track.used.peek()) await sleep(20);
			console.log(`subscribed: track=${p.track}`);
		})();

		try {
			await withTimeout(first, p.timeout, `a subscription to ${p.track}`);
			const sent = [];
			for (let g = 0; g < p.groups; g++) {
				const payloads = [];
				for (let f = 0; f < p.frames; f++) payloads.push(payload(p, g, f));
				const group = new Moq.Group.Producer(g);
				track.writeGroup(group);
				for (const text of payloads) group.writeString(text);
				group.close();
				sent.push(payloads);
				await sleep(p.interval);
			}
			await sleep(p.linger);
			return { version: conn.version, sent };
		} finally {
			track.close();
			broadcast.close(); // announces the end before the session goes
			await sleep(100);
			conn.close();
		}
	}

	return { publish, subscribe };
}
