"""Install a ``tile_linear_sm90`` library built on another machine under the cache name
that :func:`sparsefx.runtime.cuda.build.load` computes here, so the first use loads it
instead of running nvcc (~60 s on the device). Only valid for a library built from this
checkout's ``csrc/`` with ``build.compile_flags((9, 0))``.

    PYTHONPATH=. python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so
"""
from __future__ import annotations

import shutil
import sys

from sparsefx.runtime.cuda import build


def main(path: str) -> None:
    sources = [build.CSRC_DIR / "tile_linear_sm90.cu"]
    flags = build.compile_flags((9, 0))
    target = build.build_dir() / \
        f"tile_linear_sm90-{build._digest(sources, flags, build.nvcc_path())}.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    print("prebuilt library installed as", target)


if __name__ == "__main__":
    main(sys.argv[1])
