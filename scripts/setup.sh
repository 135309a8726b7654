#!/usr/bin/env bash
# Take a fresh machine (Debian, Python >= 3.10) to a working environment in ./.venv.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.spikeloop-setup
want="$(cat scripts/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r scripts/requirements.txt
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
.venv/bin/python -c "import spikeloop" >/dev/null

# Icarus Verilog, the optional second simulator (tests/test_rtl_icarus.py, `verify --sim icarus`):
# installed from Debian when this runs as root with apt-get (the package lists are refreshed only
# if the install fails without), otherwise those tests are skipped. Never fails the setup.
if ! command -v iverilog >/dev/null || ! command -v vvp >/dev/null; then
    apt_install_iverilog() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=120 iverilog >/dev/null 2>&1
    }
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null &&
        { apt_install_iverilog ||
          { apt-get update -qq >/dev/null 2>&1 && apt_install_iverilog; }; } &&
        command -v iverilog >/dev/null; then
        echo "setup: installed $(iverilog -V 2>/dev/null | head -n 1 | sed 's/ *()$//' || true)"
    else
        echo "setup: Icarus Verilog (iverilog) is not installed and cannot be installed here; the Icarus tests will be skipped"
    fi
fi
