#!/usr/bin/env bash
# What `sam build` needs, checked before it runs, so that a fresh clone is told what is
# missing and how to get it instead of sam's "Binary validation failed for python".
# Usage: check_build.sh [--use-container]. Downloads nothing; exit 1 if something is missing.
set -u

use_container=0
[[ "${1:-}" == "--use-container" ]] && use_container=1
missing=0

say() { printf '%s\n' "$@" >&2; }

# The first non-empty line of a command's output: its error, in short.
first_line() {
    local line
    while IFS= read -r line; do [[ -n "$line" ]] && printf '%s' "$line" && return; done <<<"$1"
    printf 'no output'
}

if ! command -v sam >/dev/null 2>&1; then
    say "make build: the AWS SAM CLI (sam) is not on PATH." \
        "  Install it, e.g. 'uv tool install aws-sam-cli' or 'pipx install aws-sam-cli'" \
        "  (https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html)."
    missing=1
fi

if ((use_container)); then
    # The build image runs in Docker: its daemon must answer, not just its client exist.
    if ! command -v docker >/dev/null 2>&1; then
        problem="docker is not on PATH"
    elif ! output=$(docker version --format '{{.Server.Version}}' 2>&1); then
        problem="docker is on PATH but its daemon does not answer ($(first_line "$output"))"
    else
        problem=""
    fi
    if [[ -n "$problem" ]]; then
        say "make build CONTAINER=1: $problem." \
            "  sam build --use-container builds in the Lambda build image and needs Docker running." \
            "  Or build without it: make build (needs a python3.13 on PATH)."
        missing=1
    fi
    exit "$missing"
fi

# sam accepts the first of these names on PATH that runs as Python 3.13.
found=()
python_ok=0
for name in python3.13 python3 python; do
    path=$(command -v "$name" 2>/dev/null) || continue
    if output=$("$path" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>&1); then
        [[ "$output" == "3.13" ]] && python_ok=1 && break
        found+=("$name at $path is Python $output")
    else
        found+=("$name at $path does not run ($(first_line "$output"))")
    fi
done

if ((!python_ok)); then
    say "make build: no Python 3.13 on PATH. The functions and the layer target python3.13 (arm64)," \
        "  and sam build needs a local python3.13 to build them: without one it stops with" \
        "  \"Binary validation failed for python\"."
    if ((${#found[@]})); then
        joined=""
        for item in "${found[@]}"; do joined+="${joined:+; }$item"; done
        say "  Found: $joined."
    else
        say "  Found: none of python3.13, python3, python."
    fi
    say "  Get one, then run make build again (with one, sam build takes about half a minute):" \
        "    uv python install 3.13    # puts python3.13 in \$(uv python dir --bin), usually ~/.local/bin;" \
        "                              # run it in your shell: make sets UV_PYTHON_DOWNLOADS=never" \
        "    pyenv install 3.13 && pyenv shell 3.13.<patch>    # or your OS's python3.13 package" \
        "  Or build inside the Lambda build image instead (needs Docker, no local Python 3.13):" \
        "    make build CONTAINER=1    # sam build --use-container"
    missing=1
fi

exit "$missing"
