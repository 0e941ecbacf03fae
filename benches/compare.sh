#!/usr/bin/env bash
# benches/compare.sh: tapir side by side with slirp4netns (and pasta when installed).
#
#   sudo benches/compare.sh          # or as a plain user with unprivileged user namespaces
#   ROUNDS=3 DURATION=5 MTUS="65520 1500" IMPLS="tapir slirp4netns pasta" benches/compare.sh
#   SUITES=pasta-mode IMPLS="tapir pasta" PASTA=/path/to/pasta benches/compare.sh
#
# Every run (one implementation, one MTU, one round) gets a fresh private "host" network
# namespace (`unshare -nm` as root, `unshare -rnm` otherwise) with only `lo` up; the servers
# listen on its 127.0.0.1, the guest is a nested network namespace, and the helper maps the
# guest's 10.0.2.2 to that loopback. Nothing is sent outside namespaces this script creates.
# Tapir runs also time a port forward through a second tapir started with --splice-forwards.
# The pasta-mode suite (SUITES) runs tapir as `pasta` beside pasta, both with podman 5.4's
# command line, in a private host namespace with a template veth and a "remote" namespace.
# See benches/README.md for the workloads, the exact commands and how to read the output.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
BENCH_DIR=$(dirname "$SELF")
REPO=$(dirname "$BENCH_DIR")
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

export ROUNDS=${ROUNDS:-3}
export DURATION=${DURATION:-5}
export MTUS=${MTUS:-"65520 1500"}
export IMPLS=${IMPLS:-"tapir slirp4netns pasta"}
TAPIR_DEFAULT=$REPO/target/release/tapir
export TAPIR=${TAPIR:-$TAPIR_DEFAULT}
export SLIRP4NETNS=${SLIRP4NETNS:-slirp4netns}
export PASTA=${PASTA:-pasta}
export READY_SAMPLES=${READY_SAMPLES:-9} # launches timed per run for launch -> ready (median)
export LATENCY_TOOL=${LATENCY_TOOL:-auto} # auto (sockperf if installed) | sockperf | python3
export FWD_SPLICE=${FWD_SPLICE:-1} # 1: tapir runs also measure a --splice-forwards port forward
export IDLE_CONNS=${IDLE_CONNS:-1000} # idle guest connections held open during a second -R run (0: skip)
export IDLE_SECS=${IDLE_SECS:-10}   # seconds of no traffic over which the helper's wake-ups are counted
export IDLE_CONNS_SECS=${IDLE_CONNS_SECS:-30} # the same with IDLE_CONNS idle connections open
export SUITES=${SUITES:-"main pasta-mode"} # main: slirp4netns command line; pasta-mode: podman's pasta one

# Ports, all inside the private host namespace (or the guest's namespace for P_GUEST).
P_G2H=5201       # host iperf3 server, guest -> host
P_H2G=5202       # host iperf3 server, host -> guest (client in the guest with -R)
P_H2G_IDLE=5203  # host iperf3 server, host -> guest with IDLE_CONNS idle connections open
P_IDLE=7000      # host server holding the idle connections
P_FWD=15201      # host port forwarded to the guest
P_FWD_SPLICE=15202 # host port forwarded by the second tapir (--splice-forwards)
P_GUEST=5201     # guest iperf3 server behind the forward
P_LAT=11111      # host sockperf (or pingpong.py) server
P_HTTP=18080     # host nginx
GATEWAY=10.0.2.2 # guest's view of the host's 127.0.0.1

# Pasta mode (suite pasta-mode): the template interface v0 in the private host namespace, its
# peer v1 in a "remote" namespace, and podman 5.4's addresses.
PM_HOST_ADDR=192.0.2.10   # v0, the template: the guest copies it
PM_REMOTE_ADDR=192.0.2.1  # v1 in the remote namespace, the template's gateway
PM_MAP_GUEST=169.254.1.2  # --map-guest-addr: the guest's way to the host's own address
PM_DNS_FWD=169.254.1.1    # --dns-forward (not measured)
P_PM_FWD=5301   # -t 127.0.0.1/5301-5301:5301-5301, guest iperf3 server on the same port
P_PM_G2H=5302   # host iperf3 server on PM_HOST_ADDR, reached as PM_MAP_GUEST
P_PM_G2R=5303   # remote iperf3 server, guest -> remote
P_PM_R2G=5304   # remote iperf3 server, remote -> guest (-R)

CLIENT_TIMEOUT=$((DURATION + 20))
RUN_TIMEOUT=$((7 * (DURATION + 25) + 150))
PM_RUN_TIMEOUT=$((4 * (DURATION + 25) + 60))

die() { echo "compare.sh: $*" >&2; exit 1; }
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }

usage() {
    sed -n '2,15p' "$SELF" | sed 's/^# \{0,1\}//'
    exit 0
}

# ---------------------------------------------------------------------------------------------
# One run, executed inside the private host namespace: __run IMPL MTU ROUND OUTDIR
# ---------------------------------------------------------------------------------------------

W=""        # scratch dir (API socket, fifo, nginx config, guest netns bind mount)
OUT=""      # per-run results dir
MF=""       # per-run metrics, one JSON object per line
GUEST=""    # pid of the guest's `sleep`, whose netns is the guest
REMOTE=""   # pasta mode: pid of the remote namespace's `sleep`
HELPER=""   # pid of the stack process (tapir / slirp4netns / pasta)
PIDS=()     # servers to stop
HELPERS=()  # every helper started in this run (cleanup stops them all)
GUESTS=()   # every guest started in this run

cpu_ticks() { # utime+stime of the helper, in clock ticks (empty if it is gone)
    local st
    if helper_alive && read -r -a st <"/proc/$HELPER/stat"; then echo $((st[13] + st[14])); fi
}
tree_ticks() { # utime+stime of the helper and its live children (tapir's socket broker)
    local st p sum
    helper_alive || return 0
    read -r -a st 2>/dev/null <"/proc/$HELPER/stat" || return 0
    sum=$((st[13] + st[14]))
    for p in $(ps -o pid= --ppid "$HELPER" 2>/dev/null || true); do
        if read -r -a st 2>/dev/null <"/proc/$p/stat"; then sum=$((sum + st[13] + st[14])); fi
    done
    echo "$sum"
}
wakeups() { # times the helper went to sleep and was woken (voluntary context switches)
    local k v
    helper_alive || return 0
    while read -r k v; do
        if [[ $k == voluntary_ctxt_switches: ]]; then echo "$v"; fi
    done <"/proc/$HELPER/status"
}
# Wake-ups per second of the helper over SECS seconds without traffic, recorded as METRIC.
record_wakeups() { # METRIC SECS WHAT
    local w0 w1
    w0=$(wakeups)
    sleep "$2"
    w1=$(wakeups)
    if [[ -n $w0 && -n $w1 ]]; then
        record "$1" "$(awk -v w="$((w1 - w0))" -v d="$2" 'BEGIN { printf "%.2f", w / d }')" ok procfs \
            "voluntary_ctxt_switches of pid $HELPER over $2 s, $3"
    else
        record "$1" "" error procfs "voluntary_ctxt_switches of pid $HELPER" "helper not running"
    fi
}
# Helper CPU during an iperf3 workload, as % of a core and per Gbit/s of that workload.
record_cpu() { # PREFIX BPS_METRIC TICKS_BEFORE TICKS_AFTER
    local pct bps
    [[ -n $3 && -n $4 ]] || return 0
    pct=$(awk -v t="$(($4 - $3))" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
        'BEGIN { printf "%.1f", 100 * t / hz / d }')
    record "${1}_cpu_pct" "$pct" ok procfs \
        "utime+stime of pid $HELPER and its children during $2, over ${DURATION} s"
    bps=$(jq -r --arg m "$2" 'select(.metric == $m and .status == "ok") | .value' "$MF" | tail -1)
    if [[ -n $bps ]] && awk -v b="$bps" 'BEGIN { exit !(b > 0) }'; then
        record "${1}_cpu_per_gbps" "$(awk -v p="$pct" -v b="$bps" 'BEGIN { printf "%.2f", p / (b / 1e9) }')" \
            ok procfs "${1}_cpu_pct / ($2 in Gbit/s), same run"
    fi
}
record() { # METRIC VALUE STATUS TOOL COMMAND [NOTE]
    jq -cn --arg m "$1" --arg v "$2" --arg s "$3" --arg t "$4" --arg c "$5" --arg n "${6:-}" \
        '{metric: $m, value: (if $v == "" then null else ($v | tonumber) end), status: $s,
          tool: $t, cmd: $c} + (if $n == "" then {} else {note: $n} end)' >>"$MF"
}

