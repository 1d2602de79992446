#!/usr/bin/env bash
# A real S3 server for tests and for trying Soko on object storage: Ceph's RADOS Gateway on a single-node Ceph
# cluster (one monitor, one OSD on a sparse file-backed BlueStore, no manager), all on loopback, no systemd.
#
#   scripts/ceph-rgw.sh start DIR    create the cluster in DIR on first use (else restart what is not running), wait
#                                    until S3 answers, write DIR/env and print "ENDPOINT ACCESS_KEY SECRET_KEY"
#   scripts/ceph-rgw.sh stop DIR     stop the daemons (DIR is kept: start again reuses cluster, user and buckets)
#   scripts/ceph-rgw.sh destroy DIR  kill the daemons at once and delete DIR with all its data
#   scripts/ceph-rgw.sh install      install Debian's ceph-mon ceph-osd radosgw ceph-common when missing
#
# DIR/env is shell syntax (RGW_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3,
# AWS_DEFAULT_REGION): `. DIR/env` and the AWS CLI or Soko reach the gateway. Everything, logs included, stays in DIR
# (mode 0700). S3 is path-style (no DNS name is configured). Start to first PUT takes ~5 s on two cores.
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)

usage() {
  sed -n '2,14p' "$0" >&2
  exit 2
}

install_packages() {
  local tool missing=0
  for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool osdmaptool; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ceph-rgw: installing ${PACKAGES[*]} (apt)" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_string() {  # $1 characters from the set $2
  local out
  out="$(LC_ALL=C tr -dc "$2" </dev/urandom | head -c "$1")" || true  # head closing the pipe is not an error
  printf '%s' "$out"
}

logged() {  # run "$@" with its output in DIR/log/$1.log, shown when it fails
  local log="$DIR/log/$1.log"
  shift
  "$@" >>"$log" 2>&1 9>&- || {  # 9: the lock, which daemons must not inherit
    echo "ceph-rgw: failed: $*" >&2
    tail -n 20 "$log" >&2
    exit 1
  }
}

