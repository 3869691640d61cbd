"""Every script in examples/ runs (its --fast version), so the examples and the README code copied from them cannot
rot. Each runs in a fresh interpreter, as a user would run it, on one thread."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_every_job_has_an_example():
    assert {p.stem for p in EXAMPLES} >= {"approximate", "finetune", "compress", "c_speed", "training_layers"}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    # tmp_path as the working directory: an example must not depend on, or write into, the repository
    if script.stem == "c_speed" and not (os.environ.get("CC") or shutil.which("cc")):
        pytest.skip("no C compiler (cc) on this machine")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "STRUCTMAT_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), "--fast"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"


def _code_blocks(text: str, language: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append("\n".join(current))
                inside, current = False, []
            elif line.strip() == f"```{language}":
                inside = True
        elif inside:
            current.append(line)
    return blocks


def test_readme_python_is_copied_from_the_examples():
    """Every line of the README's Python blocks appears in one of the examples (comments aside), so that the code
    the README shows is code the test suite runs."""
    example_lines = {line.split("#")[0].strip() for p in EXAMPLES for line in p.read_text().splitlines()}
    for block in _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python"):
        for line in block.splitlines():
            code = line.split("#")[0].strip()
            if code and code != "...":
                assert code in example_lines, f"README line not found in examples/: {line!r}"
