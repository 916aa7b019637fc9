#!/usr/bin/env bash
# Cost of observability: the same wrk load through five proxies of the
# same build to the same backend, in one run:
#
#   off        no access log, no tracing (no OTLP endpoint: the proxy makes
#              no span and parses no trace header)
#   on         an access-log subscription on the service, written to a file
#              (rotated by size, the defaults), and tracing at 100 %
#              (`parentbased_always_on`, and wrk sends no trace context, so
#              every request is a sampled root: a server span and a client
#              span each) exported over OTLP/gRPC to a real collector on
#              loopback, `trellis-otlp-sink` (tests/src/bin/otlp_sink.rs,
#              which counts the spans it receives)
#   blackhole  the same, but the OTLP endpoint refuses connections: what an
#              unreachable collector costs
#   log        the access log alone (a proxy without tracing)
#   trace      tracing alone, to the collector (a service without a log)
#
# Each configuration has its own proxy (tracing is per process) and its own
# service (the access log is per service); the services are alike and
# forward to the same target group. The configurations are measured in
# turn, ROUNDS times, so that drift on a shared machine hits them all; the
# table shows each round, the averages and the cost relative to off.
# Then, per configuration: requests the proxy counted, access-log lines
# written, dropped and found in the files, spans received by the
# collector, spans the proxy exported, failed to export and dropped (its
# export queue full), and the proxy's resident memory (VmRSS at the end,
# VmHWM its peak).
#
#   benches/load-observability.sh
#   ROUNDS=5 DURATION=20s CONNECTIONS=64 benches/load-observability.sh
#   OTEL_BSP_MAX_QUEUE_SIZE=65536 benches/load-observability.sh   # batching, as documented
#
# Everything else (building, tools, ports, cleanup, wrk settings) is
# benches/load.sh's; see there.
set -euo pipefail

# shellcheck source=load.sh
source "$(dirname "${BASH_SOURCE[0]}")/load.sh"

ROUNDS="${ROUNDS:-3}"
CONFIGS=(off on blackhole log trace)
declare -A SVC=([off]=quiet [on]=logged [blackhole]=logged-blackhole [log]=logged-only [trace]=traced)

logged() { [[ "$1" == on || "$1" == blackhole || "$1" == log ]]; }
traced() { [[ "$1" == on || "$1" == blackhole || "$1" == trace ]]; }

svc_host() { echo "${SVC[$1]}.${NETWORK}.trellis.internal"; }
log_file() { echo "$WORK/logs/${SVC[$1]}.log"; }

build_all() {
	if [[ "${BUILD:-1}" == 0 ]]; then
		log "BUILD=0: using the binaries in $BIN"
	else
		log "building release binaries (a clean build takes several minutes)"
		(cd "$ROOT" && cargo build --release -p trellis-benches -p trellis-control -p trellis-proxy -p trellis-tests --bins)
	fi
	local b
	for b in trellis-bench-backend trellis-control trellis-proxy trellis-otlp-sink; do
		[[ -x "$BIN/$b" ]] || die "$BIN/$b was not built"
	done
}

sink_up() { grep -q '^listening on' "$WORK/sink.log"; }

# The collector's span count, from its latest line ("spans N exports M").
sink_spans() { awk '$1 == "spans" { n = $2 } END { print n + 0 }' "$WORK/sink.log"; }

start_sink() {
	SINK_ADDR="127.0.0.1:$(free_port)"
	"$BIN/trellis-otlp-sink" --listen "$SINK_ADDR" >"$WORK/sink.log" 2>&1 &
	PIDS+=($!)
	SINK_PID=$!
	wait_for "the OTLP sink on $SINK_ADDR" sink_up
	alive "$SINK_PID" sink
}

# start_named_proxy CONFIG [FLAGS...]: proxy "bench-CONFIG" with FLAGS;
# sets PROXY_ADDR_<config>, ADMIN_<config> and PID_<config>.
start_named_proxy() {
	local cfg="$1" addr admin pid token
	shift
	addr="127.0.0.1:$(free_port)"
	admin="127.0.0.1:$(free_port)"
	token="$(new_join_token)"
	[[ -n "$token" ]] || die "no join token from $API"
	TRELLIS_JOIN_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$BIN/trellis-proxy" \
		--name "bench-$cfg" \
		--control-url "$API" \
		--outbound-listen "$addr" \
		--admin-listen "$admin" \
		--data-dir "$WORK/proxy-$cfg" \
		"$@" \
		>"$WORK/proxy-$cfg.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	printf -v "PROXY_ADDR_$cfg" '%s' "$addr"
	printf -v "ADMIN_$cfg" '%s' "$admin"
	printf -v "PID_$cfg" '%s' "$pid"
	sleep 0.2
	alive "$pid" "proxy-$cfg"
}