start_bg() { # LOGNAME CMD...  (host namespace)
    local log=$1; shift
    "$@" >>"$OUT/$log.log" 2>&1 &
    PIDS+=($!)
}

stop_bg() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    NO_SERVER=""
}

NO_SERVER=""  # set when the server of the current workload did not start listening

wait_listen() { # PORT [guest|remote]   (the guest is $GUEST, the remote $REMOTE)
    local i out
    for ((i = 0; i < 100; i++)); do
        if [[ ${2:-} == guest ]]; then
            out=$(nsenter -t "$GUEST" -n -- ss -Hltn "sport = :$1" 2>/dev/null || true)
        elif [[ ${2:-} == remote ]]; then
            out=$(nsenter -t "$REMOTE" -n -- ss -Hltn "sport = :$1" 2>/dev/null || true)
        else
            out=$(ss -Hltn "sport = :$1" 2>/dev/null || true)
        fi
        [[ -n $out ]] && return 0
        sleep 0.05
    done
    NO_SERVER="server on port $1 did not listen within 5 s"
    return 1
}

helper_alive() { [[ -n $HELPER ]] && kill -0 "$HELPER" 2>/dev/null; }

# VmHWM after each workload (raw results only), to see which workload sets the peak.
hwm_mark() { # WORKLOAD
    helper_alive && record "hwm_after_$1_kib" "$(proc_kib VmHWM)" ok procfs "VmHWM after $1"
    return 0
}

proc_kib() { # FIELD -> kB value from /proc/HELPER/status
    awk -v f="$1:" '$1 == f { print $2 }' "/proc/$HELPER/status" 2>/dev/null || true
}

stop_helper() { # PID: SIGTERM, SIGKILL after 2 s
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup_run() {
    set +e
    for p in "${HELPERS[@]}"; do stop_helper "$p"; done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${GUESTS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [[ -n $W ]]; then
        umount "$W/guest.netns" "$W/guest-splice.netns" 2>/dev/null
        rm -rf "$W"
    fi
}

# Runs CMD in the guest (or the host) with a timeout. Sets CLIENT_RC; output to $OUT/NAME.out.
client() { # NAME guest|host CMD...
    local name=$1 where=$2; shift 2
    CLIENT_RC=0
    if [[ -n $NO_SERVER ]]; then
        echo "not run: $NO_SERVER" >"$OUT/$name.err"
        : >"$OUT/$name.out"
        CLIENT_RC=253
        return
    fi
    if [[ $where == guest ]]; then
        timeout -k 3 "$CLIENT_TIMEOUT" nsenter -t "$GUEST" -n -- "$@" \
            >"$OUT/$name.out" 2>"$OUT/$name.err" || CLIENT_RC=$?
    else
        timeout -k 3 "$CLIENT_TIMEOUT" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || CLIENT_RC=$?
    fi
}
stalled() { [[ $CLIENT_RC == 124 || $CLIENT_RC == 137 ]]; }
failure() { echo "exit status $CLIENT_RC: $(tail -c 300 "$OUT/$1.err" | tr '\n' ' ')"; }

ping_pong() { # NAME guest|host ADDRESS: one ping-pong run ($tool) to ADDRESS:$P_LAT; sets
    # cmd, avg, p50 and exchanges (empty when the client gave no figures)
    local name=$1 where=$2 addr=$3
    if [[ $tool == sockperf ]]; then
        cmd="$where\$ sockperf ping-pong --tcp -i $addr -p $P_LAT -t $DURATION --full-rtt"
        client "$name" "$where" sockperf ping-pong --tcp -i "$addr" -p "$P_LAT" -t "$DURATION" --full-rtt
        sed -i 's/\x1b\[[0-9;]*m//g' "$OUT/$name.out" "$OUT/$name.err" || true
        avg=$(grep -ho 'avg-rtt=[0-9.]*' "$OUT/$name.out" "$OUT/$name.err" | head -1 | cut -d= -f2 || true)
        exchanges=$(grep -ho 'ReceivedMessages=[0-9]*' "$OUT/$name.out" "$OUT/$name.err" | head -1 | cut -d= -f2 || true)
        p50=$(grep -h 'percentile 50.000' "$OUT/$name.out" "$OUT/$name.err" | head -1 | awk '{print $NF}' || true)
    else
        cmd="$where\$ python3 benches/pingpong.py client $addr $P_LAT $DURATION"
        client "$name" "$where" python3 "$BENCH_DIR/pingpong.py" client "$addr" "$P_LAT" "$DURATION"
        avg=$(grep -o 'avg_rtt_us=[0-9.]*' "$OUT/$name.out" | cut -d= -f2 || true)
        p50=$(grep -o 'p50_rtt_us=[0-9.]*' "$OUT/$name.out" | cut -d= -f2 || true)
        exchanges=$(grep -o 'count=[0-9]*' "$OUT/$name.out" | cut -d= -f2 || true)
    fi
}

measure_iperf() { # METRIC guest|host CMD...
    local metric=$1 where=$2; shift 2
    local cmd="$where\$ $*" bps err
    if ! helper_alive; then record "$metric" "" error iperf3 "$cmd" "helper not running"; return; fi
    client "$metric" "$where" "$@"
    if stalled; then
        record "$metric" 0 stall iperf3 "$cmd" "client killed after ${CLIENT_TIMEOUT}s"
        return
    fi
    bps=$(jq -r '.end.sum_received.bits_per_second // empty' "$OUT/$metric.out" 2>/dev/null || true)
    err=$(jq -r '.error // empty' "$OUT/$metric.out" 2>/dev/null || true)
    if [[ -n $bps && -z $err ]]; then
        record "$metric" "$bps" ok iperf3 "$cmd"
    elif [[ $err == *"timed out"* ]]; then
        # The helper accepted nothing within --connect-timeout: a stall, not a failure.
        record "$metric" 0 stall iperf3 "$cmd" "$err"
    else
        record "$metric" "" error iperf3 "$cmd" "${err:-$(failure "$metric")}"
    fi
}

api_call() { # SOCKET JSON -> response on stdout
    if command -v python3 >/dev/null; then
        python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
print(out.decode())' "$1" "$2"
    else
        printf '%s' "$2" | timeout 5 ncat -U "$1"
    fi
}

start_helper() { # IMPL MTU -> sets HELPER, records ready_ms
    local impl=$1 mtu=$2 t0 t1 byte bin cmd i pid samples=()
    case $impl in
    tapir | slirp4netns)
        if [[ $impl == tapir ]]; then bin=$TAPIR; else bin=$SLIRP4NETNS; fi
        local argv=(--configure "--mtu=$mtu" --api-socket "$W/api.sock" --ready-fd=3)
        # TAPIR_ARGS: extra options for tapir (word-split), e.g. 100 egress rules for the
        # policy-cost row (see benches/README.md).
        # shellcheck disable=SC2206
        if [[ $impl == tapir ]]; then argv+=(${TAPIR_ARGS:-}); fi
        argv+=("$GUEST" tap0)
        cmd="host\$ $impl ${argv[*]} 3>FIFO (median of $READY_SAMPLES launches)"
        # A launch takes a few ms and varies by as much between launches: time
        # READY_SAMPLES - 1 throw-away launches into the same guest (each stopped with SIGTERM,
        # which removes its tap) before the one that serves the run, and record the median.
        for ((i = 1; i < READY_SAMPLES; i++)); do
            rm -f "$W/ready" "$W/api.sock"
            mkfifo "$W/ready"
            t0=$(now_us)
            "$bin" "${argv[@]}" 3>"$W/ready" >>"$OUT/helper-launches.log" 2>&1 &
            pid=$!
            if read -r -N1 -t 20 byte <"$W/ready" && [[ $byte == 1 ]]; then
                t1=$(now_us)
                samples+=($((t1 - t0)))
            fi
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        done
        rm -f "$W/ready" "$W/api.sock"
        mkfifo "$W/ready"
        t0=$(now_us)
        "$bin" "${argv[@]}" 3>"$W/ready" >"$OUT/helper.log" 2>&1 &
        HELPER=$!
        HELPERS+=("$HELPER")
        if read -r -N1 -t 20 byte <"$W/ready" && [[ $byte == 1 ]]; then
            t1=$(now_us)
            samples+=($((t1 - t0)))
        else
            record ready_ms "" error "ready-fd" "$cmd" "no ready byte within 20 s (see helper.log)"
            return 1
        fi
        # Median of the samples (µs), reported below as t1 - t0.
        t0=0
        t1=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        ;;
    pasta)
        # pasta refuses to start without a host interface that has a default route: give the
        # private host namespace a veth pair (both ends stay in it) and a route via an address
        # nobody owns. It changes to user nobody when it sees uid 0, so keep uid 0 (--runas).
        ip link add bext0 type veth peer name bext1
        ip link set bext1 up
        ip addr add 192.0.2.1/24 dev bext0
        ip link set bext0 up
        ip route add default via 192.0.2.2 dev bext0
        local argv=(--config-net -m "$mtu" -a 10.0.2.100 -n 24 -g "$GATEWAY" -I tap0 -4 -q
            --runas 0:0 -t "$P_FWD:$P_GUEST" -T none -u none -U none
            -P "$W/pasta.pid" --netns "$W/guest.netns")
        cmd="host\$ pasta ${argv[*]}"
        # pasta forks into the background once the namespace is configured: the foreground
        # process exiting is its ready signal.
        t0=$(now_us)
        if ! timeout 20 "$PASTA" "${argv[@]}" >"$OUT/helper.log" 2>&1; then
            record ready_ms "" error pasta "$cmd" "pasta failed (see helper.log)"
            return 1
        fi
        t1=$(now_us)
        for ((i = 0; i < 40; i++)); do [[ -s $W/pasta.pid ]] && break; sleep 0.05; done
        HELPER=$(cat "$W/pasta.pid" 2>/dev/null || true)
        [[ -n $HELPER ]] || { record ready_ms "" error pasta "$cmd" "no pid file"; return 1; }
        HELPERS+=("$HELPER")
        ;;
    esac
    record ready_ms "$(((t1 - t0) / 1000)).$(printf '%03d' $(((t1 - t0) % 1000)))" ok "ready" "$cmd"
}

