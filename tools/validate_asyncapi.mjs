// Validates an AsyncAPI document offline: `node tools/validate_asyncapi.mjs asyncapi.yaml`.
// Prints every error (diagnostic severity 0) and exits 1 if there is any; otherwise prints a one-line summary and
// exits 0. Warnings and hints (governance rules) are not failures: the CLI would print them, CI does not need to.
// @asyncapi/parser is used rather than @asyncapi/cli because it is a 54 MB install instead of 1.5 GB and sends no
// analytics; fromFile resolves the external `$ref`s into openapi.yaml relative to the document.
import { Parser, fromFile } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node tools/validate_asyncapi.mjs FILE');
  process.exit(2);
}

let parsed;
try {
  parsed = await fromFile(new Parser(), file).parse();
} catch (error) { // an unreadable file: one line, not a stack trace
  console.error(`${file}: ${error.message}`);
  process.exit(1);
}
const { document, diagnostics } = parsed;
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of errors) {
  const where = d.path && d.path.length ? d.path.join('/') : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  console.error(`${file}${line} ${where}: ${d.message} [${d.code}]`);
}
if (errors.length || !document) {
  console.error(`${file}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.allChannels().length} channels, `
  + `${document.allMessages().length} messages, ${document.allOperations().length} operations`);
