"""The kind and minikube paths on macOS: BSD head/sed/readlink/date/stat/grep, no sha256sum before
macOS 14 (only Perl's shasum), and bash 3.2 at /bin/bash (issue 22, defect 6).

The scripts run on a PATH whose tools are BSD-flavoured stand-ins: each refuses the GNU-only forms
as the BSD tool does (its message, exit 1), writes the refusal to a log as well (make's
`$(shell ... 2>/dev/null)` would hide it), and otherwise execs the real tool.
BASH32=/path/to/bash-3.2 also puts that bash on the PATH, so that every `#!/usr/bin/env bash`
script runs under it.

A static check covers what the runs do not reach: bash >= 4 constructs and GNU-only tool forms in
every line of the scripts on those paths.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from deploy_support import Machine
from testkit import ROOT

# What `make up|preview|down|cluster-stop CLUSTER=kind|minikube` runs (Makefile, mk/infra.mk), and
# what those scripts call; bash parses a whole script as it runs, so every line counts.
KIND_PATH_SCRIPTS = (
    "hack/toolchain.sh",
    "hack/pulumi.sh",
    "hack/pulumi-stack.sh",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "infra").glob("*.sh")),
)

BASH32 = os.environ.get("BASH32", "")

# ---- BSD stand-ins: bash bodies; @REAL@ is the real tool, @LOG@ the refusals' log ----

REFUSE = """bsd() {
	printf '%s\\n' "$@" >&2
	printf '%s\\n' "$1" >>@LOG@
	exit 1
}
"""


def refusing(arms: str) -> str:
    """A stand-in that checks each argument against `arms` (case arms on $a), then runs the real
    tool with the arguments unchanged."""
    return f'for a in "$@"; do\n\tcase $a in{arms}\tesac\ndone\nexec @REAL@ "$@"\n'


BSD_TOOLS = {
    # FreeBSD/macOS head: -n/-c take a positive count; no long options.
    "head": """args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case ${args[i]} in
	--) break ;;
	--*) bsd "head: illegal option -- -" "usage: head [-n lines | -c bytes] [file ...]" ;;
	-n | -c) flag=${args[i]} count=${args[i + 1]-} i=$((i + 1)) ;;
	-n* | -c*) flag=${args[i]:0:2} count=${args[i]:2} ;;
	-*) continue ;;
	*) break ;;
	esac
	if ! [[ $count =~ ^[0-9]+$ ]] || ((10#$count == 0)); then
		[[ $flag == -n ]] && bsd "head: illegal line count -- $count"
		bsd "head: illegal byte count -- $count"
	fi
done
exec @REAL@ "$@"
""",
    # BSD sed: -i/-I take the backup suffix as their own argument ('' for none); no long options.
    "sed": """args=("$@") out=()
for ((i = 0; i < ${#args[@]}; i++)); do
	a=${args[i]}
	case $a in
	--) break ;;
	--*) bsd "sed: illegal option -- -" "usage: sed script [-Ealnru] [-i extension] [file ...]" ;;
	-i | -I)
		suffix=${args[i + 1]-} script=${args[i + 2]-}
		[[ -z $suffix || $suffix == .* ]] ||
			bsd "sed: 1: \\"$script\\": invalid command code ${script:0:1}"
		out+=("--in-place=$suffix") i=$((i + 1))
		continue
		;;
	-e | -f) out+=("$a" "${args[i + 1]-}") i=$((i + 1)) && continue ;;
	-i* | -I*) ;;
	-*[zs]*) bsd "sed: illegal option -- ${a//[^zs]/}" ;;
	-*) ;;
	*) break ;;
	esac
	out+=("$a")
done
exec @REAL@ "${out[@]}" "${args[@]:i}"
""",
    # macOS readlink before 12.3 (stat(1)'s readlink mode) has only -n.
    "readlink": refusing("""
	-n) ;;
	--) break ;;
	-?*) bsd "readlink: illegal option -- ${a:1:1}" "usage: readlink [-n] [file ...]" ;;
	*) break ;;
"""),
    # BSD date: no -d/--date (dates are parsed with -j -f); %N is no conversion (it prints "N").
    "date": refusing("""
	-d* | --*) bsd "date: illegal option -- ${a:1:1}" "usage: date [-jnRu] [+format]" ;;
	+*%N*) bsd "date: %N is no BSD conversion: BSD date prints a literal N" ;;
