"""Install a Hopper library built on another machine under the cache name that
:func:`sparsefx.runtime.cuda.build.load` computes here, so the first use loads it
instead of running nvcc (~60 s on the device for ``tile_linear_sm90``, minutes for the
CUTLASS ``dense_fm_sm90``). Only valid for a library built from this checkout's
``csrc/`` with ``build.compile_flags((9, 0), <the module's extra flags>)``.

    PYTHONPATH=. python bench/install_prebuilt_sm90.py .gl/exp/sm90_full.so
    PYTHONPATH=. python bench/install_prebuilt_sm90.py .gl/exp/dense_fm.so dense_fm_sm90
"""
from __future__ import annotations

import shutil
import sys

from sparsefx.runtime.cuda import build, sm90_dense, sm90_tile


def main(path: str, name: str = sm90_tile.LIB_NAME) -> None:
    if name == sm90_dense.LIB_NAME:
        sources, extra = sm90_dense.SOURCES, sm90_dense.extra_flags()
        if extra is None:
            sys.exit("no CUTLASS headers here: " + str(sm90_dense.cutlass_root()))
    else:
        sources, extra = sm90_tile.SOURCES, ()
    paths = [build.CSRC_DIR / s for s in sources]
    flags = build.compile_flags((9, 0), extra)
    target = build.build_dir() / f"{name}-{build._digest(paths, flags, build.nvcc_path())}.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    print("prebuilt library installed as", target)


if __name__ == "__main__":
    main(*sys.argv[1:3])
