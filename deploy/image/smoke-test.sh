#!/bin/sh
# Run the image as a deployment would, against this machine's Redis and PostgreSQL, and check that it
# answers: `echotune pipeline` once (small synthetic data, a throwaway database with the schemas
# ECHOTUNE_DATABASE_URL gives Dagster and MLflow), then every long-running role: the API and a worker
# with read-only root filesystems as in deploy/kubernetes/, the Dagster code server and the MLflow UI.
# Checks /health/ready (model loaded, worker alive), one recommendation, the released model in the
# MLflow UI, and Docker's HEALTHCHECK of all four containers. Everything it creates (containers,
# volumes, the database, the Redis keys of its own prefix) is removed at the end, whatever happened;
# SMOKE_KEEP=1 keeps it for a post-mortem.
#
#   deploy/image/smoke-test.sh [IMAGE]
#
# SMOKE_REDIS_URL (default redis://127.0.0.1:6379/0) and SMOKE_PG_URL (a libpq URL with a user that
# may create databases, default postgresql://postgres@127.0.0.1:5432) choose the services; the
# containers use the host's network to reach them.
set -eu

image=${1:-echotune:latest}
docker=${DOCKER:-docker}
redis_url=${SMOKE_REDIS_URL:-redis://127.0.0.1:6379/0}
pg_url=${SMOKE_PG_URL:-postgresql://postgres@127.0.0.1:5432}
users=300

run=smoke$(date +%s)$$
prefix=echotune-$run
database=echotune_$run
database_url=$pg_url/$database
# the store the settings derive from ECHOTUNE_DATABASE_URL (schema mlflow), spelled out so that an image
# whose settings predate that derivation puts MLflow in the same place
mlflow_uri=postgresql+psycopg2://${pg_url#postgresql://}/$database?options=-csearch_path%3Dmlflow
api=echotune-$run-api
worker=echotune-$run-worker
code_server=echotune-$run-code-server
mlflow=echotune-$run-mlflow
containers="$api $worker $code_server $mlflow"
data=echotune-$run-data
artifacts=echotune-$run-artifacts
key=et_smoke_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
metrics_port=$(free_port)
grpc_port=$(free_port)
mlflow_port=$(free_port)
elapsed() { echo $(( $(date +%s) - $1 )); }

in_image() { "$docker" run --rm --network host "$image" python -c "$@"; }

cleanup() {
    status=$?
    if [ "$status" != 0 ]; then
        for c in $containers; do
            echo "--- last lines of $c" >&2
            "$docker" logs --tail 40 "$c" 2>&1 | cut -c1-400 >&2 || true
        done
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        echo "kept: containers $containers, volumes $data $artifacts, database $database, Redis prefix $prefix"
        exit "$status"
    fi
    "$docker" rm -f -v $containers >/dev/null 2>&1 || true
    "$docker" volume rm "$data" "$artifacts" >/dev/null 2>&1 || true
    in_image "import sys, psycopg2
c = psycopg2.connect(sys.argv[1] + '/postgres'); c.autocommit = True
c.cursor().execute('DROP DATABASE IF EXISTS ' + sys.argv[2] + ' WITH (FORCE)')" "$pg_url" "$database" || true
    in_image "import sys, redis
r = redis.Redis.from_url(sys.argv[1]); keys = list(r.scan_iter(match=sys.argv[2] + ':*', count=1000))
for i in range(0, len(keys), 500): r.delete(*keys[i:i + 500])" "$redis_url" "$prefix" || true
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "smoke test FAILED: $*" >&2; exit 1; }

"$docker" image inspect "$image" >/dev/null 2>&1 || fail "no image $image: build it first (make image)"
echo "image $image: $("$docker" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"

in_image "import sys, psycopg2
c = psycopg2.connect(sys.argv[1] + '/postgres'); c.autocommit = True
c.cursor().execute('CREATE DATABASE ' + sys.argv[2]); c.close()
c = psycopg2.connect(sys.argv[1] + '/' + sys.argv[2]); c.autocommit = True
c.cursor().execute('CREATE SCHEMA dagster; CREATE SCHEMA mlflow')" "$pg_url" "$database" || fail "cannot create database $database at $pg_url"
in_image "import sys, redis; redis.Redis.from_url(sys.argv[1]).ping()" "$redis_url" || fail "no Redis answers at $redis_url"

echo "1/4 echotune pipeline: $users users, 2,000 tracks, 30,000 events, PostgreSQL database $database, Redis prefix $prefix"
start=$(date +%s)
"$docker" run --rm --network host \
    -e ECHOTUNE_REDIS_URL="$redis_url" -e ECHOTUNE_REDIS_PREFIX="$prefix" \
    -e ECHOTUNE_DATABASE_URL="$database_url" -e ECHOTUNE_MLFLOW_TRACKING_URI="$mlflow_uri" \
    -e ECHOTUNE_SYNTH_TRACKS=2000 -e ECHOTUNE_SYNTH_USERS="$users" -e ECHOTUNE_SYNTH_EVENTS=30000 \
    -v "$data:/app/data" -v "$artifacts:/app/mlruns/artifacts" \
    "$image" pipeline > "/tmp/$run-pipeline.log" 2>&1 || { tail -40 "/tmp/$run-pipeline.log" >&2; fail "echotune pipeline exited non-zero (log: /tmp/$run-pipeline.log)"; }
echo "    done in $(elapsed "$start") s"

echo "2/4 API on :$api_port and a worker (metrics :$metrics_port), read-only root filesystems; code server on :$grpc_port, MLflow UI on :$mlflow_port"
start=$(date +%s)
# var/ as an anonymous volume (the spool, the serving cache), as the manifests' emptyDir
"$docker" run -d --name "$api" --network host --read-only --tmpfs /tmp \
    -e ECHOTUNE_REDIS_URL="$redis_url" -e ECHOTUNE_REDIS_PREFIX="$prefix" \
    -e ECHOTUNE_API_PORT="$api_port" -e ECHOTUNE_API_KEYS="$key:client" \
    -v "$data:/app/data" -v /app/var "$image" serve >/dev/null
"$docker" run -d --name "$worker" --network host --read-only --tmpfs /tmp \
    -e ECHOTUNE_REDIS_URL="$redis_url" -e ECHOTUNE_REDIS_PREFIX="$prefix" -e ECHOTUNE_WORKER_METRICS_PORT="$metrics_port" \
    -v "$data:/app/data" -v /app/var "$image" worker >/dev/null
"$docker" run -d --name "$code_server" --network host \
    -e ECHOTUNE_REDIS_URL="$redis_url" -e ECHOTUNE_REDIS_PREFIX="$prefix" -e ECHOTUNE_DATABASE_URL="$database_url" \
    -e ECHOTUNE_MLFLOW_TRACKING_URI="$mlflow_uri" -v "$data:/app/data" "$image" code-server -p "$grpc_port" >/dev/null
"$docker" run -d --name "$mlflow" --network host -e ECHOTUNE_MLFLOW_TRACKING_URI="$mlflow_uri" \
    -v "$artifacts:/app/mlruns/artifacts" "$image" mlflow-ui --port "$mlflow_port" --workers 1 >/dev/null

deadline=$(( $(date +%s) + 180 ))
until ready=$(curl -fsS "http://127.0.0.1:$api_port/health/ready" 2>/dev/null) && echo "$ready" | grep -q '"worker_alive":true'; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "GET /health/ready did not answer 200 with a live worker within 180 s (last: ${ready:-no answer})"
    [ "$("$docker" inspect --format '{{.State.Running}}' "$api")" = true ] || fail "the API container exited"
    [ "$("$docker" inspect --format '{{.State.Running}}' "$worker")" = true ] || fail "the worker container exited"
    sleep 1
done
echo "    ready in $(elapsed "$start") s"
echo "    GET /health/ready -> 200 $ready"

echo "3/4 one recommendation"
user=$(printf "user_%0${#users}d" 1)
response=$(curl -sS -w '\n%{http_code} %{time_total}' -H "X-API-Key: $key" "http://127.0.0.1:$api_port/recommendations/$user?count=5")
code=$(echo "$response" | tail -1)
echo "$response" | head -n -1 | python3 -c '
import json, sys
code, seconds = sys.argv[1].split()
body = json.load(sys.stdin)
user, algorithm, version, confidence, degraded = (body.get(k) for k in ("user_id", "algorithm", "model_version", "confidence", "degraded"))
print(f"    GET /recommendations/{user}?count=5 -> {code} in {float(seconds) * 1000:.0f} ms: algorithm {algorithm}, "
      f"model version {version}, confidence {confidence}, degraded {degraded}")
for track in body.get("tracks", []):
    print("     ", {k: track[k] for k in list(track)[:4]})
sys.exit(0 if code == "200" and len(body.get("tracks", [])) == 5 and not body.get("degraded") else 1)
' "$code" || fail "expected 200 with 5 tracks, not degraded"

echo "4/4 the MLflow UI lists the released model; Docker HEALTHCHECK of every role (every 30 s)"
deadline=$(( $(date +%s) + 120 ))
until models=$(curl -fsS "http://127.0.0.1:$mlflow_port/api/2.0/mlflow/registered-models/search" 2>/dev/null); do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the MLflow UI did not answer within 120 s"
    sleep 2
done
echo "$models" | python3 -c '
import json, sys
models = json.load(sys.stdin).get("registered_models", [])
aliases = {m["name"]: sorted(a["alias"] for a in m.get("aliases", [])) for m in models}
print("    MLflow UI: registered models and their aliases", aliases)
sys.exit(0 if any("champion" in names for names in aliases.values()) else 1)
' || fail "the MLflow UI lists no model with the alias champion: $models"
# until every role is healthy: one that started slower than the start period (MLflow, on a busy
# machine) is reported unhealthy first and turns healthy at its next check
deadline=$(( $(date +%s) + 180 ))
while :; do
    health=""
    for c in $containers; do health="$health ${c#echotune-$run-}=$("$docker" inspect --format '{{.State.Health.Status}}' "$c")"; done
    case "$health" in *=starting*|*=unhealthy*) ;; *) break ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 2
done
echo "    health:$health"
case "$health" in
    *=starting*|*=unhealthy*)
        for c in $containers; do
            "$docker" inspect --format "    $c: {{range .State.Health.Log}}{{.Output}} {{end}}" "$c" | tail -c 600 >&2
        done
        fail "HEALTHCHECK:$health" ;;
esac
"$docker" stats --no-stream --format '    {{.Name}}: {{.MemUsage}} memory, {{.CPUPerc}} CPU' $containers
echo "smoke test passed"
