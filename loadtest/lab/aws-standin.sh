#!/usr/bin/env bash
# The lab's stand-in for the AWS CLI inside a bootstrapped node's chroot (the
# host's CLI is not under /usr). It knows the one call the bootstrap makes,
# the read of the fleet's peer key from SSM Parameter Store, and answers it
# from the lab's key (the SecureString), which the lab copies to
# /srv/vipfleet/peer-key. Anything else fails loudly.
set -euo pipefail

readonly PARAMETER=/vipfleet/peer-key
readonly KEY_FILE=/srv/vipfleet/peer-key

if [[ "${1:-} ${2:-}" != "ssm get-parameter" ]]; then
  echo "aws (lab stand-in): only 'ssm get-parameter' is known here, not: $*" >&2
  exit 2
fi
shift 2
name=""
while (($#)); do
  case "$1" in
    --name)
      name="${2:-}"
      shift 2
      ;;
    *) shift ;;
  esac
done
if [[ "$name" != "$PARAMETER" ]]; then
  echo "An error occurred (ParameterNotFound) when calling the GetParameter operation: $name" >&2
  exit 254
fi
cat "$KEY_FILE"
