"""Measuring what the stages make: task scoring over the evaluation split (`evaluate`), and
one stage's artifact scored, timed and sized through the runtime an app embeds (`artifact`).

The timing, memory and size probes themselves live in `edgegolf.devices`; nothing here
transforms a model.
"""
