# servers.sh: sourced by the gateway benches (proxy.sh, proxy_rss.sh, soak.sh, cache.sh,
# gateway_ir.sh, httpd.sh). Raises the open-file limit, makes $TMP, and stops every server
# recorded with started() however the script ends; pick_port, wait_http, the RSS/PSS of a
# process tree, canned_upstream and gateway_config.
# 1000 connections in, as many out, plus the upstream's: more descriptors than the default.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TMP=$(mktemp -d)
PIDS=""
# Every server is started in this shell (never inside $(...), where its PID would be lost)
# and stopped however the script ends; nimrank's workers are found through their parent.
started() { PIDS="$PIDS $1"; [ -z "$BENCH_PIDS" ] || echo "$1" >>"$BENCH_PIDS"; }
# unstarted PID: a server stopped and waited for leaves the list, so the exit trap never
# signals its number again (by then another process's) or that process's children.
unstarted() { PIDS=$(echo " $PIDS " | sed "s/ $1 / /g"); }
alive() { for p in "$@"; do ! kill -0 "$p" 2>/dev/null || return 0; done; return 1; }
stop() {
    kids=""
    for p in $PIDS; do kids="$kids $(ps -o pid= --ppid "$p" 2>/dev/null || true)"; done
    [ -z "$PIDS" ] || kill $PIDS $kids 2>/dev/null || true
    n=0
    while [ $n -lt 50 ] && alive $PIDS $kids; do sleep 0.1; n=$((n + 1)); done
    ! alive $PIDS $kids || kill -9 $PIDS $kids 2>/dev/null || true
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap stop EXIT
trap 'exit 1' INT TERM HUP PIPE # a reader gone (| head) or a closed terminal ends it too

# cohere_body N MODEL: the Cohere-style request every target gets, N documents of ~200 bytes.
cohere_body() {
    awk -v n="$1" -v key="$2" 'BEGIN {
        printf "{\"model\":\"%s\",\"query\":\"which gpu has the most memory bandwidth\",", key
        printf "\"documents\":["
        for (i = 0; i < n; i++) {
            d = sprintf("document %d: the accelerator pairs tensor cores with stacked memory", i)
            while (length(d) < 200) d = d " and a wide bus for bandwidth hungry kernels"
            printf "%s\"%s\"", (i ? "," : ""), substr(d, 1, 200)
        }
        printf "],\"top_n\":%d}", n }'
}
# canned_answer N: NIM's answer ranking N passages, what the canned upstreams return.
canned_answer() {
    awk -v n="$1" 'BEGIN {
        printf "{\"rankings\":["
        for (i = 0; i < n; i++) printf "%s{\"index\":%d,\"logit\":%.4f}", (i ? "," : ""), i,
            5 - i * 0.0625
        printf "],\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}", n * 40, n * 40 }'
}
# nginx: a prefix of its own in $TMP, every temp path inside it, no access log.
NGX_COMMON="client_body_temp_path $TMP/ngx/body; proxy_temp_path $TMP/ngx/proxy;
    fastcgi_temp_path $TMP/ngx/fcgi; uwsgi_temp_path $TMP/ngx/uwsgi;
    scgi_temp_path $TMP/ngx/scgi; access_log off; keepalive_requests 100000000;
    client_max_body_size 64m; client_body_buffer_size 4m;"

# nginx_upstream PREAMBLE CONNECTIONS LOCATIONS: nginx (one worker, in $TMP/ngx) as the upstream
# of a gateway bench: PREAMBLE goes before its config (load_module lines), LOCATIONS into its
# server block; sets UP to its port and returns once it answers.
nginx_upstream() {
    mkdir -p "$TMP/ngx"
    pick_port; UP=$PORT
    cat >"$TMP/ngx/up.conf" <<EOF
$1
worker_processes 1;
pid $TMP/ngx/up.pid;
events { worker_connections $2; }
http {
    $NGX_COMMON
    server {
        listen 127.0.0.1:$UP backlog=4096;
        default_type application/json;
        $3
    }
}
EOF
    nginx -p "$TMP/ngx" -e "$TMP/ngx/up.err" -c "$TMP/ngx/up.conf" -g 'daemon off;' &
    started $!
    wait_http "http://127.0.0.1:$UP/" $! || { cat "$TMP/ngx/up.err" >&2; exit 1; }
}

