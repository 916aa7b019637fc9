#!/usr/bin/env bash
# Cost of mTLS between proxies: the same wrk load, in one run, on three
# paths to the same backend:
#
#   direct   wrk -> backend
#   plain    wrk -> caller proxy (outbound) -> backend
#   mtls     wrk -> caller proxy (outbound) -> front proxy (inbound, mTLS
#            TLS 1.3, mesh certificates from the control plane) -> backend
#
# Both proxies join the mesh with a join token. The table shows
# requests/s, p50 and p99 of each path, their ratios, and the handshake
# rate on the front proxy's inbound listener during the mtls run (pooled
# connections: it should stay near 0/s once the pool is warm).
#
#   benches/load-mtls.sh
#   CONNECTIONS=128 DURATION=30s benches/load-mtls.sh
#
# Everything else (building, tools, ports, cleanup, wrk settings) is
# benches/load.sh's; see there.
set -euo pipefail

# shellcheck source=load.sh
source "$(dirname "${BASH_SOURCE[0]}")/load.sh"

FRONT_NAME="${FRONT_NAME:-bench-front}"
PLAIN_HOST="plain.${NETWORK}.trellis.internal"
MTLS_HOST="mtls.${NETWORK}.trellis.internal"

configure_paths() {
	local port="${BACKEND_ADDR##*:}" svc
	put service-networks "$NETWORK" "{\"name\":\"$NETWORK\"}"
	put target-groups plain "{\"name\":\"plain\",\"port\":$port,\"healthCheck\":{\"enabled\":false},\"targets\":[{\"address\":\"127.0.0.1\"}]}"
	put target-groups mtls "{\"name\":\"mtls\",\"port\":$port,\"healthCheck\":{\"enabled\":false},\"targets\":[{\"address\":\"127.0.0.1\",\"proxy\":\"$FRONT_NAME\"}]}"
	for svc in plain mtls; do
		put services "$svc" "{\"name\":\"$svc\",\"listeners\":[{\"name\":\"http\",\"defaultAction\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"$svc\",\"weight\":1}]}}}]}"
		put service-associations "$svc-$NETWORK" "{\"name\":\"$svc-$NETWORK\",\"serviceNetwork\":\"$NETWORK\",\"service\":\"$svc\"}"
	done
	put proxy-associations "$PROXY_NAME" "{\"name\":\"$PROXY_NAME\",\"serviceNetwork\":\"$NETWORK\",\"proxy\":\"$PROXY_NAME\"}"
}

start_front() {
	FRONT_INBOUND="127.0.0.1:$(free_port)"
	FRONT_ADMIN="127.0.0.1:$(free_port)"
	local token
	token="$(new_join_token)"
	[[ -n "$token" ]] || die "no join token from $API"
	TRELLIS_JOIN_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$BIN/trellis-proxy" \
		--name "$FRONT_NAME" \
		--control-url "$API" \
		--outbound-listen "127.0.0.1:$(free_port)" \
		--inbound-listen "$FRONT_INBOUND" \
		--admin-listen "$FRONT_ADMIN" \
		--data-dir "$WORK/front" \
		>"$WORK/front.log" 2>&1 &
	PIDS+=($!)
	FRONT_PID=$!
	sleep 0.2
	alive "$FRONT_PID" front
}

in_sync() {
	curl -fsS "$API/v1/proxies/$1" | tr -d ' \n' | grep -q '"inSync":true'
}

serves() {
	[[ "$(curl -sS -H "Host: $1" "http://$PROXY_ADDR/")" == ok ]]
}

handshakes() {
	curl -fsS "http://$FRONT_ADMIN/metrics" | awk '$1 == "trellis_tls_handshakes_total" {print $2}'
}

seconds_of() {
	awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; else if (d ~ /h$/) n *= 3600; print n }'
}

report_paths() {
	echo
	echo "wrk: $CONNECTIONS connections, $THREADS threads, $DURATION, keep-alive"
	printf '%-16s %12s %10s %10s\n' "" "requests/s" "p50 ms" "p99 ms"
	printf '%-16s %12s %10s %10s\n' direct "$RPS_direct" "$P50_direct" "$P99_direct"
	printf '%-16s %12s %10s %10s\n' plain "$RPS_plain" "$P50_plain" "$P99_plain"
	printf '%-16s %12s %10s %10s\n' mtls "$RPS_mtls" "$P50_mtls" "$P99_mtls"
	printf '%-16s %12s %10s %10s\n' "plain/direct" "$(ratio "$RPS_plain" "$RPS_direct")" \
		"$(ratio "$P50_plain" "$P50_direct")" "$(ratio "$P99_plain" "$P99_direct")"
	printf '%-16s %12s %10s %10s\n' "mtls/plain" "$(ratio "$RPS_mtls" "$RPS_plain")" \
		"$(ratio "$P50_mtls" "$P50_plain")" "$(ratio "$P99_mtls" "$P99_plain")"
	local secs
	secs=$(awk -v a="$(seconds_of "$WARMUP")" -v b="$(seconds_of "$DURATION")" 'BEGIN { print a + b }')
	echo "mTLS handshakes on the front's inbound during the mtls run (${secs}s): $HANDSHAKES ($(awk -v h="$HANDSHAKES" -v s="$secs" 'BEGIN { printf "%.2f", h / s }')/s)"
}

main_paths() {
	install_tools
	build
	start_backend
	log "backend on $BACKEND_ADDR"
	start_control
	log "trellis-control on $API_ADDR"
	configure_paths
	start_front
	log "front proxy $FRONT_NAME, inbound listener on $FRONT_INBOUND"
	start_proxy
	log "caller proxy $PROXY_NAME, outbound listener on $PROXY_ADDR"
	wait_for "proxy $FRONT_NAME to be in sync" in_sync "$FRONT_NAME"
	wait_for "proxy $PROXY_NAME to be in sync" in_sync "$PROXY_NAME"
	wait_for "the caller to answer for $PLAIN_HOST" serves "$PLAIN_HOST"
	wait_for "the caller to answer for $MTLS_HOST through the front" serves "$MTLS_HOST"
	alive "$PROXY_PID" proxy
	alive "$FRONT_PID" front
	run_wrk direct "$BACKEND_ADDR"
	HOST="$PLAIN_HOST" run_wrk plain "$PROXY_ADDR"
	# A first warm-up fills the caller's pool to the front; the handshakes
	# counted are those of run_wrk's own warm-up and measured run.
	log "filling the pool to the front ($WARMUP)"
	in_background wrk -c "$CONNECTIONS" -t "$THREADS" -d "$WARMUP" -H "Host: $MTLS_HOST" "http://$PROXY_ADDR/" >/dev/null
	local before after
	before="$(handshakes)"
	HOST="$MTLS_HOST" run_wrk mtls "$PROXY_ADDR"
	after="$(handshakes)"
	HANDSHAKES=$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')
	alive "$PROXY_PID" proxy
	alive "$FRONT_PID" front
	report_paths
}

main_paths "$@"