"""),
    # BSD stat: -f FORMAT where GNU has -c; the stand-in does not translate BSD's -f.
    "stat": refusing("""
	-c* | --*) bsd "stat: illegal option -- ${a:1:1}" "usage: stat [-FLnq] [-f format] [file]" ;;
	-f*) bsd "stat -f: a BSD format, which this stand-in does not translate" ;;
"""),
    # BSD grep: no -P (PCRE).
    "grep": """args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case ${args[i]} in
	--) break ;;
	--perl-regexp) bsd "grep: unrecognized option \\`--perl-regexp'" ;;
	--*) ;;
	-e | -f) i=$((i + 1)) ;;
	-*P*) bsd "grep: invalid option -- P" "usage: grep [-abcdDEFGHhIiJLlMmnOopqRSsUVvwXxZz] ..." ;;
	-*) ;;
	*) break ;;
	esac
done
exec @REAL@ "$@"
""",
}

# macOS before 14: no sha256sum; Perl's `shasum -a 256` prints the same "<hex>  <name>".
SHASUM = """[[ ${1-} == -a && ${2-} == 256 || ${1-} == -a256 ]] || bsd "shasum: only -a 256 here"
[[ $1 == -a ]] && shift
shift
exec python3 -c 'import hashlib, sys
for name in sys.argv[1:] or ["-"]:
    data = sys.stdin.buffer.read() if name == "-" else open(name, "rb").read()
    print(hashlib.sha256(data).hexdigest() + "  " + name)' "$@"
"""


class BsdMachine(Machine):
    """Machine's PATH with the BSD stand-ins for head/sed/readlink/date/stat/grep, shasum in place
    of sha256sum, and BASH32's bash when given."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.refusals = root / "bsd-refusals.log"
        for name, body in {**BSD_TOOLS, "shasum": SHASUM}.items():
            real = shutil.which(name) or name
            (self.system / name).unlink(missing_ok=True)
            stand_in = REFUSE + body.replace("@REAL@", shlex.quote(real))
            self.fake(name, stand_in.replace("@LOG@", shlex.quote(str(self.refusals))), self.system)
        (self.system / "sha256sum").unlink(missing_ok=True)
        if BASH32:
            (self.system / "bash").unlink(missing_ok=True)
            (self.system / "bash").symlink_to(BASH32)

    def bsd_refusals(self) -> list[str]:
        return self.refusals.read_text().splitlines() if self.refusals.exists() else []


def toolchain_bin(cache: Path) -> Path:
    """hack/toolchain.sh's bin dir: the cache named after the sha256 of hack/versions.env up to the
    project-local tools' marker, without the blank line before it."""
    lines = (ROOT / "hack" / "versions.env").read_text().splitlines(keepends=True)
    marker = next(i for i, line in enumerate(lines) if line.startswith("# ---- Project-local"))
    key = hashlib.sha256("".join(lines[: marker - 1]).encode()).hexdigest()[:16]
    return cache / key / "bin"


@pytest.fixture
def bsd(tmp_path):
    return BsdMachine(tmp_path / "bsd")


def assert_clean(machine: BsdMachine, done) -> None:
    assert machine.bsd_refusals() == []
    assert done.returncode == 0, done.stderr


# ---- the scripts' code paths under the BSD stand-ins ----


def test_stand_ins_refuse_the_gnu_forms(bsd):
    """The stand-ins themselves: a GNU-only form fails as on macOS, a portable one works."""
    script = bsd.root / "probe.sh"
    script.write_text(
        "printf 'a\\nb\\nc\\n' | head -n -1\n"
        "printf 'a\\nb\\nc\\n' | sed '$d'\n"
        "printf 'x' | sed -i 's/x/y/' /dev/null\n"
        "printf 'x' | shasum -a 256\n"
        "sha256sum </dev/null\n"
    )
    done = bsd.run_tool("bash", str(script), cwd=Path("/bin"))
    assert "head: illegal line count -- -1" in done.stderr
    assert 'sed: 1: "/dev/null": invalid command code /' in done.stderr
    assert "sha256sum: command not found" in done.stderr
    assert done.stdout.splitlines() == [
        "a",
        "b",
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  -",
    ]
    assert bsd.bsd_refusals() == [
        "head: illegal line count -- -1",
        'sed: 1: "/dev/null": invalid command code /',
    ]


