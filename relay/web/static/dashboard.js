// The relay's live dashboard: one JSON snapshot a second from /dashboard/events (server-sent
// events), rendered into three tables. The rates arrive computed (the server takes the deltas
// of its cumulative counters between snapshots); this page only formats them.
//
// Every string in a snapshot may come from a peer (paths, track names, addresses): the DOM is
// built with createElement and textContent only, never innerHTML.
"use strict";

const STALE_AFTER_MS = 3000; // no event for this long: say the view is stale

function bytes(n) {
	if (n === null || n === undefined) return "–";
	const units = ["B", "kB", "MB", "GB", "TB"];
	let i = 0;
	while (n >= 1000 && i < units.length - 1) {
		n /= 1000;
		i += 1;
	}
	return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function perSecond(n) {
	return n === null || n === undefined ? "–" : `${bytes(Math.round(n))}/s`;
}

function bits(n) {
	if (n === null || n === undefined) return "–";
	const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
	let i = 0;
	while (n >= 1000 && i < units.length - 1) {
		n /= 1000;
		i += 1;
	}
	return `${i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function age(seconds) {
	const s = Math.floor(seconds);
	if (s < 60) return `${s}s`;
	if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
	return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

// One cell: `text` shown, `value` (a number, or null) kept in data-value for scripts and tests.
function cell(text, { cls = "", value, key } = {}) {
	const td = document.createElement("td");
	td.textContent = text === null || text === undefined ? "" : String(text);
	if (cls) td.className = cls;
	if (key) td.dataset.key = key;
	if (value !== undefined) td.dataset.value = value === null ? "" : String(value);
	return td;
}

function row(cells, attrs = {}) {
	const tr = document.createElement("tr");
	for (const [k, v] of Object.entries(attrs)) tr.dataset[k] = String(v);
	tr.append(...cells);
	return tr;
}

function fill(tableId, rows, columns, emptyText) {
	const body = document.querySelector(`#${tableId} tbody`);
	if (rows.length === 0) {
		const td = cell(emptyText, { cls: "empty" });
		td.colSpan = columns;
		body.replaceChildren(row([td]));
	} else {
		body.replaceChildren(...rows);
	}
	document.getElementById(`${tableId}-count`).textContent = `(${rows.length})`;
}

function render(snap) {
	const r = snap.relay;
	document.getElementById("summary").textContent =
		`hop id ${r.hop_id} · ${r.sessions} sessions · ${r.broadcasts} broadcasts · cache ${bytes(r.cache_bytes)}` +
		(r.draining ? " · DRAINING" : "");

	fill(
		"sessions",
		snap.sessions.map((s) =>
			row(
				[
					cell(`#${s.id}`, { value: s.id, key: "id" }),
					cell(s.link ? `${s.peer} (link ${s.link})` : s.peer, { key: "peer" }),
					cell(s.transport, { key: "transport" }),
					cell(s.version, { key: "version" }),
					cell(s.root ?? "–", { key: "root" }),
					cell(s.path || "–", { cls: "wrap", key: "path" }),
					cell(bytes(s.bytes_in), { cls: "num", value: s.bytes_in, key: "bytes_in" }),
					cell(perSecond(s.rate_in), { cls: "num", value: s.rate_in, key: "rate_in" }),
					cell(bytes(s.bytes_out), { cls: "num", value: s.bytes_out, key: "bytes_out" }),
					cell(perSecond(s.rate_out), { cls: "num", value: s.rate_out, key: "rate_out" }),
					cell(age(s.age), { cls: "num", value: s.age, key: "age" }),
				],
				{ session: s.id },
			),
		),
		11,
		"no sessions",
	);

	fill(
		"broadcasts",
		snap.broadcasts.map((b) => {
			const tracks = b.tracks.map((t) => `${t.name} (${t.subscribers})`).join(", ");
			const publisher = b.publisher === null ? "relay" : `#${b.publisher} ${b.publisher_peer ?? ""}`;
			const tr = row(
				[
					cell(b.path, { cls: "wrap", key: "path" }),
					cell(publisher, { value: b.publisher, key: "publisher" }),
					cell(tracks || "none read", { cls: "wrap", key: "tracks" }),
					cell(b.subscribers, { cls: "num", value: b.subscribers, key: "subscribers" }),
					cell(bits(b.bitrate), { cls: "num", value: b.bitrate, key: "bitrate" }),
					cell(bytes(b.bytes), { cls: "num", value: b.bytes, key: "bytes" }),
					cell(b.cached_groups, { cls: "num", value: b.cached_groups, key: "cached_groups" }),
					cell(`${b.active ? "active" : "standby"}, ${b.hops} hops, cost ${b.cost}`, { key: "route" }),
				],
				{ path: b.path },
			);
			if (!b.active) tr.className = "inactive";
			return tr;
		}),
		8,
		"no broadcasts",
	);

	fill(
		"links",
		snap.links.map((l) =>
			row(
				[
					cell(l.peer, { cls: "wrap", key: "peer" }),
					cell(l.cost ?? "–", { cls: "num", value: l.cost, key: "cost" }),
					cell(l.state, { key: "state" }),
					cell(l.session === null ? "–" : `#${l.session}`, { value: l.session, key: "session" }),
					cell(perSecond(l.rate_in), { cls: "num", value: l.rate_in, key: "rate_in" }),
					cell(perSecond(l.rate_out), { cls: "num", value: l.rate_out, key: "rate_out" }),
				],
				{ peer: l.peer },
			),
		),
		6,
		"no cluster links",
	);
}

function start() {
	const status = document.getElementById("status");
	let events = 0;
	let last = 0;
	const source = new EventSource("/dashboard/events");
	source.onmessage = (ev) => {
		render(JSON.parse(ev.data));
		events += 1;
		last = Date.now();
		status.dataset.events = String(events);
		status.className = "status";
		status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
	};
	// EventSource reconnects by itself (the stream says `retry: 1000`); say so meanwhile.
	source.onerror = () => {
		status.className = "status stale";
		status.textContent = "disconnected; reconnecting…";
	};
	setInterval(() => {
		if (last && Date.now() - last > STALE_AFTER_MS) {
			status.className = "status stale";
			status.textContent = `stale: no update for ${Math.round((Date.now() - last) / 1000)}s`;
		}
	}, 1000);
}

start();