alive() {  # the daemon whose pid file is $1 runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

s3_answers() {
  python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass  # any S3 answer (e.g. 403 for an anonymous request) means the gateway serves
except OSError:
    sys.exit(1)
EOF
}

write_config() {
  local mon_port="$1" rgw_port="$2"
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $(cat /proc/sys/kernel/random/uuid)
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = false
crash dir = $DIR/crash
# One OSD: pools of size 1 with few placement groups; no manager runs, so nothing autoscales them.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
[mon]
mon data = $DIR/mon
# Commit cluster changes every 50 ms instead of every second: start to first PUT ~5 s instead of ~21 s.
paxos propose interval = 0.05
mon data avail warn = 1
mon data avail crit = 0
[osd]
osd data = $DIR/osd
keyring = $DIR/osd/keyring
osd objectstore = bluestore
bluestore block create = true
# A sparse file: it takes only the space written (and deleted objects give it back after RGW's GC wait).
bluestore block size = 21474836480
bluestore fsck on mkfs = false
osd memory target = 536870912
# One op shard instead of five: each takes ~0.3 s to set up at start, and two cores gain nothing from more.
osd op num shards = 1
osd op num threads per shard = 2
debug rocksdb = 0/0
debug bluefs = 0/0
debug bluestore = 0/0
debug bdev = 0/0
[client.rgw.s3]
keyring = $DIR/rgw.keyring
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
# Deleted objects' space is reclaimed after 5 min (AWS-like immediate deletion is not something RGW offers).
rgw gc obj min wait = 300
rgw gc processor period = 300
EOF
}

create() {
  local mon_port rgw_port access secret
  kill_daemons  # what a start interrupted before it wrote DIR/env left behind
  rm -rf "${DIR:?}"/{mon,osd,rgw,run,log,crash} "$DIR"/{ceph.conf,keyring,rgw.keyring,monmap,osdmap,user.done}
  mon_port="$(free_port)"
  rgw_port="$(free_port)"
  mkdir -p "$DIR"/{mon,osd,rgw,run,log,crash}
  write_config "$mon_port" "$rgw_port"
  # Every key is made here and handed to the monitor at mkfs: no `ceph auth` round trips at start.
  {
    ceph-authtool "$DIR/keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *'
    ceph-authtool "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *'
    ceph-authtool "$DIR/osd/keyring" --create-keyring --gen-key -n osd.0 \
      --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
    ceph-authtool "$DIR/rgw.keyring" --create-keyring --gen-key -n client.rgw.s3 --cap mon 'allow rw' --cap osd 'allow rwx'
  } >/dev/null
  cat "$DIR/osd/keyring" "$DIR/rgw.keyring" >>"$DIR/keyring"
  monmaptool --create --fsid "$(sed -n 's/^fsid = //p' "$DIR/ceph.conf")" --addv a "[v2:127.0.0.1:$mon_port]" \
    "$DIR/monmap" >/dev/null
  osdmaptool --createsimple 1 --clobber "$DIR/osdmap" >/dev/null 2>&1  # osd.0 exists from the first map on
  logged mkfs ceph-mon -c "$DIR/ceph.conf" -i a --mkfs --monmap "$DIR/monmap" --osdmap "$DIR/osdmap" --keyring "$DIR/keyring"
  logged mkfs ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --no-mon-config --osd-uuid "$(cat /proc/sys/kernel/random/uuid)"
  access="$(random_string 20 'A-Z0-9')"
  secret="$(random_string 40 'A-Za-z0-9')"
  cat >"$DIR/env" <<EOF
export RGW_ENDPOINT=http://127.0.0.1:$rgw_port
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$rgw_port
export AWS_DEFAULT_REGION=us-east-1
EOF
}

start() {
  [ -f "$DIR/env" ] || create
  # shellcheck disable=SC1091
  . "$DIR/env"
  local conf="$DIR/ceph.conf"
  alive "$DIR/run/mon.a.pid" || logged start ceph-mon -c "$conf" -i a
  alive "$DIR/run/osd.0.pid" || logged start ceph-osd -c "$conf" -i 0
  alive "$DIR/run/client.rgw.s3.pid" || logged start radosgw -c "$conf" -n client.rgw.s3
  local deadline=$((SECONDS + ${CEPH_RGW_START_TIMEOUT:-120}))
  until s3_answers "$RGW_ENDPOINT"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! alive "$DIR/run/client.rgw.s3.pid"; then
      echo "ceph-rgw: the gateway did not come up at $RGW_ENDPOINT; logs in $DIR/log" >&2
      tail -n 20 "$DIR/log/client.rgw.s3.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  if [ ! -f "$DIR/user.done" ]; then
    logged user radosgw-admin -c "$conf" user create --uid=soko --display-name="Soko tests" \
      --access-key="$AWS_ACCESS_KEY_ID" --secret-key="$AWS_SECRET_ACCESS_KEY"
    touch "$DIR/user.done"
  fi
  echo "$RGW_ENDPOINT $AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY"
}

stop() {
  # The gateway keeps no state of its own: it is killed outright (its TERM handling takes ~4 s). Then the OSD and
  # the monitor get TERM, one after the other (an OSD whose monitor is gone waits 5 s to report its shutdown), and
  # are killed if still there after 15 s; both recover from a kill as from a power cut.
  local name pid signal deadline
  for name in client.rgw.s3 osd.0 mon.a; do
    alive "$DIR/run/$name.pid" || continue
    pid="$(cat "$DIR/run/$name.pid")"
    signal=TERM
    [ "$name" = client.rgw.s3 ] && signal=KILL
    kill -"$signal" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
      [ "$SECONDS" -lt "$deadline" ] || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.05
    done
    rm -f "$DIR/run/$name.pid"
  done
}

kill_daemons() {
  local name
  for name in client.rgw.s3 osd.0 mon.a; do
    if alive "$DIR/run/$name.pid"; then kill -KILL "$(cat "$DIR/run/$name.pid")" 2>/dev/null || true; fi
  done
}

destroy() {
  kill_daemons
  rm -rf "$DIR"
}

command="${1:-}"
case "$command" in
  install) install_packages ;;
  start | stop | destroy)
    [ -n "${2:-}" ] || usage
    umask 077
    mkdir -p "$2"
    chmod 700 "$2"
    DIR="$(cd "$2" && pwd)"
    exec 9>>"$DIR/.lock"
    flock 9  # one command at a time per directory
    case "$command" in
      start)
        install_packages
        start
        ;;
      stop) stop ;;
      destroy) destroy ;;
    esac
    ;;
  *) usage ;;
esac
