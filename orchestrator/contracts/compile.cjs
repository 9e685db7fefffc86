// Compiles the governance contract with solc-js (npm `solc`, pinned exactly in
// ops/test-deps/package.json) through the standard-JSON interface, and writes the committed
// artifacts:
//
//   ValidatorGovernance.init.hex       init code (constructor form), without constructor args
//   ValidatorGovernance.runtime.hex    runtime code (code + storage form)
//   ValidatorGovernance.abi.json       ABI
//   ValidatorGovernance.storage.json   storage layout, which orchestrator/src/contracts.rs follows
//
// Usage (from the workspace root, after ops/install-test-deps.sh):
//   NODE_PATH=.tools/node/node_modules node orchestrator/contracts/compile.cjs [OUT_DIR]
// OUT_DIR defaults to this directory. orchestrator/tests/contracts_compile.rs runs it into
// a temporary directory and compares every file byte for byte with the committed ones.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const NAME = "ValidatorGovernance";
// The source key is part of the metadata hash appended to the bytecode: keep it a bare
// file name so the output does not depend on where the checkout lives.
const SOURCE = `${NAME}.sol`;

const input = {
  language: "Solidity",
  sources: { [SOURCE]: { content: fs.readFileSync(path.join(__dirname, SOURCE), "utf8") } },
  settings: {
    // The genesis files enable forks up to London and no later, so the code must not use
    // PUSH0 (Shanghai) or anything newer.
    evmVersion: "london",
    optimizer: { enabled: true, runs: 200 },
    viaIR: false,
    metadata: { bytecodeHash: "ipfs" },
    outputSelection: {
      [SOURCE]: {
        [NAME]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"],
      },
    },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = output.errors || [];
for (const p of problems) {
  process.stderr.write(p.formattedMessage || p.message);
}
// Warnings fail too: the committed contract compiles clean.
if (problems.length > 0) {
  process.stderr.write(`solc ${solc.version()} reported ${problems.length} problem(s)\n`);
  process.exit(1);
}

const contract = output.contracts[SOURCE][NAME];
const outDir = process.argv[2] || __dirname;
const write = (suffix, text) => fs.writeFileSync(path.join(outDir, `${NAME}.${suffix}`), text);
write("init.hex", contract.evm.bytecode.object + "\n");
write("runtime.hex", contract.evm.deployedBytecode.object + "\n");
write("abi.json", JSON.stringify(contract.abi, null, 2) + "\n");
write("storage.json", JSON.stringify(contract.storageLayout, null, 2) + "\n");
process.stderr.write(`compiled ${SOURCE} with solc ${solc.version()}\n`);
