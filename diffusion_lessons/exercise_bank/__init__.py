"""Coding exercises, one module per lesson (lessonNN.py with a list EXERCISES); see exercises.coding_exercises."""
