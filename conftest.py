"""pytest settings for the whole course run (``python course.py test``): a notebook cell that nbval
stopped at its time limit fails the run, whatever the cell's code did with the interrupt.

nbval (0.11) stops a cell that runs past ``--nbval-cell-timeout`` by interrupting the kernel, and
marks the following cells "expected to fail". Two holes let such a run pass: code that catches the
``KeyboardInterrupt`` ends the cell normally (so the cell passes), and the following cells then
pass as XPASS. ``xfail_strict = true`` in pyproject.toml turns those XPASSes into failures; the
hook below fails the cell itself. ``tests/test_nbval_guards.py`` runs both cases.
"""
import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    notebook = item.parent
    timed_out_before = getattr(notebook, "timed_out", None)  # only nbval's notebook items have it
    result = yield
    if timed_out_before is False and getattr(notebook, "timed_out", False):
        limit = item.config.option.nbval_cell_timeout
        pytest.fail(f"{item.name} ran past the cell time limit (--nbval-cell-timeout={limit:g} s) and was "
                    "interrupted; its code went on as if it had finished. A lesson must finish in time: "
                    "`python course.py test notebooks/NN_*.ipynb --durations=5` lists the slowest cells.",
                    pytrace=False)
    return result