def test_toolchain_bin_dir_is_the_same_under_bsd_tools(bsd, tmp_path):
    """BSD head refused `head -n -1` and there was no sha256sum: bin-dir failed under set -e, so
    make's TOOLCHAIN_BIN was empty and DEPLOY_PATH began with ":" (the current directory)."""
    gnu = Machine(tmp_path / "gnu")
    bsd.env_extra["TOOLCHAIN_CACHE"] = str(gnu.toolchain_cache)
    on_gnu = gnu.run_tool("hack/toolchain.sh", "bin-dir")
    on_bsd = bsd.run_tool("hack/toolchain.sh", "bin-dir")
    assert_clean(bsd, on_bsd)
    assert on_bsd.stderr == ""
    assert on_bsd.stdout == on_gnu.stdout == f"{toolchain_bin(gnu.toolchain_cache)}\n"


def test_make_reads_the_toolchain_bin_dir_under_bsd_tools(bsd):
    """The same through make's `$(shell hack/toolchain.sh bin-dir 2>/dev/null)`, which hid it."""
    done = bsd.make(bsd.repo_root, "-pq", "help")
    assert bsd.bsd_refusals() == []
    bindir = re.search(r"^TOOLCHAIN_BIN := (.*)$", done.stdout, re.MULTILINE)
    assert bindir
    assert bindir[1] == str(toolchain_bin(bsd.toolchain_cache))


def test_pulumi_convention_under_bsd_tools(bsd):
    done = bsd.run_tool("hack/pulumi.sh", "--convention")
    assert_clean(bsd, done)
    assert [shlex.split(line)[0] for line in done.stdout.splitlines()] == [
        f"PULUMI_BACKEND_URL=file://{ROOT}/.pulumi-state",
        "LOCAL_STACKS=dev minikube local",
        "LOCAL_PASSPHRASE=local-development",
    ]


# The toolchain's pulumi: logs its arguments and the first PATH entry; `stack select` finds no
# stack and `stack export` an empty one, as for a stack `make preview` creates.
FAKE_PULUMI = """echo "$* (PATH ${PATH%%:*})" >>"$CALLS"
case "$1 $2" in
"stack select") exit 1 ;;
"stack export") echo '{"deployment": {"resources": []}}' ;;
esac
"""


@pytest.fixture
def toolchain_pulumi(bsd, tmp_path):
    """pulumi only in the toolchain's bin dir; a state backend in tmp_path."""
    bindir = toolchain_bin(bsd.toolchain_cache)
    bindir.mkdir(parents=True)
    bsd.remove("pulumi")
    bsd.fake("pulumi", FAKE_PULUMI, bindir)
    bsd.env_extra["PULUMI_BACKEND_URL"] = f"file://{tmp_path / 'state'}"
    return bindir


def test_pulumi_sh_runs_the_toolchain_pulumi_under_bsd_tools(bsd, toolchain_pulumi):
    done = bsd.run_tool("hack/pulumi.sh", "dev", "stack", "ls")
    assert_clean(bsd, done)
    assert bsd.pulumi_calls() == [f"stack ls --stack dev (PATH {toolchain_pulumi})"]


def test_pulumi_sh_stops_when_the_toolchain_dir_is_unknown(tmp_path):
    """`export PATH="$(toolchain.sh bin-dir):..."` hid the failure and put an empty entry (the
    current directory) first on PATH; here neither sha256sum nor shasum exists."""
    machine = Machine(tmp_path / "machine")
    (machine.system / "sha256sum").unlink()
    machine.env_extra["PULUMI_BACKEND_URL"] = f"file://{tmp_path / 'state'}"
    done = machine.run_tool("hack/pulumi.sh", "dev", "stack", "ls")
    assert done.returncode != 0
    assert "shasum: command not found" in done.stderr
    assert machine.pulumi_calls() == []


def test_pulumi_stack_sh_under_bsd_tools(bsd, toolchain_pulumi, tmp_path):
    """`make preview CLUSTER=kind`'s step: create the stack, preview, remove it again (empty)."""
    done = bsd.run_tool("hack/pulumi-stack.sh", "dev", "preview", "--diff")
    assert_clean(bsd, done)
    assert done.stdout.splitlines() == [
        f"pulumi-stack: created stack dev in file://{tmp_path / 'state'}",
        "pulumi-stack: removed stack dev again (created by this run, holds no resource)",
    ]
    assert bsd.pulumi_calls() == [
        f"{call} --stack dev (PATH {toolchain_pulumi})"
        for call in (
            "stack select --non-interactive",
            "stack init --non-interactive",
            "preview --diff",
            "stack export",
            "stack rm --yes --force --preserve-config",
        )
    ]