configure_obs() {
	local port="${BACKEND_ADDR##*:}" cfg svc
	put service-networks "$NETWORK" "{\"name\":\"$NETWORK\"}"
	put target-groups obs "{\"name\":\"obs\",\"port\":$port,\"healthCheck\":{\"enabled\":false},\"targets\":[{\"address\":\"127.0.0.1\"}]}"
	for cfg in "${CONFIGS[@]}"; do
		svc="${SVC[$cfg]}"
		put services "$svc" "{\"name\":\"$svc\",\"listeners\":[{\"name\":\"http\",\"defaultAction\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"obs\"}]}}}]}"
		put service-associations "$svc-$NETWORK" "{\"name\":\"$svc-$NETWORK\",\"serviceNetwork\":\"$NETWORK\",\"service\":\"$svc\"}"
		put proxy-associations "bench-$cfg" "{\"name\":\"bench-$cfg\",\"serviceNetwork\":\"$NETWORK\",\"proxy\":\"bench-$cfg\"}"
		if logged "$cfg"; then
			put access-log-subscriptions "$svc" "{\"name\":\"$svc\",\"resource\":{\"service\":\"$svc\"},\"destination\":{\"file\":{\"path\":\"$(log_file "$cfg")\",\"maxFiles\":100}}}"
		fi
	done
}

in_sync() { curl -fsS -H "Authorization: Bearer $TOKEN" "$API/v1/proxies/bench-$1" | tr -d ' \n' | grep -q '"inSync":true'; }

