#!/usr/bin/env bash
# A real one-node SLURM cluster with accounting, for tests.  Debian/Ubuntu, run as root.
#
#   tests/slurm/cluster.sh install   apt-get slurm-wlm, munge, slurmdbd, mariadb-server
#   tests/slurm/cluster.sh up        install (if needed), write the config, start every daemon,
#                                    register cluster/account, wait until the node is idle
#   tests/slurm/cluster.sh smoke     sbatch --wrap hostname, wait, require sacct State=COMPLETED
#   tests/slurm/cluster.sh status    daemons, sinfo, sacctmgr
#   tests/slurm/cluster.sh down      stop every daemon started by `up` (by pid file); --purge
#                                    also deletes the state directory and the generated configs
#
# The node has placeholder `gpu` gres (SEAS_SLURM_GPUS; no real GPU), so --gpus requests schedule.
# Traffic stays on loopback: every configured address is 127.0.0.1 (node `localhost`, controller,
# slurmdbd), slurmd binds 127.0.0.1 only (CommunicationParameters=NoInAddrAny) and MariaDB listens on
# a unix socket only (skip-networking).  slurmctld (6817) and slurmdbd (6819) of SLURM 22.05 still
# listen on all interfaces (munge-authenticated); on a shared host, firewall those ports.
# No systemd, no cgroups: proctrack/linuxproc, task/none,
# jobacct_gather/linux.  All daemons run as this machine's root (SlurmUser=root).
#
# Environment (all optional):
#   SEAS_SLURM_STATE   state dir (spool, logs, database)   default /var/tmp/seas-slurm
#   SEAS_SLURM_CLUSTER cluster name                         default seas
#   SEAS_SLURM_ACCOUNT account registered for root          default seas
#   SEAS_SLURM_PORTS   "ctld slurmd dbd" ports              default "6817 6818 6819"
#   SEAS_SLURM_CPUS    node CPUs                            default $(nproc)
#   SEAS_SLURM_GPUS    placeholder `gpu` gres of the node   default 1 (no real GPU: scheduling only)
# The config is written to /etc/slurm (where the Debian client tools look); a file there that
# this script did not write is never overwritten.
set -euo pipefail

STATE=${SEAS_SLURM_STATE:-/var/tmp/seas-slurm}
CLUSTER=${SEAS_SLURM_CLUSTER:-seas}
ACCOUNT=${SEAS_SLURM_ACCOUNT:-seas}
read -r CTLD_PORT SLURMD_PORT DBD_PORT <<<"${SEAS_SLURM_PORTS:-6817 6818 6819}"
CPUS=${SEAS_SLURM_CPUS:-$(nproc)}
GPUS=${SEAS_SLURM_GPUS:-1}
ETC=/etc/slurm
MARK="# written by seas-bench tests/slurm/cluster.sh"
DB_SOCK=/run/mysqld/mysqld.sock   # libmariadb's default; slurmdbd connects to "localhost" there