start_guest() { # NETNS_FILE -> sets GUEST
    local i
    touch "$1"
    unshare --net="$1" sleep infinity &
    GUEST=$!
    GUESTS+=("$GUEST")
    for ((i = 0; i < 100; i++)); do
        [[ $(cat "/proc/$GUEST/comm" 2>/dev/null) == sleep ]] && break
        sleep 0.02
    done
}

# The spliced port forward (tapir only): a second tapir, started with --splice-forwards, on a
# second guest in the same host namespace, for this one workload; the run's own tapir is idle
# meanwhile and its metrics are not affected. HELPER and GUEST are shadowed here, so that
# measure_iperf, wait_listen and tree_ticks look at the second pair.
fwd_splice() { # MTU
    local mtu=$1 byte resp req info spliced cmd
    local HELPER="" GUEST=""
    local argv=(--configure "--mtu=$mtu" --api-socket "$W/api-splice.sock" --ready-fd=3 --splice-forwards)
    start_guest "$W/guest-splice.netns"
    cmd="host\$ tapir ${argv[*]} $GUEST tap0 3>FIFO"
    mkfifo "$W/ready-splice"
    "$TAPIR" "${argv[@]}" "$GUEST" tap0 3>"$W/ready-splice" >"$OUT/helper-splice.log" 2>&1 &
    HELPER=$!
    HELPERS+=("$HELPER")
    if ! { read -r -N1 -t 20 byte <"$W/ready-splice" && [[ $byte == 1 ]]; }; then
        record fwd_splice_bps "" error ready-fd "$cmd" "no ready byte within 20 s (see helper-splice.log)"
        return 0
    fi
    req='{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":'$P_FWD_SPLICE',"guest_port":'$P_GUEST'}}'
    resp=$(api_call "$W/api-splice.sock" "$req" 2>&1 || true)
    echo "$req -> $resp" >"$OUT/api-splice.log"
    if [[ $resp == *[Tt]imeout* || $resp == *"timed out"* ]]; then
        record fwd_splice_bps 0 stall api "add_hostfwd $req" "API did not answer: $resp"
    elif [[ $resp != *'"return"'* ]]; then
        record fwd_splice_bps "" error api "add_hostfwd $req" "API answered: $resp"
    else
        iperf_through_forward fwd_splice_bps "$P_FWD_SPLICE" iperf3-server-fwd-splice
        # Did the connections take the splice path? (It falls back to the stack silently.)
        info=$(api_call "$W/api-splice.sock" '{"execute":"get_info"}' 2>&1 || true)
        echo "get_info -> $info" >>"$OUT/api-splice.log"
        spliced=$(jq -r '.return.flows_created.tcp_spliced // empty' <<<"$info" 2>/dev/null || true)
        record fwd_splice_flows "${spliced:-}" "$([[ -n $spliced ]] && echo ok || echo error)" api \
            "get_info .return.flows_created.tcp_spliced" "TCP flows that took the splice path"
        if [[ $spliced == 0 ]]; then
            # Relabel the throughput: it went through the stack, not the splice path.
            jq -c 'if .metric == "fwd_splice_bps" and .status == "ok" then .status = "error"
                   | .note = "not spliced (flows_created.tcp_spliced = 0), measured \(.value)" | .value = null
                   else . end' "$MF" >"$MF.tmp" && mv "$MF.tmp" "$MF"
        else
            record_cpu fwd_splice fwd_splice_bps "$TICKS0" "$TICKS1"
        fi
    fi
    stop_helper "$HELPER"
    kill -KILL "$GUEST" 2>/dev/null || true
    wait "$GUEST" 2>/dev/null || true
    umount "$W/guest-splice.netns" 2>/dev/null || true
}

# The guest's iperf3 server behind a forward and a host client to host port PORT, recorded as
# METRIC; the helper's CPU ticks before and after are left in TICKS0 and TICKS1.
iperf_through_forward() { # METRIC PORT SERVER_LOGNAME
    nsenter -t "$GUEST" -n -- iperf3 -s -1 -p "$P_GUEST" >>"$OUT/$3.log" 2>&1 &
    PIDS+=($!)
    wait_listen "$P_GUEST" guest || true
    TICKS0=$(tree_ticks)
    measure_iperf "$1" host iperf3 -c 127.0.0.1 -p "$2" -t "$DURATION" -J --connect-timeout 5000
    TICKS1=$(tree_ticks)
    stop_bg
}

idle_h2g() {
    local opened=""
    start_bg idle-hold python3 "$BENCH_DIR/idleconns.py" hold 127.0.0.1 "$P_IDLE"
    wait_listen "$P_IDLE" || true
    nsenter -t "$GUEST" -n -- python3 "$BENCH_DIR/idleconns.py" open "$GATEWAY" "$P_IDLE" "$IDLE_CONNS" \
        >"$OUT/idle-open.out" 2>"$OUT/idle-open.err" &
    PIDS+=($!)
    for _ in $(seq 600); do
        opened=$(grep -o 'opened [0-9]*' "$OUT/idle-open.out" 2>/dev/null | cut -d' ' -f2 || true)
        [[ -n $opened ]] && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ $opened == "$IDLE_CONNS" ]]; then
        record idle_conns "$opened" ok python3 "guest\$ benches/idleconns.py open $GATEWAY $P_IDLE $IDLE_CONNS"
        record_wakeups idle_conns_wakeups "$IDLE_CONNS_SECS" "$IDLE_CONNS idle connections open"
        start_bg iperf3-server-h2g-idle iperf3 -s -1 -B 127.0.0.1 -p "$P_H2G_IDLE"
        wait_listen "$P_H2G_IDLE" || true
        measure_iperf h2g_idle_bps guest iperf3 -c "$GATEWAY" -p "$P_H2G_IDLE" -t "$DURATION" -R -J --connect-timeout 5000
    else
        record h2g_idle_bps "" error python3 "benches/idleconns.py open" \
            "only ${opened:-0} of $IDLE_CONNS idle connections opened: $(tail -c 200 "$OUT/idle-open.err" | tr '\n' ' ')"
    fi
    stop_bg
    hwm_mark h2g_idle
}

