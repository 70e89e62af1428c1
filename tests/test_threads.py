"""OMP_THREAD_LIMIT below PyTorch's thread count corrupts CPU convolution gradients; the entry
points lower PyTorch's threads to the limit, and OCR never leaks the limit to child processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

SCRIPT = """
import sys, numpy as np, torch
if sys.argv[1] == "guard":
    from aetnet.threads import respect_omp_thread_limit
    respect_omp_thread_limit()
torch.manual_seed(0)
conv = torch.nn.Conv2d(3, 64, 16, stride=16)  # LayoutLMv3's patch embedding, tiny
x = torch.randn(4, 3, 64, 64)
conv(x).square().sum().backward()
np.save(sys.argv[2], conv.weight.grad.numpy())
"""


def _grad(tmp_path, name, mode, limit):
    env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    if limit:
        env["OMP_THREAD_LIMIT"] = limit
    out = tmp_path / f"{name}.npy"
    subprocess.run([sys.executable, "-c", SCRIPT, mode, str(out)], env=env, check=True, timeout=120)
    return np.load(out)


def test_thread_limit_guard_gives_correct_conv_gradients(tmp_path):
    reference = _grad(tmp_path, "reference", "plain", None)
    guarded = _grad(tmp_path, "guarded", "guard", "1")
    assert np.isfinite(guarded).all()
    np.testing.assert_allclose(guarded, reference, rtol=1e-4, atol=1e-4)


def test_ocr_does_not_leak_the_thread_limit(shared_data, tmp_path):
    from aetnet.data.ocr.tesseract import ocr_image

    before = os.environ.get("OMP_THREAD_LIMIT")
    words, _ = ocr_image(shared_data / "ocr" / "phototest.tif", cache_dir=tmp_path)  # a real Tesseract run
    assert words
    assert os.environ.get("OMP_THREAD_LIMIT") == before
