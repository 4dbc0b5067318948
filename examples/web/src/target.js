// The relay URL and broadcast name from the page's query, defaulting to a relay on its
// development defaults (`python -m relay`: 127.0.0.1:4443). An http:// URL makes @moq/net fetch
// the relay's /certificate.sha256 and pin it (serverCertificateHashes) for WebTransport to
// https:// on the same port; the WebSocket fallback uses ws:// there.
export function target() {
	const query = new URLSearchParams(location.search);
	const url = query.get("url") ?? "http://127.0.0.1:4443/anon";
	const name = query.get("name") ?? "camera";
	document.getElementById("target").textContent = `${url} ${name}`;
	return { url, name };
}
