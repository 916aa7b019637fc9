#!/usr/bin/env bash
# Load harness: the same wrk load, first straight at a backend, then through
# a Trellis proxy's outbound listener, and a table of the two.
#
#   benches/load.sh                       # defaults below
#   CONNECTIONS=128 DURATION=30s benches/load.sh
#   BUILD=0 BIN=target/debug benches/load.sh   # binaries already built
#
# It builds the release binaries, installs wrk (and curl) with apt-get when
# missing, starts trellis-bench-backend, trellis-control and trellis-proxy
# on free loopback ports, configures one service through the REST API,
# waits until the proxy runs that configuration, measures, and stops
# everything it started on exit (also on Ctrl-C or an error).
#
# Numbers depend on the machine and on what else runs on it: compare the
# ratios of runs on the same machine, not absolute numbers across machines.
# Both the load generator and the servers share the same cores; on a small
# machine wrk's own CPU use is part of what you measure.
set -euo pipefail

CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
NETWORK="${NETWORK:-net}"
SERVICE="${SERVICE:-bench}"
PROXY_NAME="${PROXY_NAME:-bench-proxy}"
HOST="${SERVICE}.${NETWORK}.trellis.internal"
# Bounds for waiting on things to come up; generous on purpose.
READY_TIMEOUT_S="${READY_TIMEOUT_S:-60}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# BUILD=0 skips the cargo build and uses the binaries already in BIN.
BIN="${BIN:-$TARGET_DIR/release}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/trellis-load.XXXXXX")"
PIDS=()

log() { printf '%s load.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ "${KEEP_LOGS:-0}" == 1 ]]; then
		log "logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port on 127.0.0.1 where nothing listens right now (connect refused),
# below the ephemeral range (32768+) so outgoing connections don't take it.
free_port() {
	local p _
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found on 127.0.0.1"
}

# wait_for DESCRIPTION COMMAND...: run COMMAND every 100 ms until it succeeds,
# at most READY_TIMEOUT_S seconds.
wait_for() {
	local what="$1" deadline=$((SECONDS + READY_TIMEOUT_S))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${READY_TIMEOUT_S}s waiting for $what (logs: $WORK)"
		sleep 0.1
	done
}

alive() {
	kill -0 "$1" 2>/dev/null || die "$2 exited early; its log:
$(tail -n 30 "$WORK/$2.log" 2>/dev/null)"
}

install_tools() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v curl >/dev/null || missing+=(curl)
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]} with apt-get"
	local sudo=()
	[[ "$(id -u)" == 0 ]] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build() {
	if [[ "${BUILD:-1}" == 0 ]]; then
		log "BUILD=0: using the binaries in $BIN"
	else
		log "building release binaries (a clean build takes several minutes)"
		(cd "$ROOT" && cargo build --release -p trellis-benches -p trellis-control -p trellis-proxy --bins)
	fi
	local b
	for b in trellis-bench-backend trellis-control trellis-proxy; do
		[[ -x "$BIN/$b" ]] || die "$BIN/$b was not built"
	done
}

# put COLLECTION NAME JSON: upsert one resource through the REST API.
put() {
	local url="$API/v1/$1/$2" code
	code=$(curl -sS -o "$WORK/put.out" -w '%{http_code}' -X PUT \
		-H "Authorization: Bearer $TOKEN" \
		-H 'content-type: application/json' --data "$3" "$url") ||
		die "PUT $url failed"
	[[ "$code" == 200 || "$code" == 201 ]] ||
		die "PUT $url answered $code: $(cat "$WORK/put.out")"
}

proxy_in_sync() {
	curl -fsS -H "Authorization: Bearer $TOKEN" "$API/v1/proxies/$PROXY_NAME" | tr -d ' \n' | grep -q '"inSync":true'
}