# gateway_config FILE N...: the gateway's config of the benches: a model bench-N on the canned
# upstream ($UP) for each N, and the master key $KEY.
gateway_config() {
    f=$1
    shift
    {
        echo "model_list:"
        for n in "$@"; do
            echo "  - model_name: bench-$n"
            printf '    litellm_params: { model: nvidia_nim/nvidia/bench-%s, ' "$n"
            printf 'api_base: "http://127.0.0.1:%s/v1" }\n' "$UP"
        done
        echo "general_settings:"
        echo "  master_key: $KEY"
    } >"$f"
}

# canned_upstream "PATH FILE" ...: the fake NIM the gateway benches put behind their targets,
# answering each POST to PATH at once with FILE's bytes (nginx_upstream).
canned_upstream() {
    locations=""
    for pair in "$@"; do
        locations="$locations
        location = ${pair%% *} { return 200 '$(cat "${pair#* }")'; }"
    done
    nginx_upstream "" 8192 "$locations"
}

# A port nothing uses, below the ephemeral range (the clients' own ports come from there).
TAKEN=""
pick_port() {
    while :; do
        PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 12000))
        case " $TAKEN " in *" $PORT "*) continue ;; esac
        ss -Htan 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}' | grep -qx "$PORT" ||
            break
    done
    TAKEN="$TAKEN $PORT"
}
wait_http() { # URL PID: until URL answers at all, while PID lives; fails after ~10 s
    n=0
    until curl -s -o /dev/null -m 1 "$1"; do
        kill -0 "$2" 2>/dev/null || return 1
        n=$((n + 1)); [ $n -lt 100 ] || return 1
        sleep 0.1
    done
}
# RSS in KB of PID and all its descendants: "total own child1 child2 ..."
rss_tree() {
    ps -e -o pid=,ppid=,rss= | awk -v root="$1" '{ pp[$1] = $2; r[$1] = $3 }
        END { t[root] = 1; more = 1
            while (more) { more = 0
                for (p in pp) if (!(p in t) && (pp[p] in t)) { t[p] = 1; more = 1 } }
            sum = 0; kids = ""
            for (p in t) if (p in r) { sum += r[p]; if (p != root) kids = kids " " r[p] }
            print sum, r[root] + 0 kids }'
}
# PSS in KB of PID and all its descendants: shared pages split among those sharing them.
pss_tree() {
    pids=$(ps -e -o pid=,ppid= | awk -v root="$1" '{ pp[$1] = $2 }
        END { t[root] = 1; more = 1
            while (more) { more = 0
                for (p in pp) if (!(p in t) && (pp[p] in t)) { t[p] = 1; more = 1 } }
            for (p in t) print p }')
    for p in $pids; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done |
        awk '/^Pss:/ { k += $2 } END { print k + 0 }'
}
# Starts `nimrank serve` on $TMP/config.yaml (a free port: $NIM; supervisor: $SERVE), its
# log in $TMP/serve.log; waits until it says it is listening, or exits 1.
start_nimrank() {
    pick_port; NIM=$PORT
    : >"$TMP/serve.err" # there before the first look at it
    "$BUILD/nimrank" serve --config "$TMP/config.yaml" --host 127.0.0.1 --port "$NIM" \
        --workers "$WORKERS" --log "$TMP/serve.log" \
        ${NIMRANK_LOG_LEVEL:+--log-level "$NIMRANK_LOG_LEVEL"} $NIMRANK_SERVE_ARGS \
        2>"$TMP/serve.err" &
    SERVE=$!
    started $SERVE
    n=0
    while ! grep -q "listening on" "$TMP/serve.err" && kill -0 $SERVE 2>/dev/null &&
        [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if ! grep -q "listening on" "$TMP/serve.err"; then
        echo "nimrank serve: did not start:"; tail -n 5 "$TMP/serve.err"
        exit 1
    fi
}
# The head of a wrk script posting $BENCH_BODY with key $BENCH_KEY; each bench adds its done().
wrk_post() {
    cat <<'EOF'
-- One fixed POST (the body from $BENCH_BODY); done() prints one line for the shell.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
EOF
}
# wrk_result: wrk's done() for the timed benches: "RESULT requests seconds p50_us p99_us errors".
wrk_result() {
    cat <<'EOF'
function done(s, lat)
  local e = s.errors
  io.write(("RESULT %d %.6f %d %d %d\n"):format(s.requests, s.duration / 1e6,
    lat:percentile(50), lat:percentile(99), e.status + e.connect + e.read + e.write + e.timeout))
end
EOF
}
