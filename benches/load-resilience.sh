#!/usr/bin/env bash
# Cost of the resilience features: the same wrk load through one proxy to
# two services in front of the same backend, in one run:
#
#   plain     nothing configured: no health checks, no outlier detection,
#             no retry policy, no timeouts, no rate limits (the circuit
#             breaker's defaults are always there)
#   guarded   everything on: active health checks running (every second),
#             outlier detection, circuit breaker limits, a retry policy with
#             a budget and a per-try timeout, request timeouts, a service
#             rate limit and a per-caller rule rate limit far above the load
#
# The two are measured alternately, ROUNDS times, so that drift on a shared
# machine hits both; the table shows each round and the averages, and the
# cost of the features relative to plain.
#
#   benches/load-resilience.sh
#   ROUNDS=3 DURATION=20s CONNECTIONS=64 benches/load-resilience.sh
#
# Everything else (building, tools, ports, cleanup, wrk settings) is
# benches/load.sh's; see there.
set -euo pipefail

# shellcheck source=load.sh
source "$(dirname "${BASH_SOURCE[0]}")/load.sh"

ROUNDS="${ROUNDS:-2}"
PLAIN_HOST="plain.${NETWORK}.trellis.internal"
GUARDED_HOST="guarded.${NETWORK}.trellis.internal"

# A rate far above anything wrk reaches here (the most the model accepts).
HUGE_RATE='{"requestsPerSecond":10000000,"burst":10000000}'

configure_both() {
	local port="${BACKEND_ADDR##*:}"
	put service-networks "$NETWORK" "{\"name\":\"$NETWORK\"}"
	put target-groups plain "{\"name\":\"plain\",\"port\":$port,\"healthCheck\":{\"enabled\":false},\"targets\":[{\"address\":\"127.0.0.1\"}]}"
	put target-groups guarded "{\"name\":\"guarded\",\"port\":$port,
		\"healthCheck\":{\"path\":\"/\",\"fast\":{\"intervalMs\":1000,\"timeoutMs\":500},\"healthyThreshold\":2,\"unhealthyThreshold\":2},
		\"outlierDetection\":{\"consecutive5xx\":5,\"consecutiveGatewayErrors\":5,\"consecutiveConnectFailures\":3},
		\"circuitBreaker\":{\"maxConnections\":100000,\"maxPendingRequests\":100000,\"maxRequests\":100000,\"maxRetries\":1000},
		\"connection\":{\"connectTimeoutMs\":1000},
		\"targets\":[{\"address\":\"127.0.0.1\"}]}"
	# The same rule shape in both, so routing costs the same.
	local match='"match":{"path":{"type":"prefix","value":"/"}}'
	put services plain "{\"name\":\"plain\",\"listeners\":[{\"name\":\"http\",
		\"defaultAction\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"plain\"}]}},
		\"rules\":[{\"name\":\"all\",\"priority\":1,$match,\"action\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"plain\"}]}}}]}]}"
	put services guarded "{\"name\":\"guarded\",\"rateLimit\":$HUGE_RATE,\"listeners\":[{\"name\":\"http\",
		\"defaultAction\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"guarded\"}]}},
		\"timeoutMs\":5000,
		\"retryPolicy\":{\"maxAttempts\":3,\"retryOn\":[\"connect-failure\",\"reset\",\"gateway-error\"],\"perTryTimeoutMs\":2000,\"budgetPercent\":20,\"minRetriesPerSecond\":10},
		\"rules\":[{\"name\":\"all\",\"priority\":1,$match,\"action\":{\"forward\":{\"targetGroups\":[{\"targetGroup\":\"guarded\"}]}},
			\"timeoutMs\":5000,\"rateLimit\":{\"requestsPerSecond\":10000000,\"burst\":10000000,\"key\":\"caller\"}}]}]}"
	local svc
	for svc in plain guarded; do
		put service-associations "$svc-$NETWORK" "{\"name\":\"$svc-$NETWORK\",\"serviceNetwork\":\"$NETWORK\",\"service\":\"$svc\"}"
	done
	put proxy-associations "$PROXY_NAME" "{\"name\":\"$PROXY_NAME\",\"serviceNetwork\":\"$NETWORK\",\"proxy\":\"$PROXY_NAME\"}"
}

serves() {
	[[ "$(curl -sS -H "Host: $1" "http://$PROXY_ADDR/")" == ok ]]
}

# The guarded target is checked and healthy (the REST API aggregates the
# proxy's reports).
guarded_target_healthy() {
	curl -fsS -H "Authorization: Bearer $TOKEN" "$API/v1/target-groups/guarded/targets" | tr -d ' \n' | grep -q '"state":"HEALTHY"'
}

avg() { awk '{ s += $1; n++ } END { if (n) printf "%.3f", s / n; else print "n/a" }'; }
cost() { awk -v g="$1" -v p="$2" 'BEGIN { if (p > 0) printf "%+.1f%%", (g / p - 1) * 100; else print "n/a" }'; }

report_both() {
	echo
	echo "wrk: $CONNECTIONS connections, $THREADS threads, $DURATION per run, keep-alive, $ROUNDS rounds"
	printf '%-22s %12s %10s %10s\n' "" "requests/s" "p50 ms" "p99 ms"
	local r k
	for r in $(seq 1 "$ROUNDS"); do
		for k in plain guarded; do
			local rps="RPS_$k$r" p50="P50_$k$r" p99="P99_$k$r"
			printf '%-22s %12s %10s %10s\n' "$k (round $r)" "${!rps}" "${!p50}" "${!p99}"
		done
	done
	declare -A AVG
	for k in plain guarded; do
		for m in RPS P50 P99; do
			AVG[$m$k]=$(for r in $(seq 1 "$ROUNDS"); do v="${m}_$k$r"; echo "${!v}"; done | avg)
		done
		printf '%-22s %12s %10s %10s\n' "$k (average)" "${AVG[RPS$k]}" "${AVG[P50$k]}" "${AVG[P99$k]}"
	done
	printf '%-22s %12s %10s %10s\n' "guarded vs plain" "$(cost "${AVG[RPSguarded]}" "${AVG[RPSplain]}")" \
		"$(cost "${AVG[P50guarded]}" "${AVG[P50plain]}")" "$(cost "${AVG[P99guarded]}" "${AVG[P99plain]}")"
}

main_both() {
	install_tools
	build
	start_backend
	log "backend on $BACKEND_ADDR"
	start_control
	log "trellis-control on $API_ADDR"
	configure_both
	start_proxy
	log "trellis-proxy $PROXY_NAME, outbound listener on $PROXY_ADDR"
	wait_for "proxy $PROXY_NAME to be in sync" proxy_in_sync
	wait_for "the proxy to answer for $PLAIN_HOST" serves "$PLAIN_HOST"
	wait_for "the proxy to answer for $GUARDED_HOST" serves "$GUARDED_HOST"
	wait_for "the guarded target to be checked and HEALTHY" guarded_target_healthy
	alive "$PROXY_PID" proxy
	local r
	for r in $(seq 1 "$ROUNDS"); do
		HOST="$PLAIN_HOST" run_wrk "plain$r" "$PROXY_ADDR"
		HOST="$GUARDED_HOST" run_wrk "guarded$r" "$PROXY_ADDR"
	done
	alive "$PROXY_PID" proxy
	report_both
}

main_both "$@"
