"""Adapters that run peer ptychography packages (phaser, py4DSTEM, and optionally
PtyRAD and pty-chi) on a ptyopt dataset with a plan in ptyopt's terms, each in its own
environment and process, and return the object on ptyopt's grid for scoring
(:mod:`ptyopt.peers.base`)."""
