"""The engine: requests as groups of rows, the scheduler (bookkeeping over plain data), the model runner
and its stepper (every device call), the engine that joins them, the loop thread that drives it, and
the step-time estimate behind deadline admission. Nothing here knows HTTP or task codecs' JSON."""
