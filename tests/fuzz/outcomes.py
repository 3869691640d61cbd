"""Classifying what a bad input did: a clear error, a correct result, or a defect.

Every fuzz case ends in one :class:`Outcome`:

``clear error``
    an exception of an accepted type (``ValueError``, ``TypeError``, ``FileNotFoundError``, the library's file
    errors, ...) whose message is one non-empty line, names what was wrong where the case says what to look for
    (the file, the expected size), and never suggests ``allow_pickle``; for the command line, exit code 2 and one
    line on stderr.
``correct result``
    no error, and the result is right: checked against an independent reference (the dense matrix, ``nn.Linear``,
    the original file's product), never against the code under test.
``defect``
    anything else: an unexpected exception type (a traceback a user would see), a message that is empty, spans
    lines or misleads, a crash of a child process, or a result that is silently wrong.

The suite fails on any defect. Outcomes are recorded on the test's report (``user_properties``), so the totals are
printed at the end of the run, with pytest-xdist too (see ``conftest.py``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

CLEAR = "clear error"
CORRECT = "correct result"
DEFECT = "defect"
PROPERTY = "fuzz_outcome"


@dataclass(frozen=True)
class Outcome:
    area: str
    case: str
    kind: str
    detail: str = ""


class Recorder:
    """Collects the outcomes of one test and fails it on a defect."""

    def __init__(self, request, area: str) -> None:
        self.request, self.area = request, area

    def record(self, case: str, kind: str, detail: str = "") -> Outcome:
        outcome = Outcome(self.area, case, kind, detail)
        self.request.node.user_properties.append((PROPERTY, (self.area, kind)))
        assert kind != DEFECT, f"{self.area}: {case}: {detail}"
        return outcome

    def call(self, case: str, fn, *, errors=(ValueError, TypeError), check=None, mentions=()):
        """Run ``fn()``: an accepted exception with a clear message is a clear error; a return value is a correct
        result when ``check(value)`` returns None, else the string it returns describes the defect."""
        try:
            value = fn()
        except errors as exc:
            return self.record(case, *judge_message(exc, mentions))
        except Exception as exc:  # noqa: BLE001 - an unexpected exception type is the defect being looked for
            tail = "".join(traceback.format_exception(exc)[-3:])
            return self.record(case, DEFECT, f"unexpected {type(exc).__name__}: {exc}\n{tail}")
        problem = check(value) if check is not None else None
        if problem:
            return self.record(case, DEFECT, f"silently wrong: {problem}")
        return self.record(case, CORRECT)

    def cli(self, case: str, code: int, err: str, *, check=None, mentions=()):
        """Judge a command-line run by its exit code and stderr (``check()`` judges a success)."""
        lines = err.strip().splitlines()
        if "Traceback" in err:
            return self.record(case, DEFECT, f"traceback:\n{err[-2000:]}")
        if code == 0:
            problem = check() if check is not None else None
            return self.record(case, DEFECT if problem else CORRECT, problem or "")
        if code in (1, 2) and len(lines) == 1 and (": error: " in lines[0] or ": failed: " in lines[0]):
            missing = [m for m in mentions if m not in lines[0]]
            if missing:
                return self.record(case, DEFECT, f"the message does not name {missing}: {lines[0]}")
            return self.record(case, CLEAR)
        return self.record(case, DEFECT, f"exit {code} with {len(lines)} lines on stderr: {err[-1000:]}")


def judge_message(exc: BaseException, mentions=()) -> tuple[str, str]:
    """``(kind, detail)`` for an accepted exception: clear if its message is one non-empty line that names what
    ``mentions`` lists and does not suggest unpickling."""
    text = str(exc)
    if not text.strip():
        return DEFECT, f"{type(exc).__name__} with an empty message"
    if "\n" in text.strip():
        return DEFECT, f"{type(exc).__name__} with a message of several lines: {text!r}"
    if "allow_pickle" in text:
        return DEFECT, f"the message suggests unpickling: {text}"
    missing = [m for m in mentions if m not in text]
    if missing:
        return DEFECT, f"the message does not name {missing}: {text}"
    return CLEAR, ""
