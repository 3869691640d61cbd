"""Compiling once: the cache is keyed by sources, compiler and flags; the sources are strict C99."""

import shutil
import subprocess

import pytest

from structmat.speed_c import build
from structmat.speed_c.build import SOURCE_DIR, compile_driver, kernel_names


def test_cache_is_reused(driver, cache_dir, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran although a cached binary exists")

    monkeypatch.setattr(build.subprocess, "run", no_compiler)
    assert compile_driver(cache_dir=cache_dir) == driver
    assert driver.exists() and (driver.parent / "build.json").exists()


def test_flags_change_the_key(driver, cache_dir, tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        out = argv[argv.index("-o") + 1]
        open(out, "w").close()
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(build.subprocess, "run", fake_run)
    other = compile_driver(cache_dir=tmp_path, flags="-O1")
    assert other.parent.name != driver.parent.name and len(calls) == 1 and "-O1" in calls[0]
    assert compile_driver(cache_dir=tmp_path, flags=["-O1"]) == other and len(calls) == 1
    compile_driver(cache_dir=tmp_path, flags="-O1", force=True)
    assert len(calls) == 2


def test_sources_are_strict_c99(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    binary = compile_driver(cache_dir=tmp_path, flags="-std=c99 -pedantic -Wall -Wextra -Werror -O1")
    listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout
    assert sorted(line.split()[1] for line in listed.splitlines()) == kernel_names()


def test_registry_lists_every_kernel_file():
    source = build._registry_source(kernel_names())
    for name in kernel_names():
        assert f"&sm_family_{name}," in source
        assert (SOURCE_DIR / f"kernel_{name}.c").read_text().count(f"const sm_family sm_family_{name} =") == 1
