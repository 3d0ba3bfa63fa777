#!/usr/bin/env bash
# A venv that runs THIS checkout on top of an existing venv's packages, without touching it:
#   bash tools/checkout_venv.sh BASE_VENV NEW_VENV      e.g. /work/main/.venv /work/scratch/me/venv
# then NEW_VENV/bin/python -m pytest ... / NEW_VENV/bin/fer-edge ...
# fer_edge.export and fer_edge.runtimes are mapped into the package by packaging only (an editable
# install of this checkout), so a second checkout (a git worktree) needs its own install; this one
# reuses BASE_VENV's packages (torch, onnxruntime, ...) through a .pth line instead of copying them.
set -euo pipefail
base=$(cd "$1" && pwd); new=$2
checkout=$(cd "$(dirname "$0")/.." && pwd)
python=$("$base/bin/python" -c 'import sys; print(sys._base_executable)')
site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$python" -m venv --without-pip "$new"
newsite=$("$new/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# A path line only: BASE_VENV's own .pth files (its editable install of another checkout) stay unread.
echo "$site" > "$newsite/base_venv.pth"
# pip sees BASE_VENV's fer-edge and leaves it alone ("outside environment"); this venv gets its own.
"$new/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$checkout"
"$new/bin/python" -c 'import fer_edge.export, fer_edge.runtimes as r; print("fer_edge.runtimes from", r.__file__)'
