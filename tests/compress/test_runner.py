import time

from structmat.compress._runner import run_task


def sleeper(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def failing(message: str) -> dict:
    raise ValueError(message)


def test_a_task_runs_in_a_child_with_a_time_limit():
    assert run_task(sleeper, {"seconds": 0.0}, time_limit=30)["slept"] == 0.0
    row = run_task(sleeper, {"seconds": 30.0}, time_limit=0.5)
    assert row["status"] == "timed out" and "0.5 s" in row["message"]
    row = run_task(failing, {"message": "budget too small"}, time_limit=30)
    assert row["status"] == "error" and row["message"] == "ValueError: budget too small"
    assert run_task(failing, {"message": "x"}, time_limit=None)["status"] == "error"
