"""tests/browser/ holds files for tests/test_browser.py, not tests: ``python course.py test`` runs
pytest with --nbval-lax over ``tests``, and nbval would otherwise collect widgets_tour.ipynb as a
notebook test. The browser test runs the tour itself, in JupyterLab in Chromium."""
collect_ignore_glob = ["*.ipynb"]