write_nginx_conf() {
    mkdir -p "$W/www" "$W/ngx"
    head -c 612 /dev/zero | tr '\0' x >"$W/www/index.html"
    # Single process (master_process off) and `user root`: no privilege switching and no chown
    # to an unmapped user, so it runs the same way as root and inside a user namespace (where
    # "root" is the invoking user).
    cat >"$W/nginx.conf" <<EOF
daemon off;
master_process off;
user root root;
pid $W/ngx/nginx.pid;
error_log $W/ngx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $W/ngx/cb; proxy_temp_path $W/ngx/px; fastcgi_temp_path $W/ngx/fc;
    uwsgi_temp_path $W/ngx/uw; scgi_temp_path $W/ngx/sc;
    server { listen 127.0.0.1:$P_HTTP backlog=4096; root $W/www; }
}
EOF
}

run_one() {
    local impl=$1 mtu=$2 round=$3 resp cpu0 cpu1
    OUT=$4
    MF="$OUT/metrics.jsonl"
    : >"$MF"
    trap cleanup_run EXIT
    trap 'exit 143' TERM INT HUP
    W=$(mktemp -d /tmp/tapir-bench-run.XXXXXX)
    chmod 755 "$W"
    ip link set lo up

    # The guest: a sleeping process in a new network namespace, also bind-mounted to a file
    # (pasta attaches by path; tapir and slirp4netns attach by PID).
    touch "$W/guest.netns"
    start_guest "$W/guest.netns"

    start_helper "$impl" "$mtu" || exit 0

    # Idle RSS: one second after the ready signal.
    sleep 1
    record rss_idle_kib "$(proc_kib VmRSS)" ok procfs "VmRSS of pid $HELPER, ready + 1 s"
    # Wake-ups with nothing to do (the guest's own link-up chatter, router solicitations,
    # reaches every helper alike).
    record_wakeups idle_wakeups "$IDLE_SECS" "no traffic, no connections"

    # iperf3 guest -> host through the gateway.
    start_bg iperf3-server-g2h iperf3 -s -1 -B 127.0.0.1 -p "$P_G2H"
    wait_listen "$P_G2H" || true
    TICKS0=$(tree_ticks)
    measure_iperf g2h_bps guest iperf3 -c "$GATEWAY" -p "$P_G2H" -t "$DURATION" -J --connect-timeout 5000
    TICKS1=$(tree_ticks)
    record_cpu g2h g2h_bps "$TICKS0" "$TICKS1"
    stop_bg
    hwm_mark g2h

    # iperf3 host -> guest through the gateway (client in the guest, server sends: -R).
    start_bg iperf3-server-h2g iperf3 -s -1 -B 127.0.0.1 -p "$P_H2G"
    wait_listen "$P_H2G" || true
    TICKS0=$(tree_ticks)
    measure_iperf h2g_bps guest iperf3 -c "$GATEWAY" -p "$P_H2G" -t "$DURATION" -R -J --connect-timeout 5000
    TICKS1=$(tree_ticks)
    record_cpu h2g h2g_bps "$TICKS0" "$TICKS1"
    stop_bg
    hwm_mark h2g

    # The same with IDLE_CONNS idle guest connections open (a busy container's keep-alive
    # pools): what every flow costs the helper when it has nothing to do.
    if ((IDLE_CONNS > 0)); then
        idle_h2g
    fi

    # iperf3 host -> guest through a port forward (API add_hostfwd; pasta: -t at launch).
    if [[ $impl != pasta ]]; then
        local req='{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":'$P_FWD',"guest_port":'$P_GUEST'}}'
        resp=$(api_call "$W/api.sock" "$req" 2>&1 || true)
        echo "$req -> $resp" >"$OUT/api.log"
    else
        resp='{"return":"pasta -t"}'
    fi
    if [[ $resp == *'"return"'* ]]; then
        iperf_through_forward fwd_bps "$P_FWD" iperf3-server-fwd
        record_cpu fwd fwd_bps "$TICKS0" "$TICKS1"
    elif [[ $resp == *[Tt]imeout* || $resp == *"timed out"* ]]; then
        record fwd_bps 0 stall api "add_hostfwd $req" "API did not answer: $resp"
    else
        record fwd_bps "" error api "add_hostfwd $req" "API answered: $resp"
    fi
    hwm_mark fwd

    # The same through a second tapir with --splice-forwards (tapir runs only).
    if [[ $impl == tapir && $FWD_SPLICE == 1 ]]; then
        fwd_splice "$mtu"
    fi

    # TCP request/response latency (full round trip), and what the helper spent on it.
    local avg p50 cmd tool exchanges
    cpu0=$(cpu_ticks)
    if [[ $LATENCY_TOOL == sockperf || ($LATENCY_TOOL == auto && -n $(command -v sockperf)) ]]; then
        tool=sockperf
        start_bg sockperf-server sockperf server --tcp -i 127.0.0.1 -p "$P_LAT"
    else
        tool=python3-pingpong
        start_bg pingpong-server python3 "$BENCH_DIR/pingpong.py" server 127.0.0.1 "$P_LAT"
    fi
    wait_listen "$P_LAT" || true
    ping_pong latency guest "$GATEWAY"
    cpu1=$(cpu_ticks)
    if [[ -n $cpu0 && -n $cpu1 ]]; then
        record rtt_cpu_pct "$(awk -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
            'BEGIN { printf "%.0f", 100 * t / hz / d }')" ok procfs "utime+stime of pid $HELPER during the ping-pong"
        # The same per exchange: a helper that answers sooner does more exchanges in the same
        # time, so CPU per second alone rewards slowness.
        if [[ -n $exchanges ]] && ((exchanges > 0)); then
            record rtt_cpu_us_per_exchange "$(awk -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v n="$exchanges" \
                'BEGIN { printf "%.1f", 1e6 * t / hz / n }')" ok procfs \
                "utime+stime of pid $HELPER during the ping-pong / $exchanges exchanges"
        fi
    fi
    if stalled; then
        record rtt_avg_us "" stall "$tool" "$cmd" "client killed after ${CLIENT_TIMEOUT}s"
        record rtt_p50_us "" stall "$tool" "$cmd" "client killed after ${CLIENT_TIMEOUT}s"
    elif [[ -n $avg && -n $p50 ]]; then
        record rtt_avg_us "$avg" ok "$tool" "$cmd"
        record rtt_p50_us "$p50" ok "$tool" "$cmd"
        # The floor: the same exchange between two processes on the host's loopback, no helper
        # at all, right after. Its wake-ups (two per round trip, each an IPI to a halted vCPU
        # on a VM) bound what any helper can reach; the difference is the helper's own share.
        local rtt=$avg
        ping_pong latency-floor host 127.0.0.1
        if [[ -n $avg ]]; then
            record rtt_floor_us "$avg" ok "$tool" "$cmd (client on the host's loopback, no helper)"
            record rtt_added_us "$(awk -v a="$rtt" -v f="$avg" 'BEGIN { printf "%.1f", a - f }')" ok \
                "$tool" "RTT through the helper - RTT on loopback without it"
        fi
    else
        record rtt_avg_us "" error "$tool" "$cmd" "$(failure latency)"
        record rtt_p50_us "" error "$tool" "$cmd" "$(failure latency)"
    fi
    stop_bg
    hwm_mark latency

    # Connections per second: wrk with Connection: close against nginx on host loopback.
    if command -v wrk >/dev/null && command -v nginx >/dev/null; then
        write_nginx_conf
        start_bg nginx nginx -c "$W/nginx.conf" -p "$W/ngx" -e "$W/ngx/error.log"
        wait_listen "$P_HTTP" || true
        cmd="guest\$ wrk -c 16 -t 2 -d ${DURATION}s -H 'Connection: close' http://$GATEWAY:$P_HTTP/"
        client wrk guest wrk -c 16 -t 2 -d "${DURATION}s" -H 'Connection: close' "http://$GATEWAY:$P_HTTP/"
        local rps errs
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$OUT/wrk.out")
        errs=$(grep -E 'Socket errors|Non-2xx' "$OUT/wrk.out" | tr -s ' ' | paste -sd ';' || true)
        if stalled; then
            record cps 0 stall wrk "$cmd" "client killed after ${CLIENT_TIMEOUT}s"
        elif [[ -n $rps ]]; then
            record cps "$rps" ok wrk "$cmd" "$errs"
        else
            record cps "" error wrk "$cmd" "$(failure wrk)"
        fi
        stop_bg
    else
        record cps "" skipped wrk "" "wrk or nginx not installed"
    fi
    hwm_mark wrk

    # Peak RSS and CPU time over the whole run.
    if helper_alive; then
        record rss_peak_kib "$(proc_kib VmHWM)" ok procfs "VmHWM of pid $HELPER at the end of the run"
        record rss_end_kib "$(proc_kib VmRSS)" ok procfs "VmRSS of pid $HELPER at the end of the run"
        local st
        read -r -a st <"/proc/$HELPER/stat"
        record cpu_s "$(awk -v u="${st[13]}" -v s="${st[14]}" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { printf "%.2f", (u + s) / hz }')" ok procfs "utime+stime of pid $HELPER, whole run"
    else
        record rss_peak_kib "" error procfs "VmHWM" "helper exited during the run"
    fi
}

