"""The lessons' checked exercises (nbgrader markup) and their student versions.

The committed notebooks are the instructor versions: nbval runs them, solutions included, so every
check passes there. Here: the markup is what nbgrader needs, and the student versions that
``python course.py student`` makes (nbgrader's ``generate_assignment``) run top to bottom in one
kernel where every check fails on the untouched starter code with the check's own feedback, and
passes once the instructor's solution is run in its place. So no check passes without the work.
"""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import course  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FEEDBACK = ("ExerciseFeedback", "AssertionError")


def _graded(path):
    """(solution cells, check cells) of a notebook, each a list of (index, cell)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    meta = [c.get("metadata", {}).get("nbgrader", {}) for c in cells]
    solutions = [(i, c) for i, (c, m) in enumerate(zip(cells, meta)) if m.get("solution") and c["cell_type"] == "code"]
    checks = [(i, c) for i, (c, m) in enumerate(zip(cells, meta)) if m.get("grade") and c["cell_type"] == "code"]
    return cells, solutions, checks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_lesson_has_checked_exercises(path):
    cells, solutions, checks = _graded(path)
    assert len(solutions) >= 3, f"{path.name}: at least 3 checked exercises (nbgrader solution cells)"
    assert len(checks) == len(solutions), "one check cell after each solution cell"
    for (i, solution), (j, check) in zip(solutions, checks):
        source, test = "".join(solution["source"]), "".join(check["source"])
        assert j == i + 1, "each check cell comes right after its solution cell"
        assert source.count("### BEGIN SOLUTION") == source.count("### END SOLUTION") == 1, source[:200]
        assert "passed(" in test and check["metadata"]["nbgrader"]["points"] > 0 and check["metadata"]["nbgrader"]["locked"]
        assert "### BEGIN SOLUTION" not in test, "a check cell holds no solution"
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in cells if "nbgrader" in c.get("metadata", {})]
    assert len(ids) == len(set(ids)), "nbgrader's grade_id values are unique in a notebook"
    prompts = [c for c in cells if c["cell_type"] == "markdown" and re.match(r"### Exercise \d+ · ", "".join(c["source"]))]
    assert len(prompts) == len(solutions), "each exercise has a prompt '### Exercise N · title'"


def test_student_versions_are_made_with_nbgrader(tmp_path):
    made = course.make_student_versions(["00_"], classroom=tmp_path)
    assert [p.name for p in made] == ["00_setup_and_torchvision_tour.ipynb"]
    assert (tmp_path / "nbgrader_config.py").is_file() and (tmp_path / "gradebook.db").is_file()
    student = json.loads(made[0].read_text(encoding="utf-8"))
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "YOUR CODE HERE" in text
    assert all(not c.get("outputs") for c in student["cells"] if c["cell_type"] == "code"), "outputs cleared"


def _error(cell):
    errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
    return errors[0] if errors else None


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    return tmp_path_factory.mktemp("classroom")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_check_fails_on_the_starter_and_passes_with_the_solution(path, classroom):
    """One kernel runs the student version top to bottom. The lesson's cells must run clean; at each
    exercise the starter runs, its check must fail with feedback (ExerciseFeedback, an AssertionError);
    then the instructor's solution runs and the same check must pass."""
    import nbformat
    from nbclient import NotebookClient

    (student_path,) = course.make_student_versions([path.stem], classroom=classroom)
    student = nbformat.read(student_path, as_version=4)
    instructor = {c.metadata["nbgrader"]["grade_id"]: c for c in nbformat.read(path, as_version=4).cells
                  if c.metadata.get("nbgrader", {}).get("solution")}
    client = NotebookClient(student, timeout=course.CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    failed_on_starter, solved = [], []
    with client.setup_kernel():
        pending = None  # the instructor's solution of the exercise whose check runs next
        for index, cell in enumerate(student.cells):
            if cell.cell_type != "code":
                continue
            grading = cell.metadata.get("nbgrader", {})
            client.execute_cell(cell, index)
            error = _error(cell)
            if grading.get("solution"):
                assert "YOUR CODE HERE" in cell.source, f"cell {index}: the student version kept a solution"
                assert error is None, f"cell {index}: the starter code itself fails: {error['ename']}: {error['evalue']}"
                pending = instructor[grading["grade_id"]]
            elif grading.get("grade"):
                assert error is not None, f"cell {index} ({grading['grade_id']}): the check passes on the starter code"
                assert error["ename"] in FEEDBACK, (f"cell {index} ({grading['grade_id']}): the check fails on the starter "
                                                    f"with {error['ename']}: {error['evalue']}, not with its feedback")
                failed_on_starter.append(grading["grade_id"])
                solution = nbformat.v4.new_code_cell(pending.source)
                client.execute_cell(solution, index)
                retry = nbformat.v4.new_code_cell(cell.source)
                client.execute_cell(retry, index)
                error = _error(solution) or _error(retry)
                assert error is None, f"cell {index}: with the solution the check fails: {error['ename']}: {error['evalue']}"
                solved.append(grading["grade_id"])
            else:
                assert error is None, f"cell {index}: a lesson cell fails in the student version: {error['ename']}: {error['evalue']}"
    assert len(failed_on_starter) >= 3 and failed_on_starter == solved


def test_nbgrader_autogrades_a_lesson(tmp_path):
    """A teacher's round trip on lesson 00: the untouched student version scores 0, the instructor's
    (the solutions) full marks, both graded by ``nbgrader autograde`` in the course folder."""
    import shutil

    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    lesson = NOTEBOOKS[0]
    (student,) = course.make_student_versions([lesson.stem], classroom=tmp_path)
    for learner, version in (("starter", student), ("solved", lesson)):
        folder = tmp_path / "submitted" / learner / lesson.stem
        folder.mkdir(parents=True)
        shutil.copyfile(version, folder / lesson.name)
    config = Config()
    config.CourseDirectory.root = str(tmp_path)
    config.ClearSolutions.code_stub = {"python": course.SOLUTION_STUB}
    api = NbGraderAPI(config=config)
    points = len(_graded(lesson)[2])
    scores = {}
    for learner in ("starter", "solved"):
        result = api.autograde(lesson.stem, learner)
        assert result["success"], result["log"]
        with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
            submission = gradebook.find_submission(lesson.stem, learner)
            scores[learner] = (submission.score, submission.max_score)
    assert scores == {"starter": (0, points), "solved": (points, points)}


def test_the_student_command_takes_lesson_names():
    args = course.parse_args(["student", "06", "07"])
    assert (args.command, args.extra) == ("student", ["06", "07"])
    with pytest.raises(SystemExit):
        course.parse_args(["student", "--headless"])
