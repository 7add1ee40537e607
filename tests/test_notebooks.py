"""Every committed notebook is a finished lesson: executed in order from a fresh kernel with no
error, small, and shaped like the others (title, run time, asserts, key result, summary, exercises).
nbval (``pytest --nbval-lax notebooks``) re-executes them; these tests check what was committed."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return nb, nb["cells"], [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_the_course_has_its_lessons():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:3] == ["00_setup_and_torchvision_tour", "01_fashionmnist_baselines", "02_cnns"]
    numbers = [n.split("_")[0] for n in names]  # 04 and 04b are two lessons
    assert len(set(numbers)) == len(numbers), "two notebooks share a lesson number"
    assert all(len(n) in (2, 3) and n[:2].isdigit() for n in numbers), numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_in_order_without_errors(path):
    _, _, code = _cells(path)
    counts = [c["execution_count"] for c in code]
    assert None not in counts, "a code cell was never executed: run `python course.py regenerate`"
    assert counts == list(range(1, len(code) + 1)), "cells were not executed once each, top to bottom, from a fresh kernel"
    for c in code:
        assert not [o for o in c["outputs"] if o["output_type"] == "error"], "a cell has an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_shape(path):
    nb, cells, code = _cells(path)
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and re.match(rf"# {path.name.split('_')[0]} · ", first), \
        "title '# NN · ...' first (NN: the file name's number, e.g. 04b)"
    assert "What you will learn" in first and "Run time:" in first
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "## Summary" in markdown
    exercises = markdown.split("## Exercises", 1)
    assert len(exercises) == 2, "an Exercises section ends every lesson"
    assert 3 <= len(re.findall(r"^### Exercise \d+ · ", exercises[1], flags=re.M)) <= 5, \
        "3-5 checked exercises (tests/test_exercises.py checks their nbgrader markup)"
    sources = "\n".join("".join(c["source"]) for c in code)
    assert sources.count("assert ") >= 3, "cells assert what they teach, so that nbval tests it"
    assert "key_result(" in sources, "the course run reports each lesson's key result"
    assert "set_seed(" in sources
    assert not re.search(r"^\s*[!%]pip ", sources, flags=re.M), "no installs inside lessons"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_small(path):
    assert path.stat().st_size < 800_000, "keep figures small (dpi 72, PNG) and logs short"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_key_result_was_printed(path):
    _, _, code = _cells(path)
    text = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"] if o["output_type"] == "stream")
    assert "Key result: " in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_warnings_in_committed_outputs(path):
    """A warning's text holds the kernel's temporary file name, which changes every run: in a cell
    whose output nbval checks it fails the test, elsewhere it is noise a learner should not see."""
    _, _, code = _cells(path)
    for c in code:
        stderr = [o for o in c["outputs"] if o["output_type"] == "stream" and o["name"] == "stderr"]
        assert not stderr, f"a cell writes to stderr: {''.join(stderr[0]['text'])[:200]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_hold_no_host_paths_or_download_noise(path):
    """Learners see committed outputs: no machine's folders, no traceback words of a failed download."""
    _, _, code = _cells(path)
    text = "\n".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}).get("text/plain", ""))
                      for c in code for o in c["outputs"])
    for noise in ("URLError", "Downloading:", "/root/", "/home/", "/tmp/", "/work/", "site-packages"):
        assert noise not in text, f"an output shows {noise!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_time_in_the_header_is_the_readme_s(path):
    """One source of run times: ``python course.py --headless --record-times`` (and with --avx2)
    writes both places, so a header and the README's table never disagree."""
    first = "".join(_cells(path)[1][0]["source"])
    header = re.search(r"\*\*Run time:\*\* about (\d+) seconds on [^\n]*?, and about (\d+) seconds with PyTorch", first)
    assert header, "the header needs the run-time line that course.py --record-times writes"
    readme = (path.parents[1] / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| `{re.escape(path.stem)}` \|.*?\| ~(\d+) s / ~(\d+) s \|", readme, flags=re.M)
    assert row, f"README's lesson table has no row for {path.stem}"
    assert header.groups() == row.groups(), (f"{path.name}: header says {header.groups()} s, README {row.groups()} s; "
                                             "run python course.py --headless --record-times (and with --avx2)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_progress_bars_show_their_final_state(path):
    """A viewer without widgets (GitHub, HTML export, an untrusted notebook) shows each tqdm bar's
    text: it must be the finished bar, not "0%|          | 0/N" (course.settle_progress_text)."""
    for cell in _cells(path)[2]:
        for output in cell["outputs"]:
            data = output.get("data", {})
            text = "".join(data.get("text/plain", ""))
            if "application/vnd.jupyter.widget-view+json" in data and re.search(r"\d+%\|", text):
                assert re.search(r"100%\|█{10}\|", text), f"an unfinished bar in the committed output: {text!r}"