# ---------------------------------------------------------------------------------------------
# One pasta-mode run, inside its own private host namespace: __pmrun IMPL MTU ROUND OUTDIR
# IMPL is tapir (started through a symlink named pasta) or pasta; both get the same arguments.
# ---------------------------------------------------------------------------------------------

# A guest iperf3 client to a server at ADDR:PORT that runs WHERE (host or remote), recorded as
# METRIC with the helper's CPU as PREFIX_cpu_pct and PREFIX_cpu_per_gbps.
pm_iperf_out() { # METRIC PREFIX host|remote BIND_ADDR ADDR PORT [-R]
    local metric=$1 prefix=$2 where=$3 bind=$4 addr=$5 port=$6 t0 t1
    if [[ $where == remote ]]; then
        start_bg "iperf3-server-$prefix" nsenter -t "$REMOTE" -n -- iperf3 -s -1 -B "$bind" -p "$port"
    else
        start_bg "iperf3-server-$prefix" iperf3 -s -1 -B "$bind" -p "$port"
    fi
    if [[ $where == remote ]]; then wait_listen "$port" remote || true; else wait_listen "$port" || true; fi
    t0=$(tree_ticks)
    measure_iperf "$metric" guest iperf3 -c "$addr" -p "$port" -t "$DURATION" ${7:+"$7"} -J --connect-timeout 5000
    t1=$(tree_ticks)
    stop_bg
    pm_cpu_retrans "$prefix" "$metric" "$t0" "$t1"
    hwm_mark "$prefix"
}

# record_cpu, and the sender's TCP retransmits of the iperf3 run METRIC; CPU per Gbit/s only
# from 5 clock ticks on (a helper that moved almost nothing divides noise by almost nothing).
pm_cpu_retrans() { # PREFIX METRIC TICKS_BEFORE TICKS_AFTER
    local r
    record_cpu "$@"
    if [[ -n $3 && -n $4 ]] && (($4 - $3 < 5)); then
        jq -c --arg m "${1}_cpu_per_gbps" 'if .metric == $m then .status = "skipped"
               | .note = "under 5 clock ticks of CPU: too few to divide (was \(.value))" | .value = null
               else . end' "$MF" >"$MF.tmp" && mv "$MF.tmp" "$MF"
    fi
    r=$(jq -r '.end.sum_sent.retransmits // empty' "$OUT/$2.out" 2>/dev/null || true)
    [[ -n $r ]] && record "${1}_retrans" "$r" ok iperf3 "$2: .end.sum_sent.retransmits"
    return 0
}

run_pasta_mode() {
    local impl=$1 mtu=$2 round=$3 bin t0 t1 i peer
    OUT=$4
    MF="$OUT/metrics.jsonl"
    : >"$MF"
    trap cleanup_run EXIT
    trap 'exit 143' TERM INT HUP
    W=$(mktemp -d /tmp/tapir-bench-run.XXXXXX)
    chmod 755 "$W"
    ip link set lo up

    # The template interface, as tests/pasta.rs builds it: v0 with an address and a default
    # route in the private host namespace; its peer v1 (the gateway) in a remote namespace.
    unshare -n sleep infinity &
    REMOTE=$!
    GUESTS+=("$REMOTE")
    for ((i = 0; i < 100; i++)); do
        [[ $(cat "/proc/$REMOTE/comm" 2>/dev/null) == sleep ]] && break
        sleep 0.02
    done
    ip link add v0 type veth peer name v1
    ip link set v1 netns "$REMOTE"
    ip addr add "$PM_HOST_ADDR/24" dev v0
    ip link set v0 up
    ip route add default via "$PM_REMOTE_ADDR"
    nsenter -t "$REMOTE" -n -- sh -c "ip link set lo up && ip addr add $PM_REMOTE_ADDR/24 dev v1 && ip link set v1 up"

    start_guest "$W/guest.netns"

    # podman 5.4's command line (tests/pasta.rs podman_argv, with one -t and no -u), plus -m
    # at MTUs other than pasta's default.
    local argv=(--config-net)
    [[ $mtu == 65520 ]] || argv+=(-m "$mtu")
    argv+=(-t "127.0.0.1/$P_PM_FWD-$P_PM_FWD:$P_PM_FWD-$P_PM_FWD" -u none -T none -U none
        --dns-forward "$PM_DNS_FWD" --no-map-gw --quiet --netns "$W/guest.netns")
    local map_guest=1
    if [[ $impl == pasta && $PASTA_MAP_GUEST != 1 ]]; then
        map_guest=0 # this pasta build predates --map-guest-addr
    else
        argv+=(--map-guest-addr "$PM_MAP_GUEST")
    fi
    argv+=(--pid "$W/pasta.pid")
    if [[ $impl == tapir ]]; then
        mkdir -p "$W/bin"
        ln -s "$TAPIR" "$W/bin/pasta"
        bin=$W/bin/pasta
    else
        bin=$PASTA
    fi
    local cmd="host\$ pasta ${argv[*]}"
    # Both fork into the background once the namespace is configured: the foreground process
    # exiting (status 0) is the ready signal, as podman waits for it.
    t0=$(now_us)
    if ! timeout 20 "$bin" "${argv[@]}" >"$OUT/helper.log" 2>&1; then
        record ready_ms "" error "$impl" "$cmd" "failed (see helper.log)"
        exit 0
    fi
    t1=$(now_us)
    for ((i = 0; i < 40; i++)); do [[ -s $W/pasta.pid ]] && break; sleep 0.05; done
    HELPER=$(cat "$W/pasta.pid" 2>/dev/null || true)
    [[ -n $HELPER ]] || { record ready_ms "" error "$impl" "$cmd" "no pid file"; exit 0; }
    HELPERS+=("$HELPER")
    record ready_ms "$(((t1 - t0) / 1000)).$(printf '%03d' $(((t1 - t0) % 1000)))" ok ready "$cmd"
    local gmtu
    gmtu=$(nsenter -t "$GUEST" -n -- ip -o link show dev v0 2>/dev/null | grep -o 'mtu [0-9]*' | cut -d' ' -f2 || true)
    record guest_mtu "$gmtu" "$([[ $gmtu == "$mtu" ]] && echo ok || echo error)" ip "guest\$ ip -o link show dev v0" \
        "$([[ $gmtu == "$mtu" ]] || echo "expected $mtu")"

    sleep 1
    record rss_idle_kib "$(proc_kib VmRSS)" ok procfs "VmRSS of pid $HELPER, ready + 1 s"

    # (1) host -> guest through -t, from a loopback client (both splice by default).
    nsenter -t "$GUEST" -n -- iperf3 -s -1 -J -p "$P_PM_FWD" >"$OUT/iperf3-server-fwd.json" 2>>"$OUT/iperf3-server-fwd.log" &
    PIDS+=($!)
    wait_listen "$P_PM_FWD" guest || true
    t0=$(tree_ticks)
    measure_iperf fwd_bps host iperf3 -c 127.0.0.1 -p "$P_PM_FWD" -t "$DURATION" -J --connect-timeout 5000
    t1=$(tree_ticks)
    stop_bg
    pm_cpu_retrans fwd fwd_bps "$t0" "$t1"
    # Who the guest's server saw as its client (tapir: the guest's own address when spliced,
    # the template's gateway through its stack; pasta 2023: 127.0.0.1 when spliced).
    peer=$(jq -r '.start.connected[0].remote_host // empty' "$OUT/iperf3-server-fwd.json" 2>/dev/null || true)
    record fwd_peer "" "$([[ -n $peer ]] && echo ok || echo error)" iperf3 \
        "guest iperf3 server: .start.connected[0].remote_host" "${peer:-unknown}"
    hwm_mark fwd

    # (2) guest -> host's own address, through --map-guest-addr.
    if ((map_guest)); then
        pm_iperf_out g2h_bps g2h host "$PM_HOST_ADDR" "$PM_MAP_GUEST" "$P_PM_G2H"
    else
        record g2h_bps "" skipped iperf3 "" "$PASTA has no --map-guest-addr"
    fi

    # (3) guest -> remote and remote -> guest across the template interface: the proxy path.
    pm_iperf_out g2r_bps g2r remote "$PM_REMOTE_ADDR" "$PM_REMOTE_ADDR" "$P_PM_G2R"
    pm_iperf_out r2g_bps r2g remote "$PM_REMOTE_ADDR" "$PM_REMOTE_ADDR" "$P_PM_R2G" -R

    if helper_alive; then
        record rss_peak_kib "$(proc_kib VmHWM)" ok procfs "VmHWM of pid $HELPER at the end of the run"
        local st
        read -r -a st <"/proc/$HELPER/stat"
        record cpu_s "$(awk -v u="${st[13]}" -v s="${st[14]}" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { printf "%.2f", (u + s) / hz }')" ok procfs "utime+stime of pid $HELPER, whole run"
    else
        record rss_peak_kib "" error procfs "VmHWM" "helper exited during the run"
    fi
}

