import sys

import numpy as np
import pytest

from structmat.parallel import SHARE_BYTES, Task, TaskError, matrix_from_bytes, matrix_to_bytes, run_grid
from structmat.parallel.tasks import execute

T = "tests.parallel._tasks"


def _by_index(results):
    results = sorted(results, key=lambda r: r.index)
    return [r.value for r in results], results


def _grid():
    big = np.arange(SHARE_BYTES // 8 + 10, dtype=np.float64)  # over the sharing threshold: sent once per run
    tasks = [Task(f"{T}:square", {"x": i}, key=("square", i)) for i in range(5)]
    tasks += [Task(f"{T}:array_sum", {"values": big, "scale": s}) for s in (1.0, 0.5)]
    tasks.append(Task(f"{T}:array_sum", {"values": np.arange(4.0)}))
    blob = bytes(range(256)) * (SHARE_BYTES // 256 + 1)  # large bytes are shared too
    tasks += [Task(f"{T}:bytes_size", {"blob": blob, "start": s}) for s in (0, 4)]
    return tasks


def _plain(values):
    return [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in value.items() if k != "pid"}
            for value in values]


def test_every_executor_returns_every_task_once_with_the_same_values():
    serial, results = _by_index(run_grid(_grid()))
    assert [r.index for r in results] == list(range(10)) and all(r.ok and r.attempts == 1 for r in results)
    assert serial[3]["square"] == 9 and results[3].key == ("square", 3) and results[6].key == (6,)
    n = SHARE_BYTES // 8 + 10
    assert serial[6]["sum"] == 0.5 * n * (n - 1) / 2 and serial[7]["first"].tolist() == [0, 1, 2]
    assert serial[7]["blob"] == b"abc"
    assert serial[9] == {"size": 256 * (SHARE_BYTES // 256 + 1), "head": bytes([4, 5, 6, 7])}
    pooled, results = _by_index(run_grid(_grid(), jobs=2))
    assert _plain(pooled) == _plain(serial)
    assert len({r.worker for r in results}) == 2  # both workers took tasks


def test_dask_cluster_runs_the_grid_and_survives_a_killed_worker(dask_client, tmp_path):
    values, _ = _by_index(run_grid(_grid(), executor=dask_client))
    assert _plain(values) == _plain(_by_index(run_grid(_grid()))[0])
    # the first attempt kills its worker process (as the out-of-memory killer would); Dask re-runs it elsewhere
    tasks = [Task(f"{T}:die_once", {"marker": str(tmp_path / "died"), "x": 7})]
    tasks += [Task(f"{T}:square", {"x": i}) for i in range(4)]
    results = sorted(run_grid(tasks, executor=dask_client), key=lambda r: r.index)
    assert [r.status for r in results] == ["ok"] * 5 and results[0].value["x"] == 7
    assert int((tmp_path / "died").read_text()) != results[0].value["pid"]


def test_a_killed_pool_worker_costs_a_rerun_of_its_task_only(tmp_path):
    tasks = [Task(f"{T}:square", {"x": i, "pause": 0.05}) for i in range(6)]
    tasks.insert(2, Task(f"{T}:die_once", {"marker": str(tmp_path / "died"), "x": 2}, key=("dies",)))
    results = list(run_grid(tasks, jobs=2))
    assert sorted(r.index for r in results) == list(range(7))  # every task exactly once
    by_index = {r.index: r for r in results}
    assert all(r.ok for r in results) and by_index[2].attempts == 2 and by_index[2].value["x"] == 2
    assert int((tmp_path / "died").read_text()) != by_index[2].value["pid"]


def test_a_task_that_always_kills_its_worker_is_reported_lost():
    tasks = [Task(f"{T}:always_die", key=("killer",)), Task(f"{T}:square", {"x": 3})]
    results = {r.index: r for r in run_grid(tasks, jobs=2, errors="return", max_worker_deaths=2)}
    assert results[0].status == "lost" and "died 2 times (exit code SIGKILL(-9)" in results[0].message
    assert results[0].attempts >= 2  # one more when the other task was running beside it the first time
    assert results[1].ok and results[1].value["square"] == 9


def test_time_limit_kills_the_task_and_reports_it():
    tasks = [Task(f"{T}:sleep", {"seconds": 30}), Task(f"{T}:square", {"x": 4}, time_limit=120),
             Task(f"{T}:sleep", {"seconds": 30}, time_limit=0.5)]
    results = sorted(run_grid(tasks, time_limit=2), key=lambda r: r.index)
    assert [r.status for r in results] == ["timed out", "ok", "timed out"]
    assert "limit of 2 s" in results[0].message and "limit of 0.5 s" in results[2].message
    assert results[2].seconds < 5
    assert results[1].value["square"] == 16  # came back from the child through files, not pickle


def test_errors_raise_with_the_task_key_or_come_back():
    tasks = [Task(f"{T}:square", {"x": 1}), Task(f"{T}:fail", {"message": "bad cell"}, key=("m", "lowrank"))]
    with pytest.raises(TaskError, match=r"\('m', 'lowrank'\) failed.*ValueError: bad cell"):
        list(run_grid(tasks))
    results = {r.index: r for r in run_grid(tasks, jobs=2, errors="return")}
    assert results[1].status == "error" and results[1].error_type == "ValueError"
    assert "bad cell" in results[1].message and "Traceback" in results[1].worker_traceback
    assert execute(0, Task(f"{T}:not_a_row")).message.startswith("task function tests.parallel._tasks:not_a_row "
                                                                 "must return a dict")


def test_workers_run_one_thread_each():
    (result,) = run_grid([Task(f"{T}:threads_seen")], jobs=2)
    assert result.value["omp"] == "1" and set(result.value["blas"]) <= {1}


def test_tasks_carry_plain_data_only():
    task = Task(f"{T}:square", {"x": np.int64(3), "flags": [True, None, "a", 0.5], "ok": np.bool_(True)})
    assert task.function == "tests.parallel._tasks:square" and task.arguments["x"] == 3
    with pytest.raises(ValueError, match="importable by workers"):
        Task(lambda: {})
    with pytest.raises(ValueError, match="package.module:function"):
        Task("no_colon")
    with pytest.raises(TypeError, match=r"task arguments\['model'\] is a object.*never Python objects"):
        Task(f"{T}:square", {"model": object()})
    with pytest.raises(TypeError, match="only numeric and boolean arrays"):
        Task(f"{T}:square", {"x": np.array(["a"], dtype=object)})
    with pytest.raises(ValueError, match="time_limit must be"):
        Task(f"{T}:square", {"x": 1}, time_limit=0)


def test_bad_run_options_are_refused():
    tasks = [Task(f"{T}:square", {"x": 1})]
    with pytest.raises(ValueError, match=r"jobs must be an int >= 1, or -1"):
        list(run_grid(tasks, jobs=0))
    with pytest.raises(ValueError, match="executor must be None or one of serial, processes, dask:local"):
        list(run_grid(tasks, executor="threads"))
    with pytest.raises(ValueError, match="errors must be"):
        list(run_grid(tasks, errors="ignore"))
    with pytest.raises(TypeError, match=r"tasks\[0\] must be a structmat.parallel.Task"):
        list(run_grid([{"x": 1}]))


def test_dask_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'structmat\[dask\]'"):
        list(run_grid([Task(f"{T}:square", {"x": 1})], executor="dask:local"))


def test_matrices_travel_as_npz_bytes(rng):
    import structmat

    M = structmat.approximate(rng.standard_normal((12, 9)), "lowrank", 0.5)
    back = matrix_from_bytes(matrix_to_bytes(M))
    assert back.family == "lowrank" and np.array_equal(back.to_dense(), M.to_dense())
    with pytest.raises(TypeError, match="bytes of a .npz"):
        matrix_from_bytes("M.npz")


def test_loky_idle_worker_restarts_do_not_warn_users():
    import warnings

    from structmat.parallel.local import WORKER_STOPPED_WARNING, quiet_worker_restarts

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_worker_restarts()
        warnings.warn(WORKER_STOPPED_WARNING + ". This can be caused by a too short worker timeout.", UserWarning)
        warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in caught] == ["another warning"]
