"""What a trained pair says about its data and its latents.

Latent usage (:mod:`~pyrovae.analysis.latent_usage`: active units, KL per dimension, I(x; z)), the latent
space (:mod:`~pyrovae.analysis.latent_space`: encode, decode, interpolate), the bounds and gradient
signal-to-noise ratios of several estimators (:mod:`~pyrovae.analysis.comparison`), anomaly scores
(:mod:`~pyrovae.analysis.anomaly`) and detection metrics (:mod:`~pyrovae.analysis.detection`). Each passes
over its data through :class:`pyrovae.infer.Sweep` and traces the pair through :mod:`pyrovae.infer.pair`;
results come back on the CPU.
"""