if [[ ${1:-} == __pmrun ]]; then
    shift
    run_pasta_mode "$@"
    exit 0
fi

if [[ ${1:-} == __run ]]; then
    shift
    run_one "$@"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

[[ ${1:-} == -h || ${1:-} == --help ]] && usage
[[ $# -eq 0 ]] || die "no arguments expected (configure with environment variables, see --help)"

for tool in unshare nsenter ip ss jq iperf3 timeout awk mkfifo; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds)"
[[ $FWD_SPLICE == [01] ]] || die "FWD_SPLICE must be 0 or 1"
for suite in $SUITES; do
    [[ $suite == main || $suite == pasta-mode ]] || die "unknown suite '$suite' (main, pasta-mode)"
done

if [[ $(id -u) == 0 ]]; then
    OUTER=(unshare -nm)
    MODE=root
else
    OUTER=(unshare -rnm)
    MODE=rootless
fi
"${OUTER[@]}" true 2>/dev/null || die "'${OUTER[*]} true' failed: need root or unprivileged user namespaces"
[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing"
# Pasta mode always runs in a user namespace (as podman's rootless pasta does): pasta run as
# real root switches to user nobody, and podman's command line has no --runas.
PM_OUTER=(unshare -rnm)
if [[ " $SUITES " == *" pasta-mode "* ]]; then
    "${PM_OUTER[@]}" true 2>/dev/null || die "'${PM_OUTER[*]} true' failed: the pasta-mode suite needs unprivileged user namespaces"
fi

if [[ ! -x $TAPIR ]] && [[ " $IMPLS " == *" tapir "* ]]; then
    [[ $TAPIR == "$TAPIR_DEFAULT" ]] || die "TAPIR=$TAPIR is not an executable"
    command -v cargo >/dev/null || die "$TAPIR does not exist and cargo is not in PATH; build it or set TAPIR"
    echo "building $TAPIR" >&2
    (cd "$REPO" && cargo build --release) >&2
fi
TAPIR=$(readlink -f "$TAPIR")

impl_version() {
    case $1 in
    tapir) "$TAPIR" --version 2>/dev/null | awk 'NR == 1 { v = $0 } /^commit:/ { c = ", " $0 } END { print v c }' ;;
    slirp4netns)
        "$SLIRP4NETNS" --version 2>/dev/null | awk 'NR == 1 { v = $0 } /^libslirp/ { l = $0 } END { print v ", " l }' ;;
    pasta)
        # The first line of `$PASTA --version` (pasta 2025 prints nothing to a pipe; builds
        # without a version say "unknown version") and always the file that ran, resolved;
        # only when that file belongs to a package, also the package's version.
        local v path pkg
        path=$(readlink -f "$(command -v "$PASTA")")
        v=$("$PASTA" --version 2>/dev/null | head -1 || true)
        v="${v:-pasta} ($path"
        if pkg=$(dpkg -S "$path" 2>/dev/null | cut -d: -f1) && [[ -n $pkg ]]; then
            v="$v, Debian package $pkg $(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || true)"
        fi
        echo "$v)" ;;
    esac
}

RUN_IMPLS=()
declare -A VERSION
for impl in $IMPLS; do
    case $impl in
    tapir) bin=$TAPIR ;;
    slirp4netns) bin=$SLIRP4NETNS ;;
    pasta) bin=$PASTA ;;
    *) die "unknown implementation '$impl' (tapir, slirp4netns, pasta)" ;;
    esac
    if command -v "$bin" >/dev/null; then
        RUN_IMPLS+=("$impl")
        VERSION[$impl]=$(impl_version "$impl")
    else
        echo "compare.sh: $impl not found ($bin), skipped" >&2
    fi
