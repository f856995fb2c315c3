# Shared by the hack/ scripts (sourced): logging (stderr, so that a
# command's stdout stays its result), polling and daemons recorded by their real PID.
# The caller sets LOG_TAG, LOGS (log dir) and PIDS (pid dir).
# shellcheck shell=bash

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	printf '%s: %s\n' "$LOG_TAG" "$*" >&2
	exit 1
}

# install_packages PKG...: apt-get install those of Debian's packages that are not installed yet.
install_packages() {
	local missing=() pkg
	for pkg in "$@"; do
		dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || die "needs Debian's ${missing[*]}: sudo apt-get install ${missing[*]}"
	log "apt-get install ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_until() {
	local seconds=$1 what=$2
	local deadline=$((SECONDS + seconds))
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after $seconds s waiting for $what (logs: $LOGS)"
		sleep 0.5
	done
}

# start_daemon NAME BINARY ARGS...: run BINARY detached (own session, no terminal), logging to $LOGS/NAME.log.
# The shell that execs it writes its own PID first, so the record is the daemon's PID whether or not setsid
# had to fork (it does under job control, where `$!` would name the short-lived parent).
start_daemon() {
	local name=$1 binary=$2
	shift 2
	[[ -x $binary ]] || die "$binary not found: run \`make toolchain\`"
	log "start $name (log: $LOGS/$name.log)"
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'printf "%s %s\n" $$ "$2" >"$1"; shift; exec "$@"' _ "$PIDS/$name.pid" "$binary" "$@" \
		>"$LOGS/$name.log" 2>&1 </dev/null &
	wait_until 5 "$name's pid file" test -s "$PIDS/$name.pid"
}

# pid_of NAME: the PID of a running daemon, checked against its binary (guards against PID reuse).
pid_of() {
	local pid binary
	read -r pid binary 2>/dev/null <"$PIDS/$1.pid" || return 1
	[[ -r /proc/$pid/cmdline ]] && [[ $(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1) == "$binary" ]] && echo "$pid"
}

# stop_daemon NAME [GRACE]: TERM, then KILL after GRACE seconds (10); fails when it is still there. A daemon that
# has exited is stopped
# even before its parent reaps it: the daemons' parent is init, and an init that reaps late (this machine's takes
# about 2 s) left each stop waiting on a zombie, whose /proc entry stays (pid_of sees its empty command line).
stop_daemon() {
	local name=$1 grace=${2:-10} pid
	pid=$(pid_of "$name") || {
		rm -f "$PIDS/$name.pid"
		return 0
	}
	log "stop $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq $((grace * 10))); do
		pid_of "$name" >/dev/null || break
		sleep 0.1
	done
	if pid_of "$name" >/dev/null; then
		log "kill $name (pid $pid) after $grace s"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	! pid_of "$name" >/dev/null || die "$name (pid $pid) still running"
	rm -f "$PIDS/$name.pid"
}
