#!/usr/bin/env bash
# A local 3-node Soko cluster for trying scale-out: three `soko serve` processes with data dirs of their own, one
# PostgreSQL database (on the local server) and one S3 bucket, sharing the master key and root credentials.
#
#   scripts/cluster.sh start [--dir DIR] [--port P] [--nodes N] [--database NAME] [--s3 moto|radosgw]
#                            [--s3-endpoint URL]
#   scripts/cluster.sh status [--dir DIR]
#   scripts/cluster.sh soko [--dir DIR] ARGS…     a `soko` admin command on the cluster (account list, fsck, jobs…)
#   scripts/cluster.sh stop [--dir DIR]            stops what start started and drops its database
#
# Defaults: DIR ./soko-cluster, nodes on 127.0.0.1:5001-5003, database soko_cluster on
# postgresql://postgres@127.0.0.1:5432 (SOKO_CLUSTER_PG_URL overrides the server), and a moto S3 server on a free
# port started from the venv (its bucket lives in memory: it is gone after stop). --s3 radosgw starts Ceph's RADOS
# Gateway instead (scripts/ceph-rgw.sh: Debian's ceph packages, installed when missing; ~5 s, ~215 MiB; its data
# is deleted by stop), the S3 server the tests run the cluster on. --s3-endpoint URL uses an S3
# server that already runs instead (radosgw, MinIO…): the bucket's credentials are the calling shell's
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, and a new bucket is created in it.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."

command=${1:-}
[ $# -gt 0 ] && shift
dir=soko-cluster dir_arg="" port=5001 nodes=3 database=soko_cluster s3=moto s3_endpoint=""
while [ $# -gt 0 ] && [ "$command" != soko -o "${1:-}" = --dir ]; do
  case "$1" in
    --dir) dir=$2 dir_arg=" --dir $2"; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --database) database=$2; shift 2 ;;
    --s3) s3=$2; shift 2 ;;
    --s3-endpoint) s3_endpoint=$2; shift 2 ;;
    *) echo "cluster.sh: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
