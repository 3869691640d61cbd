"""The sweep through every executor: the same CSV, every cell exactly once even when a worker is killed."""

import csv
import os
import signal
import threading
import time

import numpy as np
import pytest

import structmat
from structmat.benchmarks.sweep import run_sweep
from structmat.cli import main
from tests.parallel.conftest import loky_worker_pids, worker_pids

FAMILIES = ["lowrank", "sparse", "monarch", "hodlr", "sss", "toeplitz_like"]


def _rows_without_times(path):
    """The CSV's rows with the measured fit_seconds left out: everything else must be the same bytes."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "fit_seconds"} for row in csv.DictReader(f)]


def _sweep_cli(tmp_path, name, *options):
    out = tmp_path / name
    code = main(["sweep", "-m", "gaussian:40x30", "-m", "powerlaw:48x64:3", *sum((["-f", f] for f in FAMILIES), []),
                 "-b", "0.1", "0.3", "-o", str(out), "-q", "--save-matrices", *options])
    assert code == 0
    return out


def test_serial_pool_and_dask_local_sweeps_write_the_same_csv(tmp_path):
    serial = _sweep_cli(tmp_path, "serial", "--jobs", "1")
    pooled = _sweep_cli(tmp_path, "pool", "--jobs", "2")
    dask = _sweep_cli(tmp_path, "dask", "--dask", "local", "--jobs", "2")
    rows = _rows_without_times(serial / "sweep.csv")
    assert len(rows) == 2 * len(FAMILIES) * 2 and sum(r["status"] == "ok" for r in rows) >= 20
    assert _rows_without_times(pooled / "sweep.csv") == rows
    assert _rows_without_times(dask / "sweep.csv") == rows
    lines = [p.read_text().splitlines()[0] for p in (serial / "sweep.csv", pooled / "sweep.csv")]
    assert lines[0] == lines[1]
    for path in sorted((serial / "matrices").glob("*.npz")):  # fitted in workers, written by the parent
        for other in (pooled, dask):
            assert np.array_equal(structmat.load(other / "matrices" / path.name).to_dense(),
                                  structmat.load(path).to_dense())


def _kill_one_worker_when_started(csv_path, pids, killed):
    """Wait for the first finished cell, then SIGKILL one worker process (as the out-of-memory killer would)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 2:
            live = pids()
            if live:
                os.kill(live[0], signal.SIGKILL)
                killed.append(live[0])
                return
        time.sleep(0.01)


def _matrices():
    rng = np.random.default_rng(7)
    return {"a": rng.standard_normal((160, 120)), "b": rng.standard_normal((96, 144))}


BUDGETS = [0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("serial") / "sweep.csv"
    run_sweep(_matrices(), FAMILIES, BUDGETS, csv_path=path)
    return _rows_without_times(path)


@pytest.mark.parametrize("where", ["pool", "dask"])
def test_killing_a_worker_mid_sweep_still_yields_every_cell_once(where, serial_rows, tmp_path, request):
    csv_path = tmp_path / "sweep.csv"
    if where == "pool":
        options, pids = {"jobs": 2}, loky_worker_pids
    else:
        client = request.getfixturevalue("dask_client")
        options, pids = {"executor": client}, lambda: worker_pids(client)
    killed = []
    killer = threading.Thread(target=_kill_one_worker_when_started, args=(csv_path, pids, killed), daemon=True)
    killer.start()
    rows = run_sweep(_matrices(), FAMILIES, BUDGETS, csv_path=csv_path, **options)
    killer.join(timeout=5)
    assert killed, "the sweep finished before a worker could be killed"
    assert len(rows) == len(serial_rows)
    assert _rows_without_times(csv_path) == serial_rows  # every cell once, in grid order, same values
