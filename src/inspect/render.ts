/** Kept for importers by path (scripts/fuzz/mime.mjs loads dist/inspect/render.js): the renderer is src/inspect/render/. */
export { decodeBase64Strict, decodeQuotedPrintable, messageSize, renderItem, toCrlf } from './render/index.js';
