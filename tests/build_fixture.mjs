// Regenerates a test-only contract's JSON (ABI + bytecode) beside its source, with the pinned solc-js.
// Run from the repository root: node tests/build_fixture.mjs tests/chain/fixtures/Probe.sol
//                               node tests/build_fixture.mjs tests/contracts/fixtures/Rejecter.sol
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "../contracts/package.json"));
const solc = require("solc");

const sourcePath = resolve(process.argv[2] ?? "");
const file = basename(sourcePath);
const name = file.replace(/\.sol$/, "");
if (!process.argv[2] || file === name) {
  console.error("usage: node tests/build_fixture.mjs path/to/Name.sol");
  process.exit(2);
}
const input = {
  language: "Solidity",
  sources: { [file]: { content: readFileSync(sourcePath, "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const compiled = output.contracts[file][name];
const artifact = {
  contractName: name,
  compiler: `solc ${solc.version()}`,
  abi: compiled.abi,
  bytecode: "0x" + compiled.evm.bytecode.object,
};
writeFileSync(join(dirname(sourcePath), `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
console.log(`${name}.json written (${solc.version()})`);
