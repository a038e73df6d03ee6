#!/usr/bin/env node
// Compiles contracts/src/*.sol with solc-js (Node API, standard JSON) and
// writes one artifact per contract to contracts/build/<Name>.json.
// With --check it writes nothing and fails if the committed artifacts differ
// from a fresh compilation (byte for byte).
//
// Each artifact records the sha256 of every source file its compilation read,
// and one sourceHash over them; tests/contracts recompute it in Python to
// catch a source edited without a rebuild.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = path.resolve(__dirname);
const SRC = path.join(ROOT, 'src');
const BUILD = path.join(ROOT, 'build');

// shanghai: the newest fork Ganache 7 runs; py-evm and anvil run it too.
const SETTINGS = {
  evmVersion: 'shanghai',
  viaIR: true,
  optimizer: { enabled: true, runs: 1000 },
  metadata: { bytecodeHash: 'none' },
  outputSelection: {
    '*': { '': ['ast'], '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'metadata'] },
  },
};

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

// One digest over (path, file digest) pairs sorted by path; the Python check
// in connector/abi.py computes the same.
function sourceHash(fileHashes) {
  const lines = Object.keys(fileHashes).sort().map((p) => `${p} ${fileHashes[p]}\n`);
  return sha256(lines.join(''));
}

function main() {
  const names = fs.readdirSync(SRC).filter((f) => f.endsWith('.sol')).sort();
  const sources = {};
  for (const name of names) {
    sources[name] = { content: fs.readFileSync(path.join(SRC, name), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));

  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(`${e.formattedMessage}\n`);
  if (errors.length > 0) process.exit(1);

  // Only deployable contracts get artifacts; internal libraries and
  // interfaces are inlined into them.
  const deployable = new Set();
  for (const [sourceName, result] of Object.entries(output.sources)) {
    for (const node of result.ast.nodes) {
      if (node.nodeType === 'ContractDefinition' && node.contractKind === 'contract') {
        deployable.add(`${sourceName}:${node.name}`);
      }
    }
  }

  const check = process.argv.includes('--check');
  fs.mkdirSync(BUILD, { recursive: true });
  const written = new Set();
  const differing = [];
  for (const [sourceName, contracts] of Object.entries(output.contracts)) {
    for (const [name, compiled] of Object.entries(contracts)) {
      if (!deployable.has(`${sourceName}:${name}`)) continue;
      const bytecode = compiled.evm.bytecode.object;
      const read = Object.keys(JSON.parse(compiled.metadata).sources);
      const files = {};
      for (const p of read) files[`contracts/src/${p}`] = sha256(sources[p].content);
      const artifact = {
        contractName: name,
        sourceName: `contracts/src/${sourceName}`,
        compiler: { name: 'solc-js', version: solc.version() },
        settings: {
          evmVersion: SETTINGS.evmVersion,
          viaIR: SETTINGS.viaIR,
          optimizer: SETTINGS.optimizer,
          metadata: SETTINGS.metadata,
        },
        sources: files,
        sourceHash: sourceHash(files),
        abi: compiled.abi,
        bytecode: `0x${bytecode}`,
        deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
      };
      const file = path.join(BUILD, `${name}.json`);
      const text = `${JSON.stringify(artifact, null, 2)}\n`;
      written.add(`${name}.json`);
      if (check) {
        if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text) differing.push(name);
      } else {
        fs.writeFileSync(file, text);
      }
    }
  }
  for (const f of fs.readdirSync(BUILD)) {
    if (!f.endsWith('.json') || written.has(f)) continue;
    if (check) differing.push(f);
    else fs.unlinkSync(path.join(BUILD, f));
  }
  if (check) {
    if (differing.length > 0) {
      process.stderr.write(`out of date: ${differing.join(', ')}: run scripts/build-contracts\n`);
      process.exit(1);
    }
    process.stdout.write('contracts/build matches a fresh compilation\n');
    return;
  }
  process.stdout.write(`built ${[...written].sort().join(', ')} with solc ${solc.version()}\n`);
}

main();