# docker, kind and kubectl stand-ins that log their arguments, and their stdin as "  | " lines.
LOG_STDIN = 'while IFS= read -r line; do echo "  | $line"; done >>"$CALLS"'
FAKE_DOCKER = f"""echo "docker $*" >>"$CALLS"
case "$1 $3" in
"inspect {{{{.State.Running}}}}") echo "Error: No such object: $4" >&2 && exit 1 ;;
"inspect {{{{json .NetworkSettings.Networks.kind}}}}") echo null ;;
esac
[ "$2" != -i ] || {LOG_STDIN}
"""
FAKE_KIND = f"""echo "kind $*" >>"$CALLS"
case "$1 $2" in
"get clusters") cat "$FAKE_KIND_CLUSTERS" 2>/dev/null ;;
"create cluster") {LOG_STDIN} && echo "$4" >>"$FAKE_KIND_CLUSTERS" ;;
"get nodes") echo "$4-control-plane" ;;
"delete cluster") rm "$FAKE_KIND_CLUSTERS" ;;
esac
"""
FAKE_KUBECTL = f"""echo "kubectl $*" >>"$CALLS"
{LOG_STDIN}
"""


def test_kind_sh_up_and_down_under_bsd_tools(bsd):
    bsd.fake("docker", FAKE_DOCKER)
    bsd.fake("kind", FAKE_KIND)
    bsd.fake("kubectl", FAKE_KUBECTL)
    bsd.env_extra["FAKE_KIND_CLUSTERS"] = str(bsd.root / "kind-clusters")

    up = bsd.run_tool("infra/kind.sh", "up")
    assert_clean(bsd, up)
    calls = bsd.pulumi_calls()
    for call in (
        "docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge",
        "kind create cluster --name consul-microservices --wait 120s --config -",
        '  |   [plugins."io.containerd.grpc.v1.cri".registry]',
        "docker exec -i consul-microservices-control-plane cp /dev/stdin "
        "/etc/containerd/certs.d/localhost:5001/hosts.toml",
        '  | [host."http://kind-registry:5000"]',
        "docker network connect kind kind-registry",
        "kubectl --context kind-consul-microservices apply -f -",
        '  |     host: "localhost:5001"',
    ):
        assert any(line.startswith(call) for line in calls), (call, calls)
    # The heredocs' tabs are gone (<<-), so the YAML is YAML.
    assert not [line for line in calls if line.startswith("  | \t")]

    bsd.calls.unlink()
    down = bsd.run_tool("infra/kind.sh", "down")
    assert_clean(bsd, down)
    calls = bsd.pulumi_calls()
    assert "kind delete cluster --name consul-microservices" in calls
    assert "docker rm -f kind-registry" in calls


FAKE_MINIKUBE = """echo "minikube $*" >>"$CALLS"
case "$1" in
profile) echo '{"valid": [{"Name": "consul-microservices", "Config": {"KubernetesConfig":
	{"CNI": "", "ContainerRuntime": "containerd"}}}]}' ;;
status) exit 7 ;;
esac
"""


def test_minikube_sh_under_bsd_tools(bsd):
    bsd.fake("minikube", FAKE_MINIKUBE)
    up = bsd.run_tool("infra/minikube.sh", "up")
    assert bsd.bsd_refusals() == []
    assert up.returncode == 1
    assert up.stderr.startswith(
        "minikube.sh: profile consul-microservices runs CNI 'none' and runtime 'containerd'"
    )
    assert bsd.pulumi_calls() == ["minikube profile list -o json"]
    down = bsd.run_tool("infra/minikube.sh", "down")
    assert_clean(bsd, down)
    assert bsd.pulumi_calls()[-1] == "minikube delete -p consul-microservices"


@pytest.mark.skipif(not BASH32, reason="BASH32 (a bash 3.2 binary) not given")
def test_the_scripts_ran_under_bash32(bsd):
    script = bsd.root / "version.sh"
    script.write_text("#!/usr/bin/env bash\necho $BASH_VERSION\n")
    script.chmod(0o755)
    done = bsd.run_tool(script.name, cwd=bsd.root)
    assert done.stdout.startswith("3.2."), done.stdout


# ---- static: every line of the scripts on the kind and minikube paths ----

