#!/bin/sh
# The steps the image's build stages share (see Dockerfile), with the context's .offline/ folder
# bind-mounted at /context/.offline:
#   build-stage install ARGS…   `pip install --no-deps ARGS…` into /opt/venv (made if missing).
#       PIP_CA_BUNDLE (a CA bundle for pip) and PIP_WHEELHOUSE (pre-built wheels, after which pip
#       never contacts an index) are paths under .offline/, both optional (services/README.md).
#   build-stage finish SERVICE  `pip check`, pip removed from the venv, /build/src byte-compiled,
#       and /build/run, the entrypoint: `python -m <SERVICE with - as _>`, as the process itself.
set -eu
case "$1" in
install)
    shift
    if [ -n "${PIP_CA_BUNDLE:-}" ]; then export PIP_CERT="/context/$PIP_CA_BUNDLE"; fi
    if [ -n "${PIP_WHEELHOUSE:-}" ]; then
        export PIP_NO_INDEX=1 PIP_FIND_LINKS="/context/$PIP_WHEELHOUSE"
    fi
    [ -x /opt/venv/bin/pip ] || python3 -m venv /opt/venv
    exec /opt/venv/bin/pip install --no-deps "$@"
    ;;
finish)
    module=$(echo "$2" | tr - _)
    [ -f "/build/src/$module/__main__.py" ] || { echo "no src/$module/__main__.py in $2/" >&2; exit 1; }
    printf '#!/bin/sh\nexec python -m %s "$@"\n' "$module" >/build/run
    chmod 0755 /build/run
    /opt/venv/bin/pip check
    /opt/venv/bin/pip uninstall --yes --quiet pip
    exec /opt/venv/bin/python -m compileall -q /build/src
    ;;
*)
    echo "usage: build-stage install ARGS… | build-stage finish SERVICE" >&2
    exit 2
    ;;
esac
