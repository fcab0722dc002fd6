#!/usr/bin/env bash
# Runs every infra check: cfn-lint, the user data sync check, shellcheck, the
# alert rules (promtool check and unit tests) and the pytest suite (template
# rules, bootstrap runs, unit and haproxy checks, the release script's fast
# mode and installs from its artifacts).
# Prints "infra: N passed, M failed[, K skipped]" last; exits non-zero on any failure.
#
# Tools: cfn-lint and pytest from $VIPFLEET_VENV (default /var/tmp/vipfleet-venv
# when it exists), shellcheck and promtool from PATH (tests/setup/packages.sh
# installs them). A missing tool is a failure, not a skip, except promtool
# outside CI: it is skipped loudly there, and fails with CI set. The release
# tests also need cargo and dpkg (skipped loudly without them, failed under
# CI); they install cargo-deb on first use.
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
if [[ -z "${VIPFLEET_VENV:-}" && -x /var/tmp/vipfleet-venv/bin/python ]]; then
  VIPFLEET_VENV=/var/tmp/vipfleet-venv
fi
PYTHON="${VIPFLEET_VENV:+$VIPFLEET_VENV/bin/}python"
[[ -n "${VIPFLEET_VENV:-}" ]] || PYTHON=python3
CFN_LINT="${VIPFLEET_VENV:+$VIPFLEET_VENV/bin/}cfn-lint"

passed=0
failed=0
skipped=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() {
  local name="$1"
  shift
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1))
    echo "--- ok: $name"
  else
    failed=$((failed + 1))
    echo "--- FAILED: $name"
  fi
}

# cfn-lint prints nothing and exits 0 only when there is no error and no warning.
check "cfn-lint infra/cloudformation/vipfleet.yaml" \
  "$CFN_LINT" --format parseable infra/cloudformation/vipfleet.yaml
check "user data matches infra files" \
  "$PYTHON" infra/cloudformation/sync_userdata.py --check

while IFS= read -r script; do
  check "shellcheck $script" shellcheck --severity=style "$script"
done < <(find infra loadtest/lab -name '*.sh' -type f | sort)

rules=infra/monitoring/alerts.yml
rule_tests=infra/monitoring/alerts_test.yml
if command -v promtool >/dev/null 2>&1; then
  check "promtool check rules $rules" promtool check rules "$rules"
  check "promtool test rules $rule_tests" promtool test rules "$rule_tests"
elif [[ -n "${CI:-}" ]]; then
  echo "=== promtool: not installed (Debian package prometheus; tests/setup/packages.sh installs it)"
  echo "--- FAILED: promtool check rules and test rules"
  failed=$((failed + 2))
else
  echo "*** SKIPPED promtool check rules and test rules: promtool is not installed (Debian package prometheus; tests/setup/packages.sh installs it) ***"
  skipped=$((skipped + 2))
fi

echo "=== pytest infra/tests"
"$PYTHON" -m pytest infra/tests -q -rs -p no:cacheprovider --junitxml="$work/junit.xml"
pytest_exit=$?
if [[ -f "$work/junit.xml" ]]; then
  read -r t f e s < <("$PYTHON" - "$work/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
total = lambda key: sum(int(s.get(key, 0)) for s in suites)
print(total("tests"), total("failures"), total("errors"), total("skipped"))
EOF
  )
  passed=$((passed + t - f - e - s))
  failed=$((failed + f + e))
  skipped=$((skipped + s))
fi
if [[ "$pytest_exit" != 0 && ! -f "$work/junit.xml" ]] || [[ "$pytest_exit" != 0 && "$pytest_exit" != 1 ]]; then
  # pytest itself broke (not installed, collection error, no tests): count it.
  echo "--- FAILED: pytest exited $pytest_exit"
  failed=$((failed + 1))
fi

if [[ "$skipped" == 0 ]]; then
  echo "infra: $passed passed, $failed failed"
else
  echo "infra: $passed passed, $failed failed, $skipped skipped"
fi
[[ "$failed" == 0 ]]