case "$dir" in /*) ;; *) dir=$caller/$dir ;; esac  # relative to where it was run, not to the checkout
pg_server=${SOKO_CLUSTER_PG_URL:-postgresql://postgres@127.0.0.1:5432}
py=.venv/bin/python

die() { echo "cluster.sh: $*" >&2; exit 1; }
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Waits until URL answers 200; on timeout names the log to read.
wait_http() {
  local url=$1 log=$2 pidfile=$3
  for _ in $(seq 600); do
    curl -fs -o /dev/null --max-time 1 "$url" && return 0
    running "$pidfile" || die "$(basename "$log" .log) exited while starting; see $log"
    sleep 0.1
  done
  die "$url did not answer 200 within 60 s; see $log"
}

start() {
  [ "$command" = start ] || return 0
  for pidfile in "$dir"/*.pid; do
    running "$pidfile" && die "a cluster runs in $dir already (scripts/cluster.sh stop$dir_arg first)"
  done
  scripts/bootstrap.sh
  case "$s3" in moto | radosgw) ;; *) die "--s3 takes moto or radosgw, not $s3" ;; esac
  if [ -z "$s3_endpoint" ] && [ "$s3" = moto ] && [ ! -x .venv/bin/moto_server ]; then  # moto is a test dependency: pin from there
    moto=$("$py" -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))
["project"]["optional-dependencies"]["test"] if d.startswith("moto")))')
    echo "cluster.sh: installing $moto into .venv (the local S3 server)"
    "$py" -m pip install --quiet "$moto"
  fi
  rm -rf "$dir" && mkdir -p "$dir" && chmod 700 "$dir"

  psql "$pg_server/postgres" -qAtc "select 1" >/dev/null 2>&1 \
    || die "PostgreSQL does not answer at $pg_server (start it, or set SOKO_CLUSTER_PG_URL)"
  psql "$pg_server/postgres" -qc "create database \"$database\"" >/dev/null \
    || die "could not create database $database (it may exist: drop it or pick another with --database)"
  echo "$database" > "$dir/database"  # stop drops only the database start created

  local bucket_key bucket_secret
  if [ -z "$s3_endpoint" ] && [ "$s3" = radosgw ]; then
    scripts/ceph-rgw.sh install
    read -r s3_endpoint bucket_key bucket_secret < <(scripts/ceph-rgw.sh start "$dir/radosgw") \
      || die "radosgw did not start; see $dir/radosgw/log"
  elif [ -z "$s3_endpoint" ]; then
    local s3_port
    s3_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    s3_endpoint=http://127.0.0.1:$s3_port
    setsid .venv/bin/moto_server -H 127.0.0.1 -p "$s3_port" >"$dir/s3.log" 2>&1 < /dev/null &
    echo $! > "$dir/s3.pid"
    wait_http "$s3_endpoint/moto-api/" "$dir/s3.log" "$dir/s3.pid"
    bucket_key=AKIALOCALS3CLUSTER01 bucket_secret=$("$py" -c 'import secrets; print(secrets.token_hex(20))')
  else
    bucket_key=${AWS_ACCESS_KEY_ID:?--s3-endpoint needs the bucket credentials in AWS_ACCESS_KEY_ID}
    bucket_secret=${AWS_SECRET_ACCESS_KEY:?--s3-endpoint needs AWS_SECRET_ACCESS_KEY}
  fi
  local bucket
  bucket=soko-cluster-$("$py" -c 'import secrets; print(secrets.token_hex(4))')
  AWS_ACCESS_KEY_ID=$bucket_key AWS_SECRET_ACCESS_KEY=$bucket_secret "$py" - "$s3_endpoint" "$bucket" <<'EOF'
import sys, botocore.session
from botocore.config import Config
s3 = botocore.session.Session().create_client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                                             config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket=sys.argv[2])
EOF

  # What every node shares, and nothing else: in a real deployment this is each node's environment.
  local root_id root_secret
  root_id=AKIA$("$py" -c 'import secrets, string; print("".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16)))')
  root_secret=$("$py" -c 'import secrets; print(secrets.token_urlsafe(30)[:40])')
  (umask 077; cat > "$dir/cluster.env" <<EOF
SOKO_DATABASE_URL='postgresql+psycopg://${pg_server#postgresql://}/$database'
SOKO_STORAGE_URL='s3://$bucket/registry?endpoint_url=$s3_endpoint&addressing_style=path'
SOKO_MASTER_KEY='$("$py" -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')'
SOKO_ROOT_ACCESS_KEY_ID='$root_id'
SOKO_ROOT_SECRET_ACCESS_KEY='$root_secret'
AWS_ACCESS_KEY_ID='$bucket_key'
AWS_SECRET_ACCESS_KEY='$bucket_secret'
EOF
  cat > "$dir/client.env" <<EOF
export AWS_ACCESS_KEY_ID=$root_id
export AWS_SECRET_ACCESS_KEY=$root_secret
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
EOF
  )
  for i in $(seq "$nodes"); do  # all at once: the nodes race for the migration lock, as they would in production
    (set -a; . "$dir/cluster.env"; set +a
     exec setsid .venv/bin/soko serve --listen "127.0.0.1:$((port + i - 1))" --data-dir "$dir/node-$i" \
       >"$dir/node-$i.log" 2>&1 < /dev/null) &
    echo $! > "$dir/node-$i.pid"
  done
  for i in $(seq "$nodes"); do
    wait_http "http://127.0.0.1:$((port + i - 1))/readyz" "$dir/node-$i.log" "$dir/node-$i.pid"
  done
  local endpoints=""
  for i in $(seq "$nodes"); do endpoints+=" 127.0.0.1:$((port + i - 1))"; done
  cat <<EOF
Soko cluster up: $nodes nodes on one PostgreSQL database ($database) and one S3 bucket ($bucket at $s3_endpoint).
  nodes:$endpoints   (logs and data dirs in $dir; blobs stream through the nodes, which decrypt them)

Use it (any node serves every request; clients below talk to the first):
  source $dir/client.env      # the root key; AWS_ENDPOINT_URL=http://127.0.0.1:$port
  aws ecr create-repository --repository-name team/app
  aws ecr get-login-password | skopeo login --tls-verify=false -u AWS --password-stdin 127.0.0.1:$port
  skopeo copy --dest-tls-verify=false oci:app:v1 docker://127.0.0.1:$port/team/app:v1   # app: made as in the README quick start
Round robin: spread requests over$endpoints (or put a load balancer in front: README, "Scale-out"), e.g.
  for p in \$(seq $port $((port + nodes - 1))); do
    aws --endpoint-url http://127.0.0.1:\$p ecr describe-images --repository-name team/app
    aws ecr get-login-password | skopeo login --tls-verify=false -u AWS --password-stdin 127.0.0.1:\$p
    skopeo inspect --tls-verify=false docker://127.0.0.1:\$p/team/app:v1   # the same image on every node
  done
Admin: scripts/cluster.sh soko$dir_arg account list   (any soko command, on the cluster's database and bucket)
Stop:  scripts/cluster.sh stop$dir_arg
EOF
}

status() {
  [ "$command" = status ] || return 0
  [ -d "$dir" ] || die "no cluster in $dir"
  for pidfile in "$dir"/*.pid; do
    name=$(basename "$pidfile" .pid)
    if running "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; fi
  done
}

# SIGTERM to the processes these pid files name (the ones start started), then waits for them.
terminate() {
  local pids=() pid
  for pidfile in "$@"; do
    running "$pidfile" && kill -TERM "$(cat "$pidfile")" && pids+=("$(cat "$pidfile")")
    rm -f "$pidfile"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "cluster.sh: pid $pid ignored SIGTERM for 30 s: killing it" >&2; kill -KILL "$pid"; }
  done
  return 0
}

stop() {
  [ "$command" = stop ] || return 0
  [ -d "$dir" ] || die "no cluster in $dir"
  shopt -s nullglob
  terminate "$dir"/node-*.pid  # nodes first: they finish what is in flight against the bucket and database
  terminate "$dir"/s3.pid
  if [ -d "$dir/radosgw" ]; then
    scripts/ceph-rgw.sh destroy "$dir/radosgw"
  fi
  if [ -f "$dir/database" ]; then
    psql "$pg_server/postgres" -qc "drop database if exists \"$(cat "$dir/database")\"" >/dev/null
    rm -f "$dir/database"
  fi
  echo "cluster in $dir stopped; its database dropped (logs kept in $dir)"
}

admin() {
  [ "$command" = soko ] || return 0
  [ -f "$dir/cluster.env" ] || die "no cluster in $dir"
  set -a; . "$dir/cluster.env"; set +a
  SOKO_DATA_DIR=$dir/admin exec .venv/bin/soko "$@"
}

case "$command" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  soko) admin "$@" ;;
  *) echo "usage: $0 start|status|stop|soko … [--dir DIR] (see the comment at the top of $0)" >&2; exit 2 ;;
esac
