"""Spawners: how a user's server is started, watched and stopped.

:mod:`.base` holds the contract, :mod:`.local` the default implementation; the lifecycle
that drives them is :mod:`courtyard.lifecycle`.
"""
