"""Training for TRM: the deep-supervision/ACT loop, optimizers, EMA, DDP, evaluation and export.

Entry points (each `main(argv) -> int`): `training.train` (`trm train CONFIG [overrides]`),
`training.evaluate` (`trm eval MODEL DATA`), `training.export` (`trm export RUN -o FILE`).
Imports trm_core; never imports service.
"""
