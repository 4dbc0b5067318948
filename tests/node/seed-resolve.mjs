// Module resolve hook for @kixelated/moq 0.9.4 on Node: two of its files import "../stream"
// without the ".js" a bundler would add, which Node's ESM resolver refuses. Retry such a
// relative, extension-less specifier with ".js"; everything else resolves as usual.
export async function resolve(specifier, context, nextResolve) {
	try {
		return await nextResolve(specifier, context);
	} catch (err) {
		const relative = specifier.startsWith("./") || specifier.startsWith("../");
		if (err?.code === "ERR_MODULE_NOT_FOUND" && relative && !/\.[cm]?js$/.test(specifier)) {
			return nextResolve(`${specifier}.js`, context);
		}
		throw err;
	}
}
