"""Decrypts or writes a Web3 Secret Storage (v3) keystore with eth-account, so the Rust
tests can check our keystores against a tool we did not write.

Run with the interpreter of .tools/venv (see ops/install-test-deps.sh):

    python eth_account_keystore.py decrypt PASSWORD_FILE < keystore.json
        prints {"private_key": "<64 hex>", "address": "0x<EIP-55>"}
    python eth_account_keystore.py encrypt PASSWORD_FILE KDF ITERATIONS < private_key_hex
        prints the keystore JSON; KDF is scrypt (ITERATIONS is n) or pbkdf2 (ITERATIONS is c)

The password file's bytes are the password, exactly: no trailing newline is stripped and
no Unicode normalisation is applied. Secrets travel through stdin and files, never argv.
Exit status 3 means eth-account rejected the password; any other failure is status 1.
"""

import json
import sys

from eth_account import Account

WRONG_PASSWORD = 3


def read_password(path):
    with open(path, "rb") as f:
        return f.read()


def decrypt(password_file):
    keystore = sys.stdin.read()
    try:
        key = Account.decrypt(keystore, read_password(password_file))
    except ValueError as e:
        if "MAC mismatch" in str(e):
            print("eth-account: wrong password (MAC mismatch)", file=sys.stderr)
            sys.exit(WRONG_PASSWORD)
        raise
    # eth-account ignores the keystore's "address" field; derive it from the key instead.
    address = Account.from_key(key).address
    print(json.dumps({"private_key": bytes(key).hex(), "address": address}))


def encrypt(password_file, kdf, iterations):
    key_hex = sys.stdin.read().strip()
    keystore = Account.encrypt(
        key_hex, read_password(password_file), kdf=kdf, iterations=int(iterations)
    )
    print(json.dumps(keystore))


def main(argv):
    if len(argv) == 2 and argv[0] == "decrypt":
        decrypt(argv[1])
    elif len(argv) == 4 and argv[0] == "encrypt":
        encrypt(argv[1], argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
