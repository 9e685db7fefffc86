#!/usr/bin/env bash
# The deployment pipeline of one consortium member, as code: provisions the Azure side
# (ops/azure/azuredeploy.json: Key Vault, storage account and lease container, the
# validator VMs' managed identity, the role assignments of the README's "Azure RBAC"
# table), then runs `orchestrator init --publish` against it as the pipeline's service
# principal: the identities' keys into the vault, their lease records and networkinfo.json
# into the container.
#
# Usage:
#   ops/azure/deploy.sh [--dry-run] --resource-group RG --vault NAME --storage-account NAME
#       --pipeline-principal-id OBJECT_ID [--location REGION] [--container NAME]
#       [--identity-name NAME] [--on-call-group-id OBJECT_ID] [--orchestrator PATH]
#       -- ORCHESTRATOR_INIT_ARGS...
#   ops/azure/deploy.sh [--dry-run] --local-secrets SPEC --local-leases SPEC
#       [--orchestrator PATH] -- ORCHESTRATOR_INIT_ARGS...
#
# The arguments after `--` go to `orchestrator init` as they are: at least --member,
# --validators, --admin and --out, and --config FILE whose [azure] table holds the service
# principal's credential (credential = "client-secret", tenant_id, client_id,
# client_secret_file; README "Running on Azure"). The script adds --secrets, --leases and
# --publish. `az` must be signed in as that same service principal
# (`az login --service-principal`), which needs Owner or User Access Administrator on the
# resource group to create the role assignments; nothing running later keeps those rights.
#
#   --dry-run          print every `az` call and the orchestrator call, run none
#   --location REGION  also create the resource group there (`az group create`)
#   --local-secrets SPEC, --local-leases SPEC
#                      no Azure: run the orchestrator step alone against these stores
#                      (the storage emulator and a Key Vault stand-in, say)
#   --orchestrator PATH  the orchestrator binary [default: $ORCHESTRATOR, else orchestrator]
#
# Idempotent: the template deploys in incremental mode under one deployment name, and
# `orchestrator init` keeps the identities that exist and creates only what is missing, so
# a second run changes nothing. A new role assignment can take minutes to reach Key Vault
# and Storage: in Azure mode a failed orchestrator step is tried again, up to 5 times,
# 30 s apart (not for a usage error, exit 64).
#
# Prints the specs for leased.toml and ops/cloud-init/validator.yaml at the end.
set -euo pipefail

readonly DEPLOYMENT_NAME='leased-member'
readonly ORCHESTRATOR_ATTEMPTS=5
readonly ORCHESTRATOR_RETRY_SECS=30
readonly EX_USAGE=64

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="$here/azuredeploy.json"

dry_run=0
resource_group=''
vault=''
storage_account=''
pipeline_principal_id=''
location=''
container='leases'
identity_name='leased-validators'
on_call_group_id=''
local_secrets=''
local_leases=''
orchestrator="${ORCHESTRATOR:-orchestrator}"
init_args=()

say() { printf 'deploy: %s\n' "$*" >&2; }
usage_error() {
    printf 'deploy: %s (see ops/azure/deploy.sh --help)\n' "$*" >&2
    exit "$EX_USAGE"
}

usage() {
    sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# Runs a command, or under --dry-run only prints it, shell-quoted, on the script's
# standard output (fd 3), which a command substitution around `run` does not capture.
run() {
    if ((dry_run)); then
        {
            printf 'dry-run:'
            printf ' %q' "$@"
            printf '\n'
        } >&3
        return 0
    fi
    "$@"
}

parse_args() {
    while (($#)); do
        case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run) dry_run=1 ;;
        --resource-group | --vault | --storage-account | --pipeline-principal-id | --location | \
            --container | --identity-name | --on-call-group-id | --local-secrets | \
            --local-leases | --orchestrator)
            (($# >= 2)) || usage_error "$1 needs a value"
            case "$1" in
            --resource-group) resource_group="$2" ;;
            --vault) vault="$2" ;;
            --storage-account) storage_account="$2" ;;
            --pipeline-principal-id) pipeline_principal_id="$2" ;;
            --location) location="$2" ;;
            --container) container="$2" ;;
            --identity-name) identity_name="$2" ;;
            --on-call-group-id) on_call_group_id="$2" ;;
            --local-secrets) local_secrets="$2" ;;
            --local-leases) local_leases="$2" ;;
            --orchestrator) orchestrator="$2" ;;
            esac
            shift
            ;;
        --)
            shift
            init_args=("$@")
            return
            ;;
        *) usage_error "unknown argument '$1'" ;;
        esac
        shift
    done
}

