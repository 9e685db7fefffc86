// Decrypts or writes a Web3 Secret Storage (v3) keystore with ethers v6, so the Rust tests
// can check our keystores against a tool we did not write.
//
// Run with node, ethers resolved from .tools/node (see ops/install-test-deps.sh):
//
//   NODE_PATH=.tools/node/node_modules node ethers_keystore.cjs decrypt PASSWORD_FILE < keystore.json
//     prints {"private_key": "<64 hex>", "address": "0x<EIP-55>"}
//   NODE_PATH=.tools/node/node_modules node ethers_keystore.cjs encrypt PASSWORD_FILE SCRYPT_N < private_key_hex
//     prints the keystore JSON (ethers writes scrypt only; r = 8, p = 1)
//
// The password file's bytes are the password, exactly: they go to ethers as a Uint8Array,
// which it uses as is (a string password would be NFKC-normalised first). Secrets travel
// through stdin and files, never argv. Exit status 3 means ethers rejected the password;
// any other failure is status 1.
"use strict";

const fs = require("node:fs");
const { Wallet, encryptKeystoreJson } = require("ethers");

const WRONG_PASSWORD = 3;

function readPassword(path) {
  return new Uint8Array(fs.readFileSync(path));
}

async function decrypt(passwordFile) {
  const keystore = fs.readFileSync(0, "utf8");
  let wallet;
  try {
    wallet = await Wallet.fromEncryptedJson(keystore, readPassword(passwordFile));
  } catch (e) {
    if (e.code === "INVALID_ARGUMENT" && e.argument === "password") {
      console.error(`ethers: wrong password (${e.shortMessage})`);
      process.exitCode = WRONG_PASSWORD;
      return;
    }
    throw e;
  }
  const privateKey = wallet.privateKey.replace(/^0x/, "");
  console.log(JSON.stringify({ private_key: privateKey, address: wallet.address }));
}

async function encrypt(passwordFile, scryptN) {
  const wallet = new Wallet(fs.readFileSync(0, "utf8").trim());
  const keystore = await encryptKeystoreJson(wallet, readPassword(passwordFile), {
    scrypt: { N: Number(scryptN) },
  });
  console.log(keystore);
}

async function main([command, ...args]) {
  if (command === "decrypt" && args.length === 1) {
    await decrypt(args[0]);
  } else if (command === "encrypt" && args.length === 2) {
    await encrypt(args[0], args[1]);
  } else {
    console.error("usage: ethers_keystore.cjs decrypt PASSWORD_FILE | encrypt PASSWORD_FILE SCRYPT_N");
    process.exitCode = 1;
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
