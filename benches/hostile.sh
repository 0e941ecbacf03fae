#!/usr/bin/env bash
# benches/hostile.sh: a hostile guest against tapir and slirp4netns, side by side.
#
#   sudo benches/hostile.sh          # or as a plain user with unprivileged user namespaces
#   IMPLS="tapir slirp4netns" ATTACKS="malformed synflood-rst" SETTLE=120 benches/hostile.sh
#
# The attacks are those of tests/hostile.rs, sent by tests/tools/rawguest.py as raw frames on
# the guest's tap0. Every (implementation, attack) pair gets a fresh private "host" network
# namespace (`unshare -nm` as root, `unshare -rnm` otherwise) with only `lo` (and, for the
# silent-destination attack, a veth into a namespace where nothing answers) up, and a fresh guest namespace nested in
# it; nothing is sent outside namespaces this script creates. Per pair it reports: did the
# helper survive, peak and final descriptors / RSS (and tapir's flow count), how long until the
# descriptors were back at the baseline (at most SETTLE seconds), and whether a 10 MB download
# and a DNS query over UDP and TCP worked right after the attack and after settling.
# Output: a Markdown table on stdout; raw samples under RESULTS. See benches/README.md.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
BENCH_DIR=$(dirname "$SELF")
REPO=$(dirname "$BENCH_DIR")
TOOLS=$REPO/tests/tools
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

export IMPLS=${IMPLS:-"tapir slirp4netns"}
export ATTACKS=${ATTACKS:-"malformed tcpflags synflood-rst synflood-unanswered synflood-silent synrst udpflood frags spoof slowapi"}
export SETTLE=${SETTLE:-120}
export TAPIR=${TAPIR:-$REPO/target/release/tapir}
export SLIRP4NETNS=${SLIRP4NETNS:-slirp4netns}
export RESULTS=${RESULTS:-/tmp/tapir-hostile-$(date +%Y%m%d-%H%M%S)}
OTHER=198.51.100.1

