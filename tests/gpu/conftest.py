"""Fixtures shared by the GPU tests."""
import pytest


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """Kernel choice with an empty decision cache in a temporary directory; yields the
    dispatch module (imported only here: it needs triton and a GPU)."""
    monkeypatch.setenv("SPARSEFX_CACHE_DIR", str(tmp_path))
    from sparsefx.runtime.cuda import dispatch, register_cuda_kernels
    assert register_cuda_kernels()
    dispatch.clear_decisions()
    yield dispatch
    dispatch.clear_decisions()
