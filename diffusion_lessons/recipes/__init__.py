"""Seeded training recipes for the shipped models; run them with python -m diffusion_lessons.train NAME."""