die() { echo "hostile.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# One pair, inside the private host namespace: __run IMPL ATTACK OUTFILE
# ---------------------------------------------------------------------------------------------
if [[ ${1:-} == __run ]]; then
    IMPL=$2 ATTACK=$3 OUT=$4
    W=$(mktemp -d)
    PIDS=()
    cleanup() {
        local p
        for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        rm -rf "$W"
    }
    trap cleanup EXIT
    ip link set lo up
    ip addr add $OTHER/32 dev lo
    echo "nameserver 127.0.0.1" >"$W/resolv.conf"
    mount --bind "$W/resolv.conf" /etc/resolv.conf
    head -c 10485760 /dev/urandom >"$W/10m.bin"
    busybox httpd -f -p $OTHER:18080 -h "$W" & PIDS+=($!)
    python3 "$TOOLS/dnsserve.py" 127.0.0.1 53 192.0.2.1 & PIDS+=($!)
    python3 "$TOOLS/tcpserve.py" greet 127.0.0.1 18081 >/dev/null & PIDS+=($!)
    python3 "$TOOLS/tcpserve.py" greet $OTHER 18081 >/dev/null & PIDS+=($!)
    python3 "$TOOLS/tcpserve.py" udpecho 127.0.0.1 18085 & PIDS+=($!)
    if [[ $ATTACK == synflood-silent ]]; then
        # 192.0.2.0/24 routed into a veth whose peer sits in a namespace of its own with no
        # address: connects there hang (nothing answers, not even ARP: a static neighbour).
        unshare -n sleep 3600 & SINK=$!; PIDS+=($SINK)
        sleep 0.2
        ip link add hole0 type veth peer name hole1 netns /proc/$SINK/ns/net
        ip link set hole0 up && ip addr add 10.99.0.1/30 dev hole0
        ip neigh add 10.99.0.2 lladdr 02:00:00:00:99:02 dev hole0 nud permanent
        ip route add 192.0.2.0/24 via 10.99.0.2
        nsenter -t $SINK -n ip link set hole1 up
    fi
    unshare -n sleep 3600 & GUEST=$!; PIDS+=($GUEST)
    for _ in $(seq 50); do
        [[ $(readlink /proc/$GUEST/ns/net) != $(readlink /proc/self/ns/net) ]] && break
        sleep 0.05
    done
    for _ in $(seq 100); do ss -Hltn 'sport = :18081' | grep -q . && ss -Hltn 'sport = :53' | grep -q . && break; sleep 0.05; done
    case $IMPL in
        tapir) BIN=$TAPIR ;;
        slirp4netns) BIN=$SLIRP4NETNS ;;
    esac
    mkfifo "$W/ready"
    "$BIN" --configure --mtu=1500 --api-socket "$W/api.sock" --ready-fd=3 "$GUEST" tap0 \
        3>"$W/ready" >"$W/helper.log" 2>&1 & HELPER=$!; PIDS+=($HELPER)
    timeout 10 head -c1 "$W/ready" >/dev/null || { echo '{"error":"not ready"}' >"$OUT"; exit 0; }
    g() { nsenter -t "$GUEST" -n "$@"; }
    alive() { [[ -d /proc/$HELPER ]] && ! grep -q '^State:.*[ZX]' /proc/$HELPER/status 2>/dev/null; }
    fds() { ls /proc/$HELPER/fd 2>/dev/null | wc -l; }
    rss() { awk '/^VmRSS:/ {print $2}' /proc/$HELPER/status 2>/dev/null || echo 0; }
    flows() { # tapir only: tcp+udp+icmp from get_info
        [[ $IMPL == tapir ]] || { echo -; return; }
        python3 - "$W/api.sock" <<'PY' 2>/dev/null || echo -
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(sys.argv[1])
s.sendall(b'{"execute": "get_info"}'); s.shutdown(socket.SHUT_WR)
d = b""
while True:
    c = s.recv(65536)
    if not c: break
    d += c
f = json.loads(d)["return"]["flows"]
print(f["tcp"] + f["udp"] + f["icmp"])
PY
    }
    health() { # prints d/u/t flags: download, dns udp, dns tcp (y or n)
        local d u t
        d=$(g curl -s -o /dev/null -w '%{size_download}' --max-time 30 http://$OTHER:18080/10m.bin || true)
        u=$(g dig +short +time=3 +tries=1 @10.0.2.3 tapir.test 2>/dev/null || true)
        t=$(g dig +tcp +short +time=3 +tries=1 @10.0.2.3 tapir.test 2>/dev/null || true)
        printf '%s%s%s' "$([[ $d == 10485760 ]] && echo y || echo n)" \
            "$([[ $u == 192.0.2.1 ]] && echo y || echo n)" "$([[ $t == 192.0.2.1 ]] && echo y || echo n)"
    }
    warm=$(health)
    sleep 1
    base_fds=$(fds) base_rss=$(rss) base_flows=$(flows)
    # Peak sampler.
    (
        while alive; do echo "$(fds) $(rss) $(flows)"; sleep 0.25; done
    ) >"$W/samples" 2>/dev/null & SAMPLER=$!
    raw() { g python3 "$TOOLS/rawguest.py" "$@"; }
    t0=$(date +%s.%N)
    case $ATTACK in
        malformed) raw --max-secs 20 malformed 20000 ;;
        tcpflags) raw tcpflags 10.0.2.2 18081; raw tcpflags 10.0.2.2 18099; raw tcpflags $OTHER 18081 ;;
        synflood-rst) raw --max-secs 30 synflood 10.0.2.2 18081 3000 --rate 1000 --linger 2 ;;
        synflood-unanswered) raw --max-secs 30 synflood 10.0.2.2 18081 5000 --src 10.0.2.200 --rate 1000 --linger 1 ;;
        synflood-silent)
            raw --max-secs 20 synflood 10.0.2.2 18099 2000 --rate 2000
            raw --max-secs 20 synflood x 80,443,8080,22 2000 --spread-dst 192.0.2 --rate 2000 ;;
        synrst) raw --max-secs 20 synrst 10.0.2.2 18081 1000 ;;
        udpflood)
            raw --max-secs 20 udpflood $OTHER 20000-24999 5000 --one-src --rate 2000
            raw --max-secs 20 udpflood $OTHER 30000-32999 3000 --rate 2000 ;;
        frags) raw --max-secs 20 frags $OTHER 18085 2000 ;;
        spoof) raw --max-secs 20 spoof 500 ;;
        slowapi)
            python3 - "$W/api.sock" <<'PY'
import socket, sys, time
req = b'{"execute": "get_info"}'
cs = []
for i in range(100):
    s = socket.socket(socket.AF_UNIX); s.setblocking(False)
    try:
        s.connect(sys.argv[1]); cs.append(s)
    except OSError:
        pass
for k in range(15):
    for s in cs:
        try: s.send(req[k:k+1])
        except OSError: pass
    time.sleep(1)
