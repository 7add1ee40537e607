"""cvlab: the package under the course notebooks (data, models, training, metrics, plots, widgets)."""
__version__ = "0.1.0"