serves_cfg() {
	local addr="PROXY_ADDR_$1"
	[[ "$(curl -sS -H "Host: $(svc_host "$1")" "http://${!addr}/")" == ok ]]
}

admin_get() {
	local admin="ADMIN_$1"
	curl -fsS "http://${!admin}$2"
}

# The proxy's own count of requests to the configuration's service.
proxy_requests() {
	admin_get "$1" /metrics | awk -v svc="${SVC[$1]}" '
		/^trellis_requests_total\{/ && index($0, "service=\"" svc "\"") { n += $NF }
		END { printf "%d", n }'
}

# A field of the access-log totals in the admin /stats ("written", "dropped").
log_stat() {
	# Without the per-destination list, the totals are the only such keys.
	admin_get "$1" /stats | tr -d ' \n' | sed 's/"destinations":\[[^]]*\]//' |
		sed -n "s/.*\"$2\":\\([0-9]*\\).*/\\1/p" | head -n1
}

# Lines in the configuration's log file and its rotated files.
file_lines() {
	local f n=0 c
	for f in "$(log_file "$1")" "$(log_file "$1")".*; do
		[[ -f "$f" ]] || continue
		c=$(wc -l <"$f")
		n=$((n + c))
	done
	echo "$n"
}

# VmRSS or VmHWM of a process, in MiB.
mem_mib() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# A field of the proxy's span counters in the admin /stats
# ("spansExported", "spansFailed", "spansDropped", "failedExports").
trace_stat() {
	admin_get "$1" /stats | tr -d ' \n' | sed -n "s/.*\"$2\":\\([0-9]*\\).*/\\1/p" | head -n1
}

avg() { awk '{ s += $1; n++ } END { if (n) printf "%.3f", s / n; else print "n/a" }'; }
cost() { awk -v g="$1" -v p="$2" 'BEGIN { if (p > 0) printf "%+.1f%%", (g / p - 1) * 100; else print "n/a" }'; }

# Wait until the access log of CONFIG stops growing (its writer thread has
# written what was queued), at most 10 s.
log_settled() {
	local before after i
	before=$(log_stat "$1" written)
	for i in $(seq 1 100); do
		sleep 0.1
		after=$(log_stat "$1" written)
		[[ "$after" == "$before" ]] && return 0
		before="$after"
	done
}

report_obs() {
	echo
	echo "wrk: $CONNECTIONS connections, $THREADS threads, $DURATION per run, keep-alive, $ROUNDS rounds"
	printf '%-22s %12s %10s %10s\n' "" "requests/s" "p50 ms" "p99 ms"
	local r k m v
	for r in $(seq 1 "$ROUNDS"); do
		for k in "${CONFIGS[@]}"; do
			local rps="RPS_$k$r" p50="P50_$k$r" p99="P99_$k$r"
			printf '%-22s %12s %10s %10s\n' "$k (round $r)" "${!rps}" "${!p50}" "${!p99}"
		done
	done
	declare -A AVG
	for k in "${CONFIGS[@]}"; do
		for m in RPS P50 P99; do
			AVG[$m$k]=$(for r in $(seq 1 "$ROUNDS"); do v="${m}_$k$r"; echo "${!v}"; done | avg)
		done
		printf '%-22s %12s %10s %10s\n' "$k (average)" "${AVG[RPS$k]}" "${AVG[P50$k]}" "${AVG[P99$k]}"
	done
	for k in "${CONFIGS[@]:1}"; do
		printf '%-22s %12s %10s %10s\n' "$k vs off" "$(cost "${AVG[RPS$k]}" "${AVG[RPSoff]}")" \
			"$(cost "${AVG[P50$k]}" "${AVG[P50off]}")" "$(cost "${AVG[P99$k]}" "${AVG[P99off]}")"
	done
	echo
	printf '%-10s %9s %9s %9s %8s %10s %10s %10s %8s %8s\n' "" requests "log lines" written "log drop" \
		"exported" "failed" "dropped" "RSS MiB" "peak MiB"
	local to_sink=0
	for k in "${CONFIGS[@]}"; do
		local pid="PID_$k" lines="-" written="-" ldrop="-" exported="-" failed="-" sdrop="-"
		if logged "$k"; then
			log_settled "$k"
			lines=$(file_lines "$k")
			written=$(log_stat "$k" written)
			ldrop=$(log_stat "$k" dropped)
		fi
		if traced "$k"; then
			exported=$(trace_stat "$k" spansExported)
			failed=$(trace_stat "$k" spansFailed)
			sdrop=$(trace_stat "$k" spansDropped)
			[[ "$k" == blackhole ]] || to_sink=$((to_sink + exported))
		fi
		printf '%-10s %9s %9s %9s %8s %10s %10s %10s %8s %8s\n' "$k" "$(proxy_requests "$k")" "$lines" "$written" "$ldrop" \
			"$exported" "$failed" "$sdrop" "$(mem_mib "${!pid}" VmRSS)" "$(mem_mib "${!pid}" VmHWM)"
	done
	echo
	echo "requests: counted by the proxy (trellis_requests_total of its service: warm-ups, runs and readiness probes)"
	echo "log lines: in the access-log files; written, log drop: the proxy's own counts (admin /stats)"
	echo "exported, failed, dropped: the proxy's spans (admin /stats; two per request, server and client;"
	echo "  dropped: its export queue was full)"
	echo "the collector received $SPANS_SINK spans; the 'on' and 'trace' proxies say they exported $to_sink"
}

main_obs() {
	install_tools
	build_all
	start_backend
	log "backend on $BACKEND_ADDR"
	start_sink
	log "OTLP sink on $SINK_ADDR"
	start_control
	log "trellis-control on $API_ADDR"
	mkdir -p "$WORK/logs"
	configure_obs
	local nowhere
	nowhere="127.0.0.1:$(free_port)"
	start_named_proxy off
	start_named_proxy log
	start_named_proxy on --trace-endpoint "http://$SINK_ADDR" --trace-protocol grpc
	start_named_proxy trace --trace-endpoint "http://$SINK_ADDR" --trace-protocol grpc
	start_named_proxy blackhole --trace-endpoint "http://$nowhere" --trace-protocol grpc
	local k
	for k in "${CONFIGS[@]}"; do
		local addr="PROXY_ADDR_$k" pid="PID_$k"
		log "trellis-proxy bench-$k, outbound listener on ${!addr}"
		wait_for "proxy bench-$k to be in sync" in_sync "$k"
		wait_for "proxy bench-$k to answer for $(svc_host "$k")" serves_cfg "$k"
		alive "${!pid}" "proxy-$k"
	done
	local r
	for r in $(seq 1 "$ROUNDS"); do
		for k in "${CONFIGS[@]}"; do
			local addr="PROXY_ADDR_$k"
			HOST="$(svc_host "$k")" run_wrk "$k$r" "${!addr}"
		done
	done
	for k in "${CONFIGS[@]}"; do
		local pid="PID_$k"
		alive "${!pid}" "proxy-$k"
	done
	# The batch exporter sends every 5 s: wait until the count stays the
	# same for longer than that before reading it.
	local before=-1 i
	for i in $(seq 1 10); do
		SPANS_SINK=$(sink_spans)
		[[ "$SPANS_SINK" == "$before" ]] && break
		before="$SPANS_SINK"
		sleep 6
	done
	report_obs
}

main_obs "$@"
