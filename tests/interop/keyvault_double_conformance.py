"""Drives the Key Vault double (tests/src/kv_double.rs) with the official Python client,
azure-keyvault-secrets, and checks each outcome against what the real service gives.

    python keyvault_double_conformance.py VAULT_URL CA_FILE PHASE

PHASE is "main" (the whole secret life cycle) or "retry" (one set, run after the Rust test
armed a 429 with Retry-After: the client must wait and retry on its own). Prints one line
per check; on the first mismatch prints FAIL and exits 1. Values are test data only.
"""

import re
import sys
import time

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

# The tenant and resource the double names in its challenge (kv_double::TENANT_ID,
# kv_double::CHALLENGE_RESOURCE).
TENANT_ID = "11111111-2222-3333-4444-555555555555"
EXPECTED_SCOPE = "https://vault.azure.net/.default"
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
RETENTION_SECONDS = 90 * 86400


class Mismatch(Exception):
    pass


def check(label, condition, detail=""):
    if not condition:
        raise Mismatch(f"{label}{': ' + detail if detail else ''}")
    print(f"ok: {label}", flush=True)


def expect_error(label, error_type, call):
    """Runs call, which must raise error_type; returns the error."""
    try:
        call()
    except error_type as e:
        print(f"ok: {label} ({type(e).__name__} {e.status_code})", flush=True)
        return e
    except Exception as e:  # noqa: BLE001 - any other outcome is the mismatch to report
        raise Mismatch(f"{label}: expected {error_type.__name__}, got {type(e).__name__}: {e}")
    raise Mismatch(f"{label}: expected {error_type.__name__}, but the call succeeded")


class FakeCredential:
    """Hands out a fixed token and remembers what it was asked for, so the script can check
    that the client took scope and tenant from the double's challenge."""

    def __init__(self):
        self.requests = []

    def get_token(self, *scopes, **kwargs):
        self.requests.append((scopes, kwargs.get("tenant_id")))
        return AccessToken("fake-token-for-the-double", int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None):
        self.requests.append((scopes, (options or {}).get("tenant_id")))
        return AccessTokenInfo("fake-token-for-the-double", int(time.time()) + 3600)


def client_for(url, ca_file, credential):
    # verify_challenge_resource=False: the client normally insists that the challenge's
    # resource (https://vault.azure.net) is a parent domain of the vault's host, which
    # protects real vaults from being sent tokens for another service. The double is on
    # 127.0.0.1, so the check cannot pass; everything else about the challenge is exercised.
    return SecretClient(
        vault_url=url,
        credential=credential,
        connection_verify=ca_file,
        verify_challenge_resource=False,
    )


def check_secret(label, secret, url, name, value):
    check(f"{label}: value", secret.value == value, repr(secret.value))
    check(f"{label}: name", secret.name == name, secret.name)
    check(f"{label}: version is 32 hex digits", bool(VERSION_RE.match(secret.properties.version or "")))
    check(
        f"{label}: id is vault/secrets/name/version",
        secret.id == f"{url}/secrets/{name}/{secret.properties.version}",
        secret.id,
    )
    check(f"{label}: vault_url", secret.properties.vault_url == url, secret.properties.vault_url)