log() { printf '[cluster.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (starts system daemons)"; }

do_install() {
  need_root
  local pkgs=(slurm-wlm slurm-client slurmdbd munge mariadb-server)
  if dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -vq 'install ok installed' \
     || [[ $(dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | wc -l) -ne ${#pkgs[@]} ]]; then
    log "apt-get install ${pkgs[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
  else
    log "packages already installed"
  fi
}

# write FILE MODE: stdin -> FILE, refusing to clobber a file we did not write.
write_conf() {
  local f=$1 mode=$2 tmp
  if [[ -e $f ]] && ! grep -qF "$MARK" "$f"; then
    die "$f exists and was not written by this script; move it away first"
  fi
  tmp=$(mktemp "$f.XXXX")
  { echo "$MARK"; cat; } >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$f"
}

write_configs() {
  local mem
  mem=$(free -m | awk '/^Mem:/{print int($2*0.9)}')
  mkdir -p "$ETC" "$STATE"/{ctld,slurmd,log,run,mysql,mysql-run}
  write_conf "$ETC/slurm.conf" 644 <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# accounting: slurmdbd (the snakemake executor asks sacct for job states)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations
# keep sbatch --comment (the snakemake executor writes rule_<name> there) in the database
AccountingStoreFlags=job_comment
# record GPU allocations too (sacct -o AllocTRES shows gres/gpu=N)
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# short timers: a test cluster should react fast
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  # Placeholder GPUs: jobs asking --gpus=N are scheduled like on a GPU node -- at most $GPUS GPUs' worth at a
  # time, CUDA_VISIBLE_DEVICES set -- but there is no GPU; the test slice runs on the CPU (device: cpu).
  # slurmd drops file-less GPUs, so each is a copy of /dev/null (char 1,3) named fakegpuN.
  mkdir -p "$STATE/dev"
  for ((i = 0; i < GPUS; i++)); do
    [[ -c $STATE/dev/fakegpu$i ]] || mknod -m 666 "$STATE/dev/fakegpu$i" c 1 3
  done
  write_conf "$ETC/gres.conf" 644 <<EOF
AutoDetect=off
NodeName=localhost Name=gpu Count=$GPUS File=$STATE/dev/fakegpu[0-$((GPUS - 1))]
EOF
  # Not used with proctrack/linuxproc + task/none, but the tools expect the file to exist.
  write_conf "$ETC/cgroup.conf" 644 <<EOF
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
EOF
  write_conf "$ETC/slurmdbd.conf" 600 <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${t}s waiting for $what (logs: $STATE/log, $STATE/mysql-run)"
    sleep 0.5
  done
}

start_munge() {
  # a munged that this script did not start (no marker) is used as is and left running by `down`
  if pid_alive /run/munge/munged.pid; then log "munged already running"; return; fi
  rm -f "$STATE/run/munged.ours"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  touch "$STATE/run/munged.ours"
  wait_for 20 munge bash -c 'munge -n | unmunge'
}

start_mariadb() {
  if pid_alive "$STATE/mysql-run/mariadb.pid"; then log "mariadb already running"; return; fi
  chown mysql:mysql "$STATE/mysql" "$STATE/mysql-run"
  if [[ ! -d $STATE/mysql/mysql ]]; then
    log "initialising mariadb data dir $STATE/mysql"
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" \
      --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed, see $STATE/log/mariadb-install.log"
  fi
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [[ -S $DB_SOCK ]] && mariadb --socket="$DB_SOCK" -e 'SELECT 1' >/dev/null 2>&1; then
    die "another MariaDB/MySQL server already listens on $DB_SOCK; stop it first"
  fi
  log "starting mariadbd (unix socket only)"
  # --no-defaults: ignore /etc/mysql; the socket is the one libmariadb clients use by default.
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
    --socket="$DB_SOCK" --skip-networking --pid-file="$STATE/mysql-run/mariadb.pid" \
    --log-error="$STATE/mysql-run/mariadb.log" --innodb-buffer-pool-size=64M \
    --innodb-log-file-size=16M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  wait_for 60 mariadb mariadb --socket="$DB_SOCK" -e 'SELECT 1'
}

start_slurmdbd() {
  if pid_alive "$STATE/run/slurmdbd.pid"; then log "slurmdbd already running"; return; fi
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
}

register_accounting() {
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    log "sacctmgr: add cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >&2
  fi
  if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    log "sacctmgr: add account $ACCOUNT"
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=seas-bench Organization=seas-bench >&2
  fi
  if ! sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user | grep -qx root; then
    log "sacctmgr: add user root to account $ACCOUNT (default)"
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >&2
  fi
}

start_slurmctld() {
  if pid_alive "$STATE/run/slurmctld.pid"; then log "slurmctld already running"; return; fi
  log "starting slurmctld"
  /usr/sbin/slurmctld
  wait_for 60 slurmctld scontrol ping
}

start_slurmd() {
  if pid_alive "$STATE/run/slurmd.pid"; then log "slurmd already running"; return; fi
  log "starting slurmd -N localhost"
  /usr/sbin/slurmd -N localhost
  # a drain left in the saved state by an earlier configuration (e.g. another GPU count) outlives a restart
  wait_for 30 "slurmd registration" bash -c '! sinfo -h -n localhost -o %T | grep -Eq "^(unknown|inval)"'
  if sinfo -h -n localhost -o %T | grep -Eq "drain|down"; then
    log "node localhost is $(sinfo -h -n localhost -o '%T (%E)'); resuming it"
    scontrol update NodeName=localhost State=RESUME
  fi
  wait_for 90 "node localhost idle" bash -c \
    'sinfo -h -n localhost -o %T | grep -Eq "^(idle|mixed|allocated)"'
}

do_up() {
  need_root
  local t0=$SECONDS
  do_install
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  register_accounting
  start_slurmctld
  start_slurmd
  log "cluster up in $((SECONDS - t0))s: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"
}

do_smoke() {
  local out jid state end
  out=$(mktemp -d)
  jid=$(sbatch --parsable -p debug -t 1 --mem=100 -o "$out/%j.out" --wrap hostname)
  jid=${jid%%;*}
  log "smoke job $jid submitted"
  end=$((SECONDS + 120))
  while :; do
    # the first accounting record of a job is a bare "allocation"; wait for the full one
    state=$(sacct -n -X -P -j "$jid" -o JobName,State | head -1)
    [[ $state == wrap\|COMPLETED ]] && break
    state=${state#*|}
    [[ -n $state && ! $state =~ ^(PENDING|RUNNING|COMPLETED)$ ]] && die "smoke job $jid: sacct State=$state"
    ((SECONDS < end)) || die "smoke job $jid not COMPLETED after 120s (sacct State='$state')"
    sleep 1
  done
  log "smoke job $jid COMPLETED, output: $(cat "$out/$jid.out")"
  sacct -j "$jid" -o JobID,JobName,Partition,Account,State,ExitCode,Elapsed >&2
  rm -rf "$out"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local name=$1 pf=$2 pid
  if pid_alive "$pf"; then
    pid=$(cat "$pf")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop, SIGKILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$pf"
}

do_down() {
  need_root
  if [[ -e $ETC/slurm.conf ]] && grep -qF "$MARK" "$ETC/slurm.conf" && pid_alive "$STATE/run/slurmctld.pid"; then
    # cancel whatever is left so slurmd's job steps die with it
    scancel --full -u root 2>/dev/null || true
  fi
  stop_pidfile slurmd "$STATE/run/slurmd.pid"
  stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
  stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
  stop_pidfile mariadbd "$STATE/mysql-run/mariadb.pid"
  if [[ -e $STATE/run/munged.ours ]]; then
    stop_pidfile munged /run/munge/munged.pid
    rm -f "$STATE/run/munged.ours"
  fi
  if [[ ${1:-} == --purge ]]; then
    log "purging $STATE and the generated configs"
    rm -rf "$STATE"
    for f in slurm.conf slurmdbd.conf cgroup.conf gres.conf; do
      if [[ -e $ETC/$f ]] && grep -qF "$MARK" "$ETC/$f"; then rm -f "$ETC/$f"; fi
    done
  fi
  log "down"
}

do_status() {
  local rc=0 n pf
  for n in munged:/run/munge/munged.pid mariadbd:$STATE/mysql-run/mariadb.pid \
           slurmdbd:$STATE/run/slurmdbd.pid slurmctld:$STATE/run/slurmctld.pid \
           slurmd:$STATE/run/slurmd.pid; do
    pf=${n#*:}
    if pid_alive "$pf"; then echo "${n%%:*}: running (pid $(cat "$pf"))"; else echo "${n%%:*}: stopped"; rc=1; fi
  done
  if ((rc == 0)); then
    sinfo -o '%P %a %D %T %c %m'
    sacctmgr -n -P list assoc format=cluster,account,user
  fi
  return $rc
}

main() {
  case ${1:-} in
    install) do_install ;;
    up) do_up ;;
    smoke) do_smoke ;;
    down) shift; do_down "${1:-}" ;;
    status) do_status ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

# everything runs from main(): bash has parsed the whole file before the first command runs, so editing
# this script while a cluster operation is under way cannot derail that operation
main "$@"; exit $?