done
[[ ${#RUN_IMPLS[@]} -gt 0 ]] || die "no implementation to run"
PM_IMPLS=()
for impl in "${RUN_IMPLS[@]}"; do
    [[ $impl == tapir || $impl == pasta ]] && PM_IMPLS+=("$impl")
done
export PASTA_MAP_GUEST=0
if [[ " ${PM_IMPLS[*]} " == *" pasta "* ]] && "$PASTA" --help 2>&1 | grep -q -- --map-guest-addr; then
    PASTA_MAP_GUEST=1
fi

RESULTS=${RESULTS:-/tmp/tapir-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS/runs"
RESULTS=$(readlink -f "$RESULTS")
JSONL="$RESULTS/results.jsonl"
: >"$JSONL"

CHILD=""
on_signal() {
    trap - INT TERM
    [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD" 2>/dev/null
    echo "compare.sh: interrupted; partial results in $RESULTS" >&2
    exit 130
}
trap on_signal INT TERM

COMMAND="$(for v in ROUNDS DURATION MTUS IMPLS READY_SAMPLES LATENCY_TOOL FWD_SPLICE SUITES; do printf "%s='%s' " "$v" "${!v}"; done)"
[[ $PASTA == pasta ]] || COMMAND+="PASTA='$PASTA' "
COMMAND+="benches/compare.sh"
START=$(date +%s)
{
    echo "results: $RESULTS"
    echo "command: $COMMAND ($MODE)"
    for impl in "${RUN_IMPLS[@]}"; do echo "$impl: ${VERSION[$impl]}"; done
    echo "suites: $SUITES"
} >&2

run_suite() { # SUITE IMPL...
    local suite=$1 n k=0 mtu round j impl out started load rc sub prefix timeout_s mode outer
    shift
    local impls=("$@")
    n=${#impls[@]}
    ((n > 0)) || return 0
    if [[ $suite == main ]]; then
        sub=__run prefix="" timeout_s=$RUN_TIMEOUT mode=$MODE outer=("${OUTER[@]}")
    else
        sub=__pmrun prefix=pm- timeout_s=$PM_RUN_TIMEOUT mode=userns outer=("${PM_OUTER[@]}")
    fi
    for mtu in $MTUS; do
        for ((round = 1; round <= ROUNDS; round++)); do
            for ((j = 0; j < n; j++)); do
                impl=${impls[$(((j + k) % n))]}
                out="$RESULTS/runs/${prefix}mtu$mtu-r$round-$impl"
                mkdir -p "$out"
                : >"$out/metrics.jsonl"
                started=$(date -Is)
                load=$(cut -d' ' -f1 /proc/loadavg)
                rc=0
                timeout -k 10 "$timeout_s" "${outer[@]}" "$SELF" "$sub" "$impl" "$mtu" "$round" "$out" \
                    >"$out/run.log" 2>&1 &
                CHILD=$!
                wait "$CHILD" || rc=$?
                CHILD=""
                jq -cs --arg impl "$impl" --argjson mtu "$mtu" --argjson round "$round" \
                    --arg started "$started" --arg version "${VERSION[$impl]}" --arg mode "$mode" \
                    --argjson rc "$rc" --argjson load "$load" --argjson duration "$DURATION" \
                    --arg suite "$suite" \
                    '{suite: $suite, impl: $impl, version: $version, mtu: $mtu, round: $round, mode: $mode,
                      started: $started, loadavg1_at_start: $load, duration_s: $duration,
                      run_exit_status: $rc,
                      metrics: (map({key: .metric, value: (. | del(.metric))}) | from_entries)}' \
                    "$out/metrics.jsonl" >>"$JSONL"
                tail -1 "$JSONL" | jq -r '"[\(now | strftime("%H:%M:%S"))] \(.suite) MTU \(.mtu) round \(.round) \(.impl) (exit \(.run_exit_status)): " +
                    ([.metrics | to_entries[] | select(.key | startswith("hwm_") | not) | "\(.key)=" +
                      (if .value.status == "ok" then (.value.value | tostring) else .value.status end)
                      + (if .key == "fwd_peer" then "(\(.value.note))" else "" end)] | join(" "))' >&2
            done
            k=$((k + 1))
        done
    done
}

[[ " $SUITES " == *" main "* ]] && run_suite main "${RUN_IMPLS[@]}"
[[ " $SUITES " == *" pasta-mode "* ]] && run_suite pasta-mode "${PM_IMPLS[@]}"
END=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Summary: medians per MTU, Markdown
# ---------------------------------------------------------------------------------------------

summary() {
    local mtu
    echo "Command: \`$COMMAND\` ($MODE), $(nproc) CPUs, Linux $(uname -r), $(date -u +%Y-%m-%d)."
    echo "Total run time: $((END - START)) s. Raw results: \`$JSONL\`."
    echo "1-minute load average at the start of the runs: $(jq -rs \
        '[.[].loadavg1_at_start] | "min \(min), max \(max)"' "$JSONL") (the machine has $(nproc) CPUs;"\
        "other work running at the same time makes every number noisier)."
    echo
    for impl in "${RUN_IMPLS[@]}"; do echo "- $impl: ${VERSION[$impl]}"; done
    [[ " $SUITES " == *" main "* ]] && for mtu in $MTUS; do
        echo
        echo "#### MTU $mtu (median of $ROUNDS rounds, ${DURATION} s per workload)"
        echo
        jq -rs --argjson mtu "$mtu" --arg impls "${RUN_IMPLS[*]}" --arg splice "$FWD_SPLICE" --arg idle "$IDLE_CONNS" '
          def median: sort | if length == 0 then null
            elif length % 2 == 1 then .[(length - 1) / 2]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
          def fmt(d): if . == null then "n/a" else
              ((. * pow(10; d)) | round) as $n
              | if d == 0 then ($n | tostring)
                else (($n / pow(10; d)) | floor) as $i
                  | (($n - $i * pow(10; d)) | tostring) as $f
                  | "\($i)." + ("000000"[0:(d - ($f | length))]) + $f end end;
          def ratio(a; b): if a == null or b == null or b == 0 then "n/a" else (a / b) | fmt(2) end;
          ($impls | split(" ")) as $impls
          | map(select(.mtu == $mtu and (.suite // "main") == "main")) as $runs
          # median over the runs of implementation i that gave a number for metric k
          | def med($i; $k): [$runs[] | select(.impl == $i) | .metrics[$k]
                | select(. != null and (.status == "ok" or .status == "stall") and .value != null)
                | .value] | median;
          # Rows with "only" are measured for that implementation alone; "vs" names the metric
          # of the other implementations that their ratio columns divide by.
          [ [ {k: "g2h_bps", l: "iperf3 guest→host via 10.0.2.2 (Gbit/s, ↑)", s: 1e-9, d: 2},
              {k: "h2g_bps", l: "iperf3 host→guest via 10.0.2.2, -R (Gbit/s, ↑)", s: 1e-9, d: 2},
              {k: "g2h_cpu_per_gbps", l: "helper CPU per Gbit/s, guest→host (% of a core, ↓)", s: 1, d: 1},
              {k: "h2g_cpu_per_gbps", l: "helper CPU per Gbit/s, host→guest (% of a core, ↓)", s: 1, d: 1},
              {k: "h2g_idle_bps", l: "the same with \($idle) idle connections open (Gbit/s, ↑)", s: 1e-9, d: 2,
               idle: true},
              {k: "fwd_bps", l: "iperf3 host→guest via port forward (Gbit/s, ↑)", s: 1e-9, d: 2},
              {k: "fwd_splice_bps", l: "iperf3 host→guest via port forward, tapir `--splice-forwards` (Gbit/s, ↑) ¹",
               s: 1e-9, d: 2, only: "tapir", vs: "fwd_bps",
               na: {slirp4netns: "— (no such mode)", pasta: "— (its port forward is spliced)"}},
              {k: "fwd_cpu_pct", l: "helper CPU during the port forward (% of a core)", s: 1, d: 0},
              {k: "fwd_splice_cpu_pct", l: "tapir CPU during the spliced port forward (% of a core) ¹",
               s: 1, d: 0, only: "tapir", vs: "fwd_cpu_pct"},
              {k: "fwd_cpu_per_gbps", l: "helper CPU per Gbit/s, port forward (% of a core, ↓)", s: 1, d: 1},
              {k: "fwd_splice_cpu_per_gbps", l: "tapir CPU per Gbit/s, spliced port forward (% of a core, ↓) ¹",
               s: 1, d: 1, only: "tapir", vs: "fwd_cpu_per_gbps"},
              {k: "rtt_avg_us", l: "TCP ping-pong RTT, mean (µs, ↓)", s: 1, d: 1},
              {k: "rtt_p50_us", l: "TCP ping-pong RTT, median (µs, ↓)", s: 1, d: 1},
              {k: "rtt_floor_us", l: "the same on the host'"'"'s loopback without a helper: the floor (µs)", s: 1, d: 1},
              {k: "rtt_added_us", l: "RTT the helper adds over that floor (µs, ↓)", s: 1, d: 1},
              {k: "rtt_cpu_pct", l: "helper CPU during the ping-pong (% of a core)", s: 1, d: 0},
              {k: "rtt_cpu_us_per_exchange", l: "helper CPU per ping-pong exchange (µs, ↓)", s: 1, d: 1},
              {k: "idle_wakeups", l: "wake-ups per second at idle (↓)", s: 1, d: 2},
              {k: "idle_conns_wakeups", l: "the same with \($idle) idle connections open (↓)", s: 1, d: 2,
               idle: true},
              {k: "cps", l: "wrk, Connection: close (conn/s, ↑)", s: 1, d: 0},
              {k: "ready_ms", l: "launch → ready (ms, ↓)", s: 1, d: 1},
              {k: "rss_idle_kib", l: "idle RSS, ready + 1 s (MiB, ↓)", s: (1 / 1024), d: 1},
              {k: "rss_peak_kib", l: "peak RSS, VmHWM (MiB, ↓)", s: (1 / 1024), d: 1},
              {k: "cpu_s", l: "helper CPU time, whole run (s)", s: 1, d: 1} ][]
            | select(.only == null or (.only as $o | $impls | index($o)) and $splice == "1")
            | select(.idle == null or $idle != "0") ] as $metrics
          | ($impls | map(select(. != "tapir"))) as $others
          | "| metric | " + ($impls | join(" | ")) + " |"
            + (if ($impls | index("tapir")) then ($others | map(" tapir/\(.) |") | join("")) else "" end),
            "|---|" + ($impls | map("---:|") | join(""))
            + (if ($impls | index("tapir")) then ($others | map("---:|") | join("")) else "" end),
            ($metrics[] as $m
             | ([$runs[] | .metrics[$m.k] // null]) as $all
             | ($all | map(select(. != null and .tool != null)) | map(.tool) | unique
                | map(select(. == "python3-pingpong")) | length > 0) as $py
             | ($impls | map(. as $i
                 | [$runs[] | select(.impl == $i) | .metrics[$m.k]] as $cells
                 | {impl: $i,
                    skip: ($m.only != null and $m.only != $i),
                    med: med($i; $m.k),
                    n: ($runs | map(select(.impl == $i)) | length),
                    stall: ([$cells[] | select(. != null and .status == "stall")] | length),
                    err: ([$cells[] | select(. == null or .status == "error")] | length)})) as $cols
             | [$m.l + (if $py then " [python3 ping-pong]" else "" end)]
               + ($cols | map(
                   if .skip then ($m.na // {})[.impl] // "—"
                   else (if .med == null then "n/a" else (.med * $m.s | fmt($m.d)) end)
                     + (if .stall > 0 then " (\(.stall)/\(.n) stalled)" else "" end)
                     + (if .err > 0 then " (\(.err)/\(.n) failed)" else "" end) end))
               + (if ($impls | index("tapir")) then
                    ($others | map(ratio(med("tapir"; $m.k); med(.; $m.vs // $m.k)))) else [] end)
             | "| " + join(" | ") + " |"),
            (if ($metrics | map(select(.only != null)) | length) > 0 then
               "",
               "¹ tapir started with `--splice-forwards`: a second tapir on a second guest, in the"
               + " same run right after the port-forward row; loopback clients are relayed with"
               + " splice(2) to a socket inside the guest'"'"'s namespace, so the guest sees its own"
               + " address as the client. Its ratio columns divide by the other implementation'"'"'s"
               + " port-forward row: slirp4netns has no such mode (tapir/slirp4netns is spliced tapir"
               + " against slirp4netns'"'"'s usual path); pasta splices loopback clients by default, so"
               + " its port-forward row is already spliced and tapir/pasta is the like-for-like"
               + " comparison."
             else empty end)
        ' "$JSONL"
    done
    [[ " $SUITES " == *" pasta-mode "* ]] && ((${#PM_IMPLS[@]} > 0)) && for mtu in $MTUS; do
        echo
        echo "#### Pasta mode, MTU $mtu (median of $ROUNDS rounds, ${DURATION} s per workload)"
        echo
        echo "Both started as \`pasta --config-net$([[ $mtu == 65520 ]] || echo " -m $mtu")" \
            "-t 127.0.0.1/$P_PM_FWD-$P_PM_FWD:$P_PM_FWD-$P_PM_FWD -u none -T none -U none" \
            "--dns-forward $PM_DNS_FWD --no-map-gw --quiet --netns FILE" \
            "--map-guest-addr $PM_MAP_GUEST --pid FILE\`$([[ $PASTA_MAP_GUEST == 1 || " ${PM_IMPLS[*]} " != *" pasta "* ]] \
                || echo " (pasta without \`--map-guest-addr\`: this build lacks it)")," \
            "tapir through a symlink named pasta, in a user namespace; template v0 $PM_HOST_ADDR/24," \
            "default via $PM_REMOTE_ADDR (the remote namespace)."
        echo
        jq -rs --argjson mtu "$mtu" --arg impls "${PM_IMPLS[*]}" '
          def median: sort | if length == 0 then null
            elif length % 2 == 1 then .[(length - 1) / 2]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
          def fmt(d): if . == null then "n/a" else
              ((. * pow(10; d)) | round) as $n
              | if d == 0 then ($n | tostring)
                else (($n / pow(10; d)) | floor) as $i
                  | (($n - $i * pow(10; d)) | tostring) as $f
                  | "\($i)." + ("000000"[0:(d - ($f | length))]) + $f end end;
          def ratio(a; b): if a == null or b == null or b == 0 then "n/a"
            else (a / b) | if . >= 100 then fmt(0) elif . >= 10 then fmt(1) else fmt(2) end end;
          ($impls | split(" ")) as $impls
          | map(select(.mtu == $mtu and .suite == "pasta-mode")) as $runs
          | def med($i; $k): [$runs[] | select(.impl == $i) | .metrics[$k]
                | select(. != null and (.status == "ok" or .status == "stall") and .value != null)
                | .value] | median;
          [ {k: "fwd_bps", l: "(1) iperf3 host→guest via `-t` from 127.0.0.1 (Gbit/s, ↑)", s: 1e-9, d: 2},
            {k: "fwd_cpu_pct", l: "helper CPU during (1) (% of a core)", s: 1, d: 0},
            {k: "fwd_cpu_per_gbps", l: "helper CPU per Gbit/s, (1) (% of a core, ↓)", s: 1, d: 1},
            {k: "fwd_retrans", l: "TCP retransmits, (1) (iperf3 sender)", s: 1, d: 0, noratio: true},
            {k: "g2h_bps", l: "(2) iperf3 guest→host via `--map-guest-addr` (Gbit/s, ↑)", s: 1e-9, d: 2},
            {k: "g2h_cpu_pct", l: "helper CPU during (2) (% of a core)", s: 1, d: 0},
            {k: "g2h_cpu_per_gbps", l: "helper CPU per Gbit/s, (2) (% of a core, ↓)", s: 1, d: 1},
            {k: "g2h_retrans", l: "TCP retransmits, (2) (iperf3 sender)", s: 1, d: 0, noratio: true},
            {k: "g2r_bps", l: "(3) iperf3 guest→remote across v0 (Gbit/s, ↑)", s: 1e-9, d: 2},
            {k: "g2r_cpu_pct", l: "helper CPU during (3) (% of a core)", s: 1, d: 0},
            {k: "g2r_cpu_per_gbps", l: "helper CPU per Gbit/s, (3) (% of a core, ↓)", s: 1, d: 1},
            {k: "g2r_retrans", l: "TCP retransmits, (3) (iperf3 sender)", s: 1, d: 0, noratio: true},
            {k: "r2g_bps", l: "(3R) iperf3 remote→guest across v0, -R (Gbit/s, ↑)", s: 1e-9, d: 2},
            {k: "r2g_cpu_pct", l: "helper CPU during (3R) (% of a core)", s: 1, d: 0},
            {k: "r2g_cpu_per_gbps", l: "helper CPU per Gbit/s, (3R) (% of a core, ↓)", s: 1, d: 1},
            {k: "r2g_retrans", l: "TCP retransmits, (3R) (iperf3 sender)", s: 1, d: 0, noratio: true},
            {k: "ready_ms", l: "launch → foreground exit (ms, ↓)", s: 1, d: 1},
            {k: "rss_idle_kib", l: "idle RSS, ready + 1 s (MiB, ↓)", s: (1 / 1024), d: 1},
            {k: "rss_peak_kib", l: "peak RSS, VmHWM (MiB, ↓)", s: (1 / 1024), d: 1},
            {k: "cpu_s", l: "helper CPU time, whole run (s)", s: 1, d: 1} ] as $metrics
          | (($impls | index("tapir")) != null and ($impls | index("pasta")) != null) as $both
          | "| metric | " + ($impls | map(if . == "tapir" then "tapir as pasta" else . end) | join(" | ")) + " |"
            + (if $both then " tapir/pasta |" else "" end),
            "|---|" + ($impls | map("---:|") | join("")) + (if $both then "---:|" else "" end),
            ($metrics[] as $m
             | ($impls | map(. as $i
                 | [$runs[] | select(.impl == $i) | .metrics[$m.k]] as $cells
                 | {med: med($i; $m.k),
                    n: ($runs | map(select(.impl == $i)) | length),
                    stall: ([$cells[] | select(. != null and .status == "stall")] | length),
                    skipped: ([$cells[] | select(. != null and .status == "skipped")] | length),
                    err: ([$cells[] | select(. == null or .status == "error")] | length)})) as $cols
             | [$m.l]
               + ($cols | map(
                   if .skipped == .n and .n > 0 then "—"
                   else (if .med == null then "n/a" else (.med * $m.s | fmt($m.d)) end)
                     + (if .stall > 0 then " (\(.stall)/\(.n) stalled)" else "" end)
                     + (if .err > 0 then " (\(.err)/\(.n) failed)" else "" end) end))
               + (if $both then [if $m.noratio then "—" else ratio(med("tapir"; $m.k); med("pasta"; $m.k)) end]
                  else [] end)
             | "| " + join(" | ") + " |"),
            "",
            "A CPU per Gbit/s cell reads — when the helper used under 5 clock ticks during that"
            + " workload in every round (too little to divide by).",
            "The guest'"'"'s iperf3 server saw the client of (1) as: "
            + ($impls | map(. as $i | "\($i): "
                + ([$runs[] | select(.impl == $i) | .metrics.fwd_peer.note // "?"] | unique | join(", ")))
               | join("; "))
            + " (tapir: the guest'"'"'s own address when spliced, the template'"'"'s gateway through its stack)."
        ' "$JSONL"
    done
    return 0
}

summary | tee "$RESULTS/summary.md"
echo >&2
echo "results: $RESULTS (results.jsonl, summary.md, runs/*/)" >&2
