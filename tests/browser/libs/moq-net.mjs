// The @moq/net adapter for the browser page (bundled by run.mjs): WebTransport only (the
// WebSocket fallback off, so a WebTransport failure fails the test), the relay's self-signed
// certificate pinned by the SHA-256 it serves at /certificate.sha256.
import * as Moq from "@moq/net";
import { certificateHashes } from "./common.mjs";
import { roles } from "./moq-net-roles.mjs";

export const library = "@moq/net";

export const { publish, subscribe } = roles(Moq, async (p) => ({
	websocket: { enabled: false },
	webtransport: { serverCertificateHashes: await certificateHashes(p.fingerprint) },
}));
