// Compiles contracts/src with the pinned solc (npm solc-js, standard JSON, optimizer on) and writes one
// artifact per network contract to cluster/chain/artifacts/<Name>.json:
//   {abi, bytecode, compiler, contractName, deployedBytecode, deployedBytecodeBytes, sourceHash}
// `sourceHash` lets Python tell stale artifacts without Node (cluster/chain/artifacts.py mirrors it):
//   sha256( "solc <version>\n" + for each file, sorted by path relative to contracts/:
//           "<path>\n<byte length>\n<bytes>" )   over src/**/*.sol and this build script.
// Task deploys TaskAudits in its constructor and runs its functions by delegatecall (its fallback): Task's
// artifact carries TaskAudits' functions in its ABI too, and TaskAudits' size is checked like the others'.
// Output is deterministic: sorted keys, 2-space indent, trailing newline.
// Run: npm run build (in contracts/), or node contracts/build.mjs from anywhere; `--out DIR` writes the
// artifacts to DIR instead (the staleness test recompiles there and compares with the committed ones).
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const CONTRACTS_DIR = dirname(fileURLToPath(import.meta.url));
const DEFAULT_ARTIFACTS_DIR = join(CONTRACTS_DIR, "..", "cluster", "chain", "artifacts");
const NETWORK_CONTRACTS = ["Node", "Task", "TaskQueue", "QoS", "NetworkStats"];
const EIP170_MAX_CODE_BYTES = 24576;
/// Contracts whose functions another one runs by delegatecall: their ABI joins that contract's artifact.
const DELEGATED = { Task: "TaskAudits" };
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const require = createRequire(join(CONTRACTS_DIR, "package.json"));
const solc = require("solc");
const solcPackageVersion = require("solc/package.json").version;

function listFiles(dir, suffix) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listFiles(path, suffix));
    else if (entry.name.endsWith(suffix)) found.push(path);
  }
  return found;
}

const toKey = (path) => relative(CONTRACTS_DIR, path).split(sep).join("/");
const byKey = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

export function sourceHash() {
  const files = [...listFiles(join(CONTRACTS_DIR, "src"), ".sol"), fileURLToPath(import.meta.url)];
  const hash = createHash("sha256");
  hash.update(`solc ${solcPackageVersion}\n`);
  for (const key of files.map(toKey).sort(byKey)) {
    const content = readFileSync(join(CONTRACTS_DIR, key));
    hash.update(`${key}\n${content.length}\n`);
    hash.update(content);
  }
  return hash.digest("hex");
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort(byKey).map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

function compile() {
  const sources = {};
  for (const path of listFiles(join(CONTRACTS_DIR, "src"), ".sol").sort()) {
    sources[toKey(path)] = { content: readFileSync(path, "utf8") };
  }
  const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings: SETTINGS })));
  const diagnostics = output.errors || [];
  for (const d of diagnostics.filter((d) => d.severity !== "error")) console.warn(d.formattedMessage);
  const errors = diagnostics.filter((d) => d.severity === "error");
  if (errors.length) {
    console.error(errors.map((e) => e.formattedMessage).join("\n"));
    process.exit(1);
  }
  return output;
}

function artifactsDir(argv) {
  const at = argv.indexOf("--out");
  if (at === -1) return DEFAULT_ARTIFACTS_DIR;
  if (!argv[at + 1]) throw new Error("--out needs a directory");
  return argv[at + 1];
}

function main() {
  const ARTIFACTS_DIR = artifactsDir(process.argv.slice(2));
  const output = compile();
  const hash = sourceHash();
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  let isTooLarge = false;
  for (const name of NETWORK_CONTRACTS) {
    const compiled = output.contracts[`src/${name}.sol`]?.[name];
    if (!compiled) throw new Error(`contract ${name} not found in src/${name}.sol`);
    const deployedBytes = compiled.evm.deployedBytecode.object.length / 2;
    let abi = compiled.abi;
    const delegated = DELEGATED[name];
    if (delegated) {
      const extra = output.contracts[`src/${delegated}.sol`][delegated];
      const signature = (item) => `${item.type} ${item.name}(${(item.inputs || []).map((i) => i.type).join(",")})`;
      const known = new Set(abi.map(signature));
      abi = [...abi, ...extra.abi.filter((item) => !known.has(signature(item)))];
      const extraBytes = extra.evm.deployedBytecode.object.length / 2;
      const extraFlag = extraBytes > EIP170_MAX_CODE_BYTES ? "  OVER THE EIP-170 LIMIT" : "";
      console.log(`${delegated.padEnd(12)} ${String(extraBytes).padStart(6)} bytes deployed (by ${name})${extraFlag}`);
      isTooLarge ||= extraBytes > EIP170_MAX_CODE_BYTES;
    }
    const artifact = {
      contractName: name,
      compiler: `solc ${solc.version()}`,
      abi,
      bytecode: "0x" + compiled.evm.bytecode.object,
      deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
      deployedBytecodeBytes: deployedBytes,
      sourceHash: hash,
    };
    writeFileSync(join(ARTIFACTS_DIR, `${name}.json`), JSON.stringify(sortKeys(artifact), null, 2) + "\n");
    const flag = deployedBytes > EIP170_MAX_CODE_BYTES ? "  OVER THE EIP-170 LIMIT" : "";
    console.log(`${name.padEnd(12)} ${String(deployedBytes).padStart(6)} bytes deployed${flag}`);
    isTooLarge ||= deployedBytes > EIP170_MAX_CODE_BYTES;
  }
  console.log(`artifacts written to ${relative(process.cwd(), ARTIFACTS_DIR) || "."} (solc ${solc.version()})`);
  if (isTooLarge) process.exit(1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