proxy_serves() {
	[[ "$(curl -sS -H "Host: $HOST" "http://$PROXY_ADDR/")" == ok ]]
}

start_backend() {
	BACKEND_ADDR="127.0.0.1:$(free_port)"
	"$BIN/trellis-bench-backend" --listen "$BACKEND_ADDR" >"$WORK/backend.log" 2>&1 &
	PIDS+=($!)
	BACKEND_PID=$!
	wait_for "the backend on $BACKEND_ADDR" curl -fsS "http://$BACKEND_ADDR/"
	alive "$BACKEND_PID" backend
}

start_control() {
	API_ADDR="127.0.0.1:$(free_port)"
	API="http://$API_ADDR"
	RUST_LOG="${RUST_LOG:-warn}" "$BIN/trellis-control" \
		--listen "$API_ADDR" --data-dir "$WORK/control" >"$WORK/control.log" 2>&1 &
	PIDS+=($!)
	CONTROL_PID=$!
	wait_for "trellis-control on $API_ADDR" curl -fsS "$API/healthz"
	alive "$CONTROL_PID" control
	# The admin token (made in the data dir on first start) creates the
	# default account and an API token for it.
	local admin
	admin=$(cat "$WORK/control/admin-token")
	curl -sS -o /dev/null -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
		--data '{"id":"000000000000","name":"default"}' "$API/v1/accounts"
	TOKEN=$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
		--data '{"account":"000000000000","description":"load bench"}' "$API/v1/tokens" |
		sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
	[[ -n "$TOKEN" ]] || die "could not make an API token"
}

# new_join_token: a join token (1 h, unlimited uses) for the proxies.
new_join_token() {
	curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
		--data '{"ttlSeconds":3600,"maxUses":null}' "$API/v1/join-tokens" |
		sed -n 's/.*"token":"\([^"]*\)".*/\1/p'
}

start_proxy() {
	PROXY_ADDR="127.0.0.1:$(free_port)"
	local admin="127.0.0.1:$(free_port)" token
	token="$(new_join_token)"
	[[ -n "$token" ]] || die "no join token from $API"
	# Flags as in proxy/src/bin/trellis-proxy.rs; no inbound listener, the
	# backend is reached directly. The join token goes in the environment,
	# not on the command line.
	TRELLIS_JOIN_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$BIN/trellis-proxy" \
		--name "$PROXY_NAME" \
		--control-url "$API" \
		--outbound-listen "$PROXY_ADDR" \
		--admin-listen "$admin" \
		--data-dir "$WORK/proxy" \
		>"$WORK/proxy.log" 2>&1 &
	PIDS+=($!)
	PROXY_PID=$!
	sleep 0.2
	alive "$PROXY_PID" proxy
}

configure() {
	local port="${BACKEND_ADDR##*:}"
	put service-networks "$NETWORK" "{\"name\":\"$NETWORK\"}"
	# No active health checks: they would add requests to the backend and
	# make the start depend on check intervals.
	put target-groups "$SERVICE" "{\"name\":\"$SERVICE\",\"port\":$port,\"healthCheck\":{\"enabled\":false},\"targets\":[{\"address\":\"127.0.0.1\"}]}"
	put services "$SERVICE" "{\"name\":\"$SERVICE\",\"listeners\":[{\"name\":\"http\",\"defaultAction\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"$SERVICE\",\"weight\":1}]}}}]}"
	put service-associations "$SERVICE-$NETWORK" "{\"name\":\"$SERVICE-$NETWORK\",\"serviceNetwork\":\"$NETWORK\",\"service\":\"$SERVICE\"}"
	put proxy-associations "$PROXY_NAME" "{\"name\":\"$PROXY_NAME\",\"serviceNetwork\":\"$NETWORK\",\"proxy\":\"$PROXY_NAME\"}"
}

# A latency from wrk ("812.00us", "1.23ms", "2.01s") in milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000
		else if (v ~ /ms$/) n += 0
		else if (v ~ /m$/) n *= 60000
		else if (v ~ /s$/) n *= 1000
		printf "%.3f", n
	}'
}

# in_background COMMAND...: run COMMAND as a child that cleanup knows about
# and wait for it. Bash runs traps only between foreground commands, but
# `wait` returns at once on a signal, so Ctrl-C or a TERM to this script
# stops a long wrk run at once.
in_background() {
	"$@" &
	PIDS+=($!)
	wait $!
}

# run_wrk LABEL ADDR: the measured run; sets RPS_<LABEL>, P50_<LABEL>, P99_<LABEL>.
run_wrk() {
	local label="$1" addr="$2" out="$WORK/wrk-$1.txt"
	log "warm-up $label ($WARMUP)"
	in_background wrk -c "$CONNECTIONS" -t "$THREADS" -d "$WARMUP" -H "Host: $HOST" "http://$addr/" >/dev/null
	log "measuring $label: wrk -c $CONNECTIONS -t $THREADS -d $DURATION --latency -H 'Host: $HOST' http://$addr/"
	in_background wrk -c "$CONNECTIONS" -t "$THREADS" -d "$DURATION" --latency -H "Host: $HOST" "http://$addr/" >"$out"
	cat "$out" >&2
	if grep -q 'Non-2xx or 3xx responses' "$out"; then
		log "warning: $label had non-2xx answers: $(grep 'Non-2xx' "$out")"
	fi
	if grep -q 'Socket errors' "$out"; then
		log "warning: $label had socket errors: $(grep 'Socket errors' "$out")"
	fi
	printf -v "RPS_$label" '%s' "$(awk '/^Requests\/sec:/ {print $2}' "$out")"
	printf -v "P50_$label" '%s' "$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
	printf -v "P99_$label" '%s' "$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

report() {
	echo
	echo "wrk: $CONNECTIONS connections, $THREADS threads, $DURATION, keep-alive, Host: $HOST"
	printf '%-14s %12s %10s %10s\n' "" "requests/s" "p50 ms" "p99 ms"
	printf '%-14s %12s %10s %10s\n' direct "$RPS_direct" "$P50_direct" "$P99_direct"
	printf '%-14s %12s %10s %10s\n' "via proxy" "$RPS_proxy" "$P50_proxy" "$P99_proxy"
	printf '%-14s %12s %10s %10s\n' "proxy/direct" "$(ratio "$RPS_proxy" "$RPS_direct")" \
		"$(ratio "$P50_proxy" "$P50_direct")" "$(ratio "$P99_proxy" "$P99_direct")"
}

main() {
	install_tools
	build
	start_backend
	log "backend on $BACKEND_ADDR"
	start_control
	log "trellis-control on $API_ADDR"
	configure
	start_proxy
	log "trellis-proxy $PROXY_NAME, outbound listener on $PROXY_ADDR"
	wait_for "proxy $PROXY_NAME to be in sync" proxy_in_sync
	wait_for "the proxy to answer for $HOST" proxy_serves
	alive "$PROXY_PID" proxy
	run_wrk direct "$BACKEND_ADDR"
	run_wrk proxy "$PROXY_ADDR"
	report
}

# Run when executed; when sourced (benches/load-resilience.sh does), only
# define the settings and functions above.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	main "$@"
fi
