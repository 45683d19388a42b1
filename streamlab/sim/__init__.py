"""Simulated rigs with known ground truth: Poisson and calcium populations driven by a latent
linear dynamical system."""