check_args() {
    local arg
    for arg in "${init_args[@]}"; do
        case "$arg" in
        --secrets | --secrets=* | --leases | --leases=*)
            usage_error "pass no $arg after --: the script sets the stores"
            ;;
        esac
    done
    if [[ -n "$local_secrets" || -n "$local_leases" ]]; then
        [[ -n "$local_secrets" && -n "$local_leases" ]] ||
            usage_error "--local-secrets and --local-leases go together"
        [[ -z "$resource_group$vault$storage_account$pipeline_principal_id$location$on_call_group_id" ]] ||
            usage_error "local mode (--local-secrets, --local-leases) takes no Azure settings"
        return
    fi
    local missing=()
    [[ -n "$resource_group" ]] || missing+=(--resource-group)
    [[ -n "$vault" ]] || missing+=(--vault)
    [[ -n "$storage_account" ]] || missing+=(--storage-account)
    [[ -n "$pipeline_principal_id" ]] || missing+=(--pipeline-principal-id)
    ((${#missing[@]} == 0)) || usage_error "missing ${missing[*]} (or --local-secrets and --local-leases)"
    [[ -f "$template" ]] || usage_error "no template at $template"
}

# Deploys the template; sets secrets_spec, leases_spec and identity_client_id.
deploy_azure() {
    run az account show --query id --output tsv >&2
    if [[ -n "$location" ]]; then
        run az group create --name "$resource_group" --location "$location" --output none
    fi
    local outputs
    outputs="$(run az deployment group create \
        --resource-group "$resource_group" \
        --name "$DEPLOYMENT_NAME" \
        --mode Incremental \
        --template-file "$template" \
        --parameters \
        "vaultName=$vault" \
        "storageAccountName=$storage_account" \
        "containerName=$container" \
        "identityName=$identity_name" \
        "pipelinePrincipalId=$pipeline_principal_id" \
        "onCallGroupId=$on_call_group_id" \
        --query '[properties.outputs.secretsSpec.value, properties.outputs.leasesSpec.value, properties.outputs.identityClientId.value]' \
        --output tsv)"
    if ((dry_run)); then
        # What the template's outputs would be, in Azure's public cloud.
        secrets_spec="keyvault:https://$vault.vault.azure.net"
        leases_spec="blob:https://$storage_account.blob.core.windows.net/$container"
        identity_client_id='(the identity client id the deployment outputs)'
        return
    fi
    read -r secrets_spec leases_spec identity_client_id <<<"$(tr '\n' ' ' <<<"$outputs")"
    [[ "$secrets_spec" == keyvault:* && "$leases_spec" == blob:* && -n "$identity_client_id" ]] ||
        { say "the deployment's outputs are not what the template gives: $outputs"; exit 1; }
}

init_member() {
    local attempts="$1" attempt=1 status
    local cmd=("$orchestrator" init --secrets "$secrets_spec" --leases "$leases_spec" --publish "${init_args[@]}")
    while :; do
        status=0
        run "${cmd[@]}" || status=$?
        ((status == 0)) && return 0
        if ((status == EX_USAGE || attempt >= attempts)); then
            say "orchestrator init failed (exit $status)"
            exit "$status"
        fi
        say "orchestrator init failed (exit $status), attempt $attempt of $attempts; new role assignments can take minutes to apply: trying again in ${ORCHESTRATOR_RETRY_SECS}s"
        sleep "$ORCHESTRATOR_RETRY_SECS"
        attempt=$((attempt + 1))
    done
}

main() {
    exec 3>&1
    parse_args "$@"
    check_args
    secrets_spec=''
    leases_spec=''
    identity_client_id=''
    if [[ -n "$local_secrets" ]]; then
        secrets_spec="$local_secrets"
        leases_spec="$local_leases"
        init_member 1
    else
        deploy_azure
        init_member "$ORCHESTRATOR_ATTEMPTS"
    fi
    say "done. For leased.toml ([store], [azure]) and ops/cloud-init/validator.yaml:"
    printf 'secrets = "%s"\nleases = "%s"\n' "$secrets_spec" "$leases_spec"
    if [[ -n "$identity_client_id" ]]; then
        printf 'managed_identity_client_id = "%s"\n' "$identity_client_id"
    fi
}

main "$@"
