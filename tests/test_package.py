import subprocess
import sys


def test_import_does_not_import_torch():
    code = "import sys, structmat; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_public_names():
    import structmat

    for name in structmat.__all__:
        assert hasattr(structmat, name), name
