"""aihf.lm"""
