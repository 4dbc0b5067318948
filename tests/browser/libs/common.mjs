// Helpers shared by the library adapters (bundled into each by run.mjs).

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
export const unhex = (text) => new Uint8Array(text.trim().match(/../g).map((h) => Number.parseInt(h, 16)));

export function withTimeout(promise, seconds, what) {
	let timer;
	const timeout = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`timeout after ${seconds}s: ${what}`)), seconds * 1000);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Frame f of group g: `<broadcast> g<g> f<f>`, the group's last one padded with "." to p.size bytes. */
export function payload(p, g, f) {
	const text = `${p.broadcast} g${g} f${f}`;
	return f === p.frames - 1 ? text.padEnd(p.size ?? 0, ".") : text;
}

/** The relay's certificate SHA-256 as WebTransport's serverCertificateHashes wants it. */
export async function certificateHashes(fingerprintUrl) {
	const text = await (await fetch(fingerprintUrl)).text();
	return [{ algorithm: "sha-256", value: unhex(text) }];
}
