"""CPU tests of the CUTLASS dense kernel's launcher (:mod:`sparsefx.runtime.cuda.sm90_dense`):
where it finds the headers, the flags it builds with, how kernel choice lists its
configurations, and how ``dense_forward`` routes a variant to it. The kernels themselves
are tested on the GPU (tests/gpu/test_dense_fm_sm90.py)."""
from __future__ import annotations

import re

import pytest
import torch

from sparsefx.runtime.cuda import build, sm90_dense


def dispatch_module():
    """Kernel choice's module (it needs triton; the tests using it skip without)."""
    pytest.importorskip("triton")
    from sparsefx.runtime.cuda import dispatch
    return dispatch


def fake_cutlass(root, version=(3, 5, 1)):
    """A directory with the files sm90_dense looks for."""
    (root / "include" / "cutlass" / "gemm" / "collective").mkdir(parents=True)
    (root / "include" / "cutlass" / "gemm" / "collective" / "collective_builder.hpp").touch()
    (root / "include" / "cutlass" / "version.h").write_text(
        "".join(f"#define CUTLASS_{k} {v}\n" for k, v in zip(("MAJOR", "MINOR", "PATCH"),
                                                               version)))
    (root / "tools" / "util" / "include" / "cutlass" / "util").mkdir(parents=True)
    (root / "tools" / "util" / "include" / "cutlass" / "util" / "packed_stride.hpp").touch()
    return root


def test_the_environment_names_the_cutlass_checkout(tmp_path, monkeypatch):
    root = fake_cutlass(tmp_path / "cutlass")
    monkeypatch.setenv(sm90_dense.CUTLASS_ENV, str(root))
    assert sm90_dense.cutlass_root() == root
    flags = sm90_dense.extra_flags()
    assert "-DNDEBUG" in flags and "-DSFX_CUTLASS_VERSION=3.5.1" in flags
    assert f"-I{root / 'include'}" in flags
    assert f"-I{root / 'tools' / 'util' / 'include'}" in flags


def test_a_directory_without_the_headers_gives_no_flags(tmp_path, monkeypatch):
    monkeypatch.setenv(sm90_dense.CUTLASS_ENV, str(tmp_path))
    assert sm90_dense.extra_flags() is None


def test_a_new_cutlass_version_is_a_new_build(tmp_path, monkeypatch):
    """The version is in the flags, and the flags are in the build's cache key."""
    digests = []
    for version in ((3, 5, 1), (4, 2, 0)):
        root = fake_cutlass(tmp_path / "v{}{}{}".format(*version), version)
        monkeypatch.setenv(sm90_dense.CUTLASS_ENV, str(root))
        flags = build.compile_flags((9, 0), sm90_dense.extra_flags())
        digests.append(build._digest([build.CSRC_DIR / s for s in sm90_dense.SOURCES],
                                     flags, "nvcc"))
    assert digests[0] != digests[1]


def test_without_a_gpu_it_is_unavailable_and_says_why():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert not sm90_dense.available()
    assert sm90_dense.why_not()
    assert sm90_dense.config_names() == ()


def test_kernel_choice_lists_one_variant_per_configuration(monkeypatch):
    dispatch = dispatch_module()
    monkeypatch.setattr(sm90_dense, "available", lambda: True)
    monkeypatch.setattr(sm90_dense, "config_names", lambda: ("128x256x64/coop", "b"))
    listed = dispatch.dense_variants(True, 4096, 768)
    assert listed[-2:] == ("sm90_fm_128x256x64/coop", "sm90_fm_b")
    # too few tokens, or rows the TMA cannot read (K not a multiple of 8): not timed
    for M, K in ((16, 4096), (dispatch.SM90_DENSE_MIN_M - 8, 768), (4096, 100),
                 (4100, 768)):
        assert not any(v.startswith("sm90_fm_") for v in dispatch.dense_variants(True, M, K))
    assert dispatch.dense_variants(False, 4096, 768) == ("direct",)
    monkeypatch.setattr(sm90_dense, "available", lambda: False)
    assert not any(v.startswith("sm90_fm_") for v in dispatch.dense_variants(True, 4096, 768))


def test_dense_forward_routes_the_variant_to_the_cutlass_kernel(monkeypatch):
    """The configuration name after the prefix reaches the launcher, with the unpacked
    weight, the bias in x's dtype and the activation."""
    dispatch = dispatch_module()
    calls = []

    def fake(x, w, b, activation, config):
        calls.append((x, w, b, activation, config))
        return torch.zeros(w.shape[0], x.shape[1])

    monkeypatch.setattr(sm90_dense, "dense_fm_linear_sm90", fake)
    gen = torch.Generator().manual_seed(3)
    from sparsefx_testing import make_tile_layer
    packed, _ = make_tile_layer(64, 32, 16, "uneven", gen)
    x = torch.randn(32, 24, generator=gen)
    bias = torch.randn(64, generator=gen, dtype=torch.float64)
    dispatch.dense_forward(x, packed.values, packed.row_idx, packed.row_ptr, packed.col_map,
                           bias, 64, "relu", True, "sm90_fm_128x192x64/pingpong")
    (got_x, w, b, activation, config), = calls
    assert got_x is x and config == "128x192x64/pingpong" and activation == "relu"
    assert w.shape == (64, 32) and b.dtype == x.dtype


def test_the_library_configurations_have_unique_descriptive_names():
    """Names are stored in the on-disk decisions: <features>x<tokens>x<k>/<schedule>
    [/c<cluster>], each once."""
    source = (build.CSRC_DIR / sm90_dense.SOURCES[0]).read_text()
    names = re.findall(r'^\s*X\("([^"]+)"', source, re.M)
    assert names and len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"\d+x\d+x\d+/(coop|pingpong)(/c\d)?", name), name
