"""Checked exercises: the instant feedback of the lessons' check cells.

Every lesson ends with exercises in nbgrader's markup (https://nbgrader.readthedocs.io), the
classroom standard: a *solution cell* (``nbgrader.solution``) whose answer sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION``, then a locked, autograded *check cell*
(``nbgrader.grade``, 1 point). The committed notebooks are the instructor versions, executed with
their solutions; ``python course.py student`` removes the solutions (nbgrader's
``generate_assignment``) and leaves the starter code outside the markers, on which every check
fails (a test in CI runs them all).

A check cell calls the functions below. A failed check raises :class:`ExerciseFeedback`, an
``AssertionError`` (so that nbgrader counts it as a failed test) whose message says what is wrong
and gives a hint, never the answer. In IPython (Jupyter) the error shows as its one-line message,
without a traceback into this module (``IPython``'s ``set_custom_exc``). A passed check prints one
line that starts with a check mark.

Example (a check cell)::

    answered(iou=iou)
    expect(isinstance(iou, float), f"iou should be a Python float, got {type(iou).__name__}: use .item()")
    expect(abs(iou - 1 / 7) < 1e-6, "not the IoU of the two boxes: intersection area / union area")
    passed("the IoU of two 4x4 boxes that share a 2x2 corner is 4 / 28 = 1/7")
"""
from __future__ import annotations

import math

__all__ = ["ExerciseFeedback", "answered", "expect", "expect_close", "passed"]


class ExerciseFeedback(AssertionError):
    """A check that did not pass. Its message says what is wrong and what to try; nbgrader counts
    it as a failed test (it is an ``AssertionError``)."""


def answered(**values) -> None:
    """Check that every named answer was given: not ``None`` and not ``...`` (the starter values).

    Args:
        **values: the learner's answers by name, e.g. ``answered(grid=grid, n_models=n_models)``.

    Raises:
        ExerciseFeedback: naming the first answer still at its starter value, and what to do.
    """
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame)
    for name, value in values.items():
        if value is None or value is Ellipsis:
            raise ExerciseFeedback(f"`{name}` is still {value!r}: write your answer in the cell above "
                                   "(where it says YOUR CODE HERE), run it, then run this check again")


def expect(condition: object, message: str) -> None:
    """Check one property of an answer.

    Args:
        condition: what must hold (anything with a truth value; a one-element tensor works).
        message: what is wrong when it does not hold, with a hint; never the answer itself.

    Raises:
        ExerciseFeedback: with ``message`` when ``condition`` is false.
    """
    __tracebackhide__ = True  # noqa: F841
    if not bool(condition):
        raise ExerciseFeedback(message)


def expect_close(value: float, target: float, *, tol: float, what: str, hint: str = "") -> None:
    """Check that a number is within ``tol`` of the right one, without printing the right one.

    Args:
        value: the learner's number (a float, an int or a one-element tensor).
        target: the right number.
        tol: the largest absolute difference accepted (same unit as ``value``).
        what: what the number is, for the message (e.g. "the test accuracy in %").
        hint: what to try when it is off.

    Raises:
        ExerciseFeedback: when ``value`` is not a finite number, or is further than ``tol`` from
            ``target`` (the message says whether it is too high or too low).
    """
    __tracebackhide__ = True  # noqa: F841
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseFeedback(f"{what} should be a number, got {type(value).__name__}") from None
    if not math.isfinite(number):
        raise ExerciseFeedback(f"{what} is {number}: {hint or 'check the computation'}")
    if abs(number - target) > tol:
        side = "too high" if number > target else "too low"
        raise ExerciseFeedback(f"{what} is {side} ({number:.6g}). {hint}".strip())


def passed(what: str) -> None:
    """Say that a check passed: prints ``✓ Correct: <what>`` (what the exercise showed)."""
    print(f"✓ Correct: {what}")


def _show_feedback(shell, etype, value, tb, tb_offset=None) -> list[str]:
    """IPython's handler for ExerciseFeedback: the message in one red line, no traceback."""
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, stb)  # the kernel's error output (ipykernel's and the terminal's)
    return stb


def _short_feedback_in_ipython() -> None:
    """Show a failed check as one line in IPython; nothing changes outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "_showtraceback"):
        shell.set_custom_exc((ExerciseFeedback,), _show_feedback)


_short_feedback_in_ipython()