BASH4 = (
    (r"\b(declare|local|typeset)\s+-\w*A", "associative arrays (declare -A): bash 4.0"),
    (r"\b(declare|local|typeset)\s+-\w*n\b", "namerefs (declare -n): bash 4.3"),
    (r"\b(declare|local|typeset)\s+-\w*g", "declare -g: bash 4.2"),
    (r"\blocal\s+-\s*($|;)", "local -: bash 4.4"),
    (r"\$\{[!#]?\w+(\[[^]]*\])?(\^|,)", "case modification ${x^^} ${x,,}: bash 4.0"),
    (r"\$\{\w+(\[[^]]*\])?@[QEPAaKkUuL]\}", "${x@Q} transformations: bash 4.4"),
    (r"\b(mapfile|readarray)\b", "mapfile/readarray: bash 4.0"),
    (r"\|&", "|& (stdout and stderr into a pipe): bash 4.0"),
    (r"&>>", "&>> (append stdout and stderr): bash 4.0"),
    (r";;&|;&\s*$", "case fall-through ;& ;;&: bash 4.0"),
    (r"\bcoproc\b", "coproc: bash 4.0"),
    (r"\$\{\w+\[-\d+\]\}", "negative subscripts ${a[-1]}: bash 4.3"),
    (r"\$\{\w+(\[[@*]\])?:[^}:]*:\s*-\d+\}", "negative substring lengths ${x:0:-1}: bash 4.2"),
    (r"\bwait\s+-\w*n", "wait -n: bash 4.3"),
    (r"\b(BASHPID|EPOCHSECONDS|EPOCHREALTIME|SRANDOM)\b", "$BASHPID 4.0 $EPOCH* 5.0 $SRANDOM 5.1"),
    (r"(?<!\$)\{\w+\}[<>]", "{fd}> automatic file descriptors: bash 4.1"),
    (r"(\[\[|\[|\btest)\s+(!\s+)?-v\s", "test -v VAR: bash 4.2"),
    (r"%\([^)]*\)T", "printf %(fmt)T: bash 4.2"),
    (r"\bshopt\s+-s\s+.*\b(globstar|lastpipe|autocd|checkjobs|direxpand)\b", "shopt: bash 4.x"),
    (r"\bread\s+(-\w+\s+)*-\w*[Ni]\b", "read -N / read -i: bash 4.x"),
)

GNU_ONLY = (
    (r"\bhead\s+(-n\s*|--lines=)-\d", "head -n -N is GNU (BSD head: illegal line count)"),
    (r"\bsed\b[^|;]*\s(-[a-zA-Z]*i(\s|$)|--in-place)", "sed -i SCRIPT is GNU (BSD: -i SUFFIX)"),
    (r"\bsed\b[^|;]*\s(-[a-zA-Z]*[rz]\b|--\w)", "sed -r/-z/--long-options are GNU (use -E)"),
    (r"\breadlink\s+(-\w+\s+)*-\w*[fem]", "readlink -f/-e/-m: macOS before 12.3 has only -n"),
    (r"\brealpath\b", "realpath: not on macOS before 13"),
    (r"\bdate\b[^|;]*\s(-d|--date)\b", "date -d is GNU (BSD: date -j -f)"),
    (r"\bdate\b[^|;]*%N", "date %N is GNU (BSD prints N)"),
    (r"\bstat\s+(-\w+\s+)*(-c|--format|--printf)", "stat -c is GNU (BSD: stat -f)"),
    (r"/proc/", "no /proc on macOS"),
    (r"\bgrep\b[^|;]*\s(-\w*P|--perl-regexp)", "grep -P is GNU"),
    (r"\bxargs\s+(-\w+\s+)*-\w*r", "xargs -r is a GNU extension"),
    (r"\bmktemp\s*($|[;|)&])", "mktemp without a template fails on older macOS"),
    (r"\bcp\b[^|;]*\s--\w", "cp's long options are GNU"),
    (r"\bfind\b[^|;]*\s-printf\b", "find -printf is GNU"),
    (r"(^|[;&|(]|\$\()\s*(tac|timeout|nproc|setsid|ip)\s", "not on macOS (GNU, util-linux)"),
)


def code_lines(path: str) -> list[tuple[int, str]]:
    """Numbered lines without their comments (a # that starts a word)."""
    lines = (ROOT / path).read_text().splitlines()
    return [(n, re.sub(r"(^|\s)#.*$", "", line)) for n, line in enumerate(lines, 1)]


