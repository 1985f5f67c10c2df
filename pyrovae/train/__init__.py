"""Training a pair: the SVI step (:class:`~pyrovae.train.trainer.Trainer`), the loop with
validation, early stopping and run-directory commits (:func:`~pyrovae.train.loop.fit`), and the
optimizers (:mod:`~pyrovae.train.optim`). It uses the estimators, the sweep (for the validation
pass) and the run directories; nothing below it imports it.
"""
