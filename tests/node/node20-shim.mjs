// What @moq/lite 0.2 and @kixelated/moq 0.9 expect from their runtime and Node 20 lacks.
// Import before either library. (Their wire quirks are handled by the relay itself, not here.)
if (typeof Promise.withResolvers !== "function") {
	Promise.withResolvers = function withResolvers() {
		let resolve, reject;
		const promise = new this((res, rej) => {
			resolve = res;
			reject = rej;
		});
		return { promise, resolve, reject };
	};
}
if (typeof Set.prototype.difference !== "function") {
	Object.defineProperty(Set.prototype, "difference", {
		configurable: true,
		writable: true,
		value: function difference(other) {
			const out = new Set();
			for (const v of this) if (!other.has(v)) out.add(v);
			return out;
		},
	});
}
// Iterator helpers (Node 22): @kixelated/moq 0.9 calls `set.values().toArray()`.
const iteratorPrototype = Object.getPrototypeOf(Object.getPrototypeOf(new Set().values()));
if (typeof iteratorPrototype.toArray !== "function") {
	Object.defineProperty(iteratorPrototype, "toArray", {
		configurable: true,
		writable: true,
		value: function toArray() {
			return Array.from({ [Symbol.iterator]: () => this });
		},
	});
}
if (typeof globalThis.WebSocket !== "function") {
	globalThis.WebSocket = (await import("ws")).WebSocket;
}
if (!process.env.MOQ_DEBUG) console.debug = () => {};
