"""The task-level client between the engine and HTTP: grids in, results out. Builds a request's rows
from a task codec, submits them to a model's engine, waits, and turns the rows' outputs into results;
ARC voting and ARC adaptation jobs; the offline path of `trm solve`."""
