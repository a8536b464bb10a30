"""csrc build helper: targets, the disable switch and the reasons it reports (CPU)."""
import pytest
import torch

from sparsefx.runtime.cuda import build


def test_hopper_gets_the_arch_specific_target():
    assert build.gencode_for((9, 0)) == ["-gencode=arch=compute_90a,code=sm_90a"]
    assert build.gencode_for((8, 0)) == ["-gencode=arch=compute_80,code=sm_80"]


def test_disable_switch_names_libraries(monkeypatch):
    monkeypatch.setenv(build.DISABLE_ENV, "other_lib,test_lib_a")
    monkeypatch.setattr(build, "_loaded", {})
    assert build.load("test_lib_a", ["bias_residual_layernorm.cu"]) is None
    assert "disabled by" in build.why_not("test_lib_a")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_cpu_only_machine_gets_a_reason_not_an_error(monkeypatch):
    monkeypatch.delenv(build.DISABLE_ENV, raising=False)
    monkeypatch.setattr(build, "_loaded", {})
    assert build.load("test_lib_b", ["bias_residual_layernorm.cu"]) is None
    assert build.why_not("test_lib_b") == "no CUDA device"
    assert build.why_not("never_asked") is None


def test_missing_sources_are_named(monkeypatch):
    monkeypatch.delenv(build.DISABLE_ENV, raising=False)
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build.load("test_lib_c", ["no_such_file.cu"], capability=(9, 0)) is None
    assert "no_such_file.cu" in build.why_not("test_lib_c")


def test_every_csrc_source_exists():
    for name in ("bias_residual_layernorm.cu", "tile_linear_sm90.cu", "eager_fastpath.cpp"):
        assert (build.CSRC_DIR / name).exists()


@pytest.mark.skipif(build.nvcc_path() is None, reason="needs nvcc (no GPU needed)")
@pytest.mark.parametrize("source", ["bias_residual_layernorm.cu", "tile_linear_sm90.cu"])
def test_csrc_compiles_for_hopper(source, tmp_path):
    """The CUDA sources build for sm_90a with the flags the runtime uses (compile only:
    the kernels themselves are checked by the `cuda` tests on a GPU)."""
    target = tmp_path / "lib.so"
    build.compile_library([source], target, (9, 0))
    assert target.stat().st_size > 0


def test_prebuild_reports_every_library(monkeypatch, capsys):
    """`python -m sparsefx.runtime.cuda.prebuild` names each library with a status; a
    machine-level reason (here: disabled) is not a failure, a build error is."""
    from sparsefx.runtime.cuda import prebuild
    monkeypatch.setenv(build.DISABLE_ENV, "1")
    monkeypatch.setattr(build, "_loaded", {})
    assert prebuild.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == \
        ["bias_residual_layernorm", "dense_fm_sm90", "sparsefx_eager_fastpath",
         "tile_linear_sm90"]
    assert all("not available: disabled by" in line for line in lines)
    assert prebuild._failed("not available: nvcc failed: error: expected ';'")
    assert not prebuild._failed("not available: no CUDA device")
    assert not prebuild._failed("ok (0.1 s): /tmp/x.so")
