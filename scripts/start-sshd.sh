#!/usr/bin/env bash
# Start a test sshd on 127.0.0.1:${SSHD_PORT:-2222} (the "login node" for the Slurm
# executor's remote mode) and wait, bounded, until it accepts TCP connections.
# Idempotent: keys are generated once; a running instance (pid file) is left alone.
# Files under ${SSHD_DIR:-/etc/nv-eval-test/ssh}:
#   id_ed25519      client key of root (authorized for root on this sshd)
#   known_hosts     host key line for [127.0.0.1]:PORT
#   sshd_config, ssh_host_ed25519_key, authorized_keys, sshd.pid
# Needs: apt-get install -y --no-install-recommends openssh-server
set -euo pipefail
DIR=${SSHD_DIR:-/etc/nv-eval-test/ssh}
PORT=${SSHD_PORT:-2222}
TIMEOUT=${SSHD_TIMEOUT:-10}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { printf '[start-sshd] %s\n' "$*" >&2; }

[ -x /usr/sbin/sshd ] || { log "sshd not installed (apt-get install -y --no-install-recommends openssh-server)"; exit 1; }
$SUDO mkdir -p "$DIR" /run/sshd
$SUDO chmod 0700 "$DIR"
[ -f "$DIR/ssh_host_ed25519_key" ] || $SUDO ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh_host_ed25519_key"
[ -f "$DIR/id_ed25519" ] || $SUDO ssh-keygen -q -t ed25519 -N '' -C nv-eval-test -f "$DIR/id_ed25519"
$SUDO cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
$SUDO sh -c "printf '[127.0.0.1]:%s %s\n' '$PORT' \"\$(cut -d' ' -f1,2 '$DIR/ssh_host_ed25519_key.pub')\" >'$DIR/known_hosts'"
$SUDO tee "$DIR/sshd_config" >/dev/null <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/ssh_host_ed25519_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
MaxSessions 200
MaxStartups 100:30:200
ClientAliveInterval 15
Subsystem sftp internal-sftp
EOF

up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
running() { [ -f "$DIR/sshd.pid" ] && kill -0 "$(cat "$DIR/sshd.pid")" 2>/dev/null; }
if ! running; then
  $SUDO /usr/sbin/sshd -t -f "$DIR/sshd_config"
  $SUDO /usr/sbin/sshd -f "$DIR/sshd_config" -E /var/log/nv-eval-sshd.log
fi
deadline=$((SECONDS + TIMEOUT))
until up; do
  [ $SECONDS -lt $deadline ] || { log "sshd not listening on 127.0.0.1:$PORT after ${TIMEOUT}s"; tail -n 20 /var/log/nv-eval-sshd.log >&2 || true; exit 1; }
  sleep 0.05
done
log "ready: ssh -p $PORT -i $DIR/id_ed25519 -o UserKnownHostsFile=$DIR/known_hosts root@127.0.0.1"