def phase_main(url, ca_file):
    credential = FakeCredential()
    client = client_for(url, ca_file, credential)
    name = "validator-key-1"

    first = client.set_secret(
        name, "v1-value", content_type="text/plain", tags={"role": "validator", "node": "a"}
    )
    check(
        "challenge: the credential was asked for the challenge's scope and tenant",
        credential.requests and credential.requests[0] == ((EXPECTED_SCOPE,), TENANT_ID),
        repr(credential.requests),
    )
    check_secret("set", first, url, name, "v1-value")
    props = first.properties
    check("set: content type", props.content_type == "text/plain", props.content_type)
    check("set: tags", props.tags == {"role": "validator", "node": "a"}, repr(props.tags))
    check("set: enabled", props.enabled is True)
    check("set: recovery level", props.recovery_level == "Recoverable+Purgeable", props.recovery_level)
    check("set: recoverable days", props.recoverable_days == 90, repr(props.recoverable_days))
    check("set: created and updated are datetimes", props.created_on is not None and props.updated_on is not None)
    v1 = props.version

    got = client.get_secret(name)
    check_secret("get latest", got, url, name, "v1-value")
    check("get latest: same version", got.properties.version == v1)
    check("get latest: tags", got.properties.tags == {"role": "validator", "node": "a"})

    second = client.set_secret(name, "v2-value")
    v2 = second.properties.version
    check("second set: new version", v2 != v1 and bool(VERSION_RE.match(v2)), v2)
    check("second set: no content type carried over", second.properties.content_type is None)
    check("get latest after second set", client.get_secret(name).value == "v2-value")
    check("get first version by id", client.get_secret(name, v1).value == "v1-value")
    check("get second version by id", client.get_secret(name, v2).value == "v2-value")
    v3 = client.set_secret(name, "v3-value").properties.version

    others = ["validator-key-2", "other-secret-3"]
    for other in others:
        client.set_secret(other, f"{other}-value")

    listed = list(client.list_properties_of_secrets())
    names = sorted(p.name for p in listed)
    check("list secrets across pages", names == sorted([name] + others), repr(names))
    check("list secrets: ids carry no version", all(p.version is None for p in listed))
    mine = next(p for p in listed if p.name == name)
    check("list secrets: attributes of the latest", mine.enabled is True and mine.created_on is not None)

    versions = list(client.list_properties_of_secret_versions(name))
    check(
        "list versions across pages",
        sorted(p.version for p in versions) == sorted([v1, v2, v3]),
        repr([p.version for p in versions]),
    )
    check(
        "list versions: content type of the first",
        next(p for p in versions if p.version == v1).content_type == "text/plain",
    )
    check("versions of an unknown secret are empty", list(client.list_properties_of_secret_versions("nope")) == [])

    disabled = client.update_secret_properties(name, v1, enabled=False)
    check("disable first version", disabled.enabled is False and disabled.version == v1)
    latest = client.update_secret_properties(
        name, content_type="application/json", tags={"role": "validator", "rotated": "yes"}
    )
    check("update latest (no version): targets the latest", latest.version == v3, latest.version)
    check("update latest: content type", latest.content_type == "application/json")
    check("update latest: tags replaced", latest.tags == {"role": "validator", "rotated": "yes"}, repr(latest.tags))
    got = client.get_secret(name)
    check("get after update", got.value == "v3-value" and got.properties.content_type == "application/json")

    e = expect_error("get of a disabled version", HttpResponseError, lambda: client.get_secret(name, v1))
    check("disabled: status 403", e.status_code == 403, repr(e.status_code))
    check("disabled: code Forbidden", e.error is not None and e.error.code == "Forbidden", repr(e.error))
    check("disabled: inner code SecretDisabled", e.error.innererror.get("code") == "SecretDisabled")

    e = expect_error("get of a missing secret", ResourceNotFoundError, lambda: client.get_secret("no-such-secret"))
    check("missing: code SecretNotFound", e.error is not None and e.error.code == "SecretNotFound")

    poller = client.begin_delete_secret(name)
    poller.wait()
    deleted = poller.result()
    check("delete: recovery id", deleted.recovery_id == f"{url}/deletedsecrets/{name}", deleted.recovery_id)
    check("delete: dates", deleted.deleted_date is not None and deleted.scheduled_purge_date is not None)
    check(
        "delete: purge scheduled after the retention",
        (deleted.scheduled_purge_date - deleted.deleted_date).total_seconds() == RETENTION_SECONDS,
    )
    check("delete: latest version", deleted.properties.version == v3, deleted.properties.version)

    got_deleted = client.get_deleted_secret(name)
    check("get deleted secret", got_deleted.name == name and got_deleted.recovery_id == deleted.recovery_id)
    deleted_names = [d.name for d in client.list_deleted_secrets()]
    check("list deleted secrets", deleted_names == [name], repr(deleted_names))
    expect_error("get of a deleted secret", ResourceNotFoundError, lambda: client.get_secret(name))

    e = expect_error("set on a deleted name", ResourceExistsError, lambda: client.set_secret(name, "again"))
    check("deleted name: status 409", e.status_code == 409)
    check("deleted name: code Conflict", e.error is not None and e.error.code == "Conflict")
    check(
        "deleted name: inner code ObjectIsDeletedButRecoverable",
        e.error.innererror.get("code") == "ObjectIsDeletedButRecoverable",
    )

    recover = client.begin_recover_deleted_secret(name)
    recover.wait()
    check("recover: latest version back", recover.result().version == v3)
    check("get after recover", client.get_secret(name).value == "v3-value")
    expect_error("deleted secret gone after recover", ResourceNotFoundError, lambda: client.get_deleted_secret(name))

    client.begin_delete_secret(name).wait()
    client.purge_deleted_secret(name)
    print("ok: purge", flush=True)
    expect_error("deleted secret gone after purge", ResourceNotFoundError, lambda: client.get_deleted_secret(name))
    fresh = client.set_secret(name, "fresh-value")
    check("name reusable after purge", fresh.value == "fresh-value")
    fresh_versions = [p.version for p in client.list_properties_of_secret_versions(name)]
    check("purge removed the old versions", fresh_versions == [fresh.properties.version], repr(fresh_versions))


def phase_retry(url, ca_file):
    client = client_for(url, ca_file, FakeCredential())
    started = time.monotonic()
    secret = client.set_secret("retry-probe", "after-429")
    elapsed = time.monotonic() - started
    check("set succeeds after an injected 429", secret.value == "after-429")
    check("the client waited for Retry-After", elapsed >= 0.9, f"{elapsed:.2f} s")


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("main", "retry"):
        print(__doc__, file=sys.stderr)
        return 64
    url, ca_file, phase = sys.argv[1:]
    try:
        (phase_main if phase == "main" else phase_retry)(url, ca_file)
    except Mismatch as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"all {phase} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