print("clients=%d" % len(cs))
PY
            ;;
    esac >"$W/attack.out" 2>&1 || true
    t1=$(date +%s.%N)
    survived=$(alive && echo yes || echo no)
    after=$( [[ $survived == yes ]] && health || echo nnn)
    # Settle: descriptors back to the baseline (+2).
    back=""
    start=$(date +%s)
    while alive && (($(date +%s) - start < SETTLE)); do
        if (($(fds) <= base_fds + 2)); then back=$(($(date +%s) - start)); break; fi
        sleep 1
    done
    end_fds=$(fds) end_rss=$(rss) end_flows=$(flows)
    settled=$(alive && health || echo nnn)
    kill $SAMPLER 2>/dev/null || true
    peak_fds=$(awk 'BEGIN{m=0} $1>m{m=$1} END{print m}' "$W/samples")
    peak_rss=$(awk 'BEGIN{m=0} $2>m{m=$2} END{print m}' "$W/samples")
    peak_flows=$(awk 'BEGIN{m=0} $3!="-" && $3>m{m=$3} END{print m}' "$W/samples")
    [[ $IMPL == tapir ]] || peak_flows=-
    jq -cn --arg impl "$IMPL" --arg attack "$ATTACK" --arg survived "$survived" \
        --arg warm "$warm" --arg after "$after" --arg settled "$settled" \
        --arg base_fds "$base_fds" --arg base_rss "$base_rss" --arg base_flows "$base_flows" \
        --arg peak_fds "$peak_fds" --arg peak_rss "$peak_rss" --arg peak_flows "$peak_flows" \
        --arg end_fds "$end_fds" --arg end_rss "$end_rss" --arg end_flows "$end_flows" \
        --arg back "$back" --arg secs "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')" \
        --arg summary "$(tr '\n' ' ' <"$W/attack.out" | cut -c1-300)" \
        '$ARGS.named' >"$OUT"
    cp "$W/helper.log" "${OUT%.json}.helper.log" 2>/dev/null || true
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Driver.
# ---------------------------------------------------------------------------------------------
for c in unshare nsenter ip ss jq python3 busybox curl dig timeout; do
    command -v "$c" >/dev/null || die "$c not installed"
done
[[ -x $TAPIR ]] || (cd "$REPO" && cargo build --release) || die "cannot build tapir"
mkdir -p "$RESULTS"
echo "results in $RESULTS" >&2
if [[ $(id -u) == 0 ]]; then NS=(unshare -nm --propagation private); else NS=(unshare -rnm --propagation private); fi
for attack in $ATTACKS; do
    for impl in $IMPLS; do
        if [[ $impl == slirp4netns ]] && ! command -v "$SLIRP4NETNS" >/dev/null; then
            echo "slirp4netns not installed: skipped" >&2; continue
        fi
        echo "$(date +%T) $impl $attack" >&2
        timeout $((SETTLE + 300)) "${NS[@]}" bash "$SELF" __run "$impl" "$attack" \
            "$RESULTS/$impl-$attack.json" >"$RESULTS/$impl-$attack.log" 2>&1 ||
            echo '{"error":"run failed or timed out"}' >"$RESULTS/$impl-$attack.json"
    done
done

versions=$("$TAPIR" --version | head -1)
command -v "$SLIRP4NETNS" >/dev/null && versions="$versions; $("$SLIRP4NETNS" --version | head -1)"
echo
echo "benches/hostile.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $versions, settle bound ${SETTLE} s."
echo "Health = 10 MB download / DNS over UDP / DNS over TCP (y = worked). fds and RSS (MiB) of the helper."
echo
echo "| attack | helper | survived | health after attack | fds base → peak → end | RSS base → peak → end | tapir flows peak → end | fds back in | health after settling |"
echo "|---|---|---|---|---|---|---|---|---|"
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k == 0) print "-"; else printf "%.1f", k / 1024 }'; }
for attack in $ATTACKS; do
    for impl in $IMPLS; do
        f=$RESULTS/$impl-$attack.json
        [[ -f $f ]] || continue
        if jq -e .error "$f" >/dev/null 2>&1; then
            echo "| $attack | $impl | $(jq -r .error "$f") | | | | | | |"
            continue
        fi
        r() { jq -r ".$1" "$f"; }
        hl() { local h=$1; echo "${h:0:1}/${h:1:1}/${h:2:1}"; }
        back=$(r back); [[ -n $back ]] && back="${back} s" || back="> $SETTLE s"
        flows="-"; [[ $impl == tapir ]] && flows="$(r peak_flows) → $(r end_flows)"
        echo "| $attack | $impl | $(r survived) | $(hl "$(r after)") | $(r base_fds) → $(r peak_fds) → $(r end_fds) | $(mib "$(r base_rss)") → $(mib "$(r peak_rss)") → $(mib "$(r end_rss)") | $flows | $back | $(hl "$(r settled)") |"
    done
done