def empty_array_expansions(path: str) -> list[str]:
    """`"${a[@]}"` of an empty array under set -u is an "unbound variable" error before bash 4.4:
    arrays that can be empty (a=() or a=("$@")) and are expanded in a script that never checks
    their size (${#a[@]}), unless as ${a[@]+"${a[@]}"}."""
    text = (ROOT / path).read_text()
    found = []
    for name in sorted(set(re.findall(r'\b(\w+)=\((?:\s*|"\$@")\)', text))):
        if f"${{#{name}[@]}}" in text:
            continue
        safe = re.compile(rf'\$\{{{name}\[[@*]\]\+"\$\{{{name}\[[@*]\]\}}"\}}')
        for number, line in code_lines(path):
            if re.search(rf"\$\{{{name}\[[@*]\]", safe.sub("", line)):
                found.append(f"{path}:{number}: {name} can be empty: {line.strip()}")
    return found


def findings(path: str, rules) -> list[str]:
    return [
        f"{path}:{number}: {reason}: {line.strip()}"
        for number, line in code_lines(path)
        for pattern, reason in rules
        if re.search(pattern, line)
    ]


@pytest.mark.parametrize("path", KIND_PATH_SCRIPTS)
def test_no_bash4_constructs(path):
    assert findings(path, BASH4) + empty_array_expansions(path) == []


@pytest.mark.parametrize("path", KIND_PATH_SCRIPTS)
def test_no_gnu_only_tool_forms(path):
    found = findings(path, GNU_ONLY)
    text = (ROOT / path).read_text()
    if "shasum -a 256" not in text:
        found += [
            f"{path}:{number}: no sha256sum before macOS 14 (shasum -a 256): {line.strip()}"
            for number, line in code_lines(path)
            if re.search(r"\bsha256sum\b", line)
        ]
    assert found == []


@pytest.mark.parametrize(
    ("rules", "line"),
    [
        (BASH4, "declare -A seen"),
        (BASH4, 'echo "${name,,}"'),
        (BASH4, "mapfile -t lines <file"),
        (BASH4, "cmd |& tee log"),
        (BASH4, "cmd &>>log"),
        (BASH4, "a) echo ;;&"),
        (BASH4, "coproc cat"),
        (BASH4, "local -n ref=$1"),
        (BASH4, 'echo "${x@Q}"'),
        (BASH4, 'echo "${a[-1]}"'),
        (BASH4, "wait -n"),
        (BASH4, "echo $EPOCHSECONDS"),
        (GNU_ONLY, "sed 1d f | head -n -1"),
        (GNU_ONLY, "sed -i 's/a/b/' f"),
        (GNU_ONLY, 'dir=$(readlink -f "$0")'),
        (GNU_ONLY, "date -d @0"),
        (GNU_ONLY, "date +%s%N"),
        (GNU_ONLY, "stat -c %s f"),
        (GNU_ONLY, "grep -P '\\d' f"),
        (GNU_ONLY, "xargs -r rm"),
        (GNU_ONLY, "t=$(mktemp)"),
        (GNU_ONLY, "timeout 5 cmd"),
    ],
)
def test_the_static_rules_catch(rules, line):
    assert any(re.search(pattern, line) for pattern, _ in rules)


# GNU make newer than 3.81, macOS's own make: the makefiles must parse and run there. (Checked by
# hand with a real make 3.81: `make up CLUSTER=kind` deploys, a refusal stops before any recipe.)
MAKE_AFTER_381 = (
    (r"\.SHELLSTATUS", "4.2"),
    (r"\$\((file|guile|let|intcmp)\s", "4.0 and later"),
    (r"^\s*\.(ONESHELL|RECIPEPREFIX)\b", "3.82"),
    (r"^\s*(undefine|private)\s", "3.82"),
    (r"^\s*[\w.-]+\s*(!=|::=|:::=)", "4.0 and later"),
)
MAKEFILES = ("Makefile", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("mk/*.mk")))


@pytest.mark.parametrize("path", MAKEFILES)
def test_the_makefiles_need_no_make_newer_than_3_81(path):
    assert findings(path, MAKE_AFTER_381) == []


@pytest.mark.parametrize(
    "line", ["ifneq ($(.SHELLSTATUS),0)", "$(file >out,x)", ".ONESHELL:", "undefine X", "X != ls"]
)
def test_the_make_rules_catch(line):
    assert any(re.search(pattern, line) for pattern, _ in MAKE_AFTER_381)
