"""The torchvision fix: works here, and is a no-op/transparent for other errors."""

import subprocess
import sys

import pytest


def test_smp_imports_and_builds_without_network():
    code = (
        "from label_assistant.model.compat import import_smp\n"
        "smp = import_smp()\n"
        "import torch\n"
        "m = smp.create_model('Unet', 'resnet18', encoder_weights=None, in_channels=1, classes=2)\n"
        "print(tuple(m(torch.zeros(1, 1, 64, 64)).shape))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(1, 2, 64, 64)"


def test_other_runtime_errors_are_not_swallowed(monkeypatch):
    import builtins

    from label_assistant.model import compat

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("something else went wrong")
        return real_import(name, *args, **kwargs)

    saved = {k: v for k, v in sys.modules.items() if k.startswith("torchvision")}
    for k in saved:
        del sys.modules[k]
    monkeypatch.setattr(builtins, "__import__", failing_import)
    try:
        with pytest.raises(RuntimeError, match="something else"):
            compat.import_torchvision()
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        sys.modules.update(saved)
